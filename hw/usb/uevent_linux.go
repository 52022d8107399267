package usb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// blockEvents reads the kernel's uevents (NETLINK_KOBJECT_UEVENT) and
// signals each one about a block device. The socket is polled with a
// receive timeout so that the reader notices ctx ending.
func blockEvents(ctx context.Context) (<-chan struct{}, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	tv := unix.NsecToTimeval(int64(500 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	ch := make(chan struct{}, 1)
	go func() {
		defer close(ch)
		defer unix.Close(fd)
		buf := make([]byte, 8<<10)
		for ctx.Err() == nil {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			// Only the kernel (port 0) speaks on this group; anything else
			// is another process's message.
			if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
				continue
			}
			if !isBlockEvent(buf[:n]) {
				continue
			}
			select {
			case ch <- struct{}{}:
			default: // one pending wake-up is enough
			}
		}
	}()
	return ch, nil
}

// isBlockEvent reports whether a uevent ("add@/devices/…\0ACTION=add\0
// SUBSYSTEM=block\0…") concerns a block device.
func isBlockEvent(msg []byte) bool {
	for _, f := range bytes.Split(msg, []byte{0}) {
		if bytes.Equal(f, []byte("SUBSYSTEM=block")) {
			return true
		}
	}
	return false
}
