package usbtest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/boot/kmod"
	"drawbridge/vault/fixture"
)

// Flags of Attach and AttachLoop.
const (
	// PartScan has the kernel read the image's partition table and make
	// a device of each partition (/dev/loopNp1...), as it does for a
	// stick (losetup -P).
	PartScan = 1 << iota
	// DirectIO has the loop device read and write the image with direct
	// I/O, so that the page cache holds the data once, for the
	// filesystem on the device, and not again for the image
	// (losetup --direct-io=on). The kernel falls back to buffered I/O
	// where the image's filesystem cannot do it.
	DirectIO
)

// Attach binds img to a free loop device and returns the device's path
// (/dev/loopN); it is detached when the test ends. It must be called from
// the test's goroutine; AttachLoop is for others.
func Attach(t testing.TB, img string, flags int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		fixture.Need(t, "needs root for loop devices")
	}
	dev, detach, err := AttachLoop(img, flags)
	if err != nil {
		fixture.Need(t, "a loop device: "+err.Error())
	}
	t.Cleanup(detach)
	return dev
}

// AttachLoop binds img to a free loop device with the loop ioctls, as
// losetup -f does (LOOP_CTL_GET_FREE, then LOOP_CONFIGURE), loading the
// loop module first where nothing has (the appliance's debug image has
// neither losetup nor modprobe). detach unbinds it (LOOP_CLR_FD; the
// kernel does it once the last user, a mount, lets go), as losetup -d.
func AttachLoop(img string, flags int) (dev string, detach func(), err error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := loadLoopModule(); err != nil {
			return "", nil, err
		}
		for range 50 { // devtmpfs makes the node soon after
			if ctl, err = os.OpenFile("/dev/loop-control", os.O_RDWR, 0); !errors.Is(err, fs.ErrNotExist) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err != nil {
		return "", nil, err
	}
	defer ctl.Close()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
	if flags&PartScan != 0 {
		cfg.Info.Flags |= unix.LO_FLAGS_PARTSCAN
	}
	if flags&DirectIO != 0 {
		cfg.Info.Flags |= unix.LO_FLAGS_DIRECT_IO
	}
	copy(cfg.Info.File_name[:], filepath.Base(img))
	for range 10 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		dev = fmt.Sprintf("/dev/loop%d", n)
		var d *os.File
		for range 50 {
			if d, err = os.OpenFile(dev, os.O_RDWR, 0); !errors.Is(err, fs.ErrNotExist) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return "", nil, err
		}
		err = unix.IoctlLoopConfigure(int(d.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) && flags&DirectIO != 0 {
			// A kernel that will not fall back to buffered I/O itself.
			c := cfg
			c.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
			err = unix.IoctlLoopConfigure(int(d.Fd()), &c)
		}
		if errors.Is(err, unix.EBUSY) { // taken by someone else meanwhile
			d.Close()
			continue
		}
		if err != nil {
			d.Close()
			return "", nil, fmt.Errorf("LOOP_CONFIGURE %s: %w", dev, err)
		}
		// The device is not held open: losetup -d of it, or a stick
		// pulled out, must be able to take it away.
		d.Close()
		return dev, func() { Detach(dev) }, nil
	}
	return "", nil, errors.New("no free loop device")
}

// Detach unbinds the loop device dev (/dev/loopN) from its image, as
// losetup -d does: at once, or once a mount of it lets go.
func Detach(dev string) error {
	d, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.IoctlSetInt(int(d.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
		return fmt.Errorf("LOOP_CLR_FD %s: %w", dev, err)
	}
	return nil
}

// loadLoopModule loads the loop module of the running kernel with
// finit_module, as PID 1 loads the others.
func loadLoopModule() error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	ix, err := kmod.Parse(os.DirFS(dir))
	if err != nil {
		return fmt.Errorf("no loop-control, and no module index: %w", err)
	}
	plan := ix.Resolve("loop")
	if len(plan.Missing) > 0 {
		return fmt.Errorf("no loop-control, and no loop module in %s", dir)
	}
	if r := kmod.LoadAll(kmod.Kernel{Dir: dir}, plan, 1); len(r.Failed) > 0 {
		return errors.Join(r.Failed...)
	}
	return nil
}
