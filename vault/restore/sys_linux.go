package restore

import (
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// futimens sets the times of an open file: utimensat(fd, NULL, ts, 0), which
// is how the C library implements futimens.
func futimens(fd int, ts []unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func timespec(sec, nsec int64) (unix.Timespec, error) {
	return unix.TimeToTimespec(time.Unix(sec, nsec))
}

// xattrArgs is struct xattr_args of linux/xattr.h.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// setxattrat sets an xattr on name in the directory dirfd without following
// a symlink (setxattrat(2), Linux 6.13). It is the only way to set one on a
// symlink or device node without opening it.
func setxattrat(dirfd int, name, attr string, value []byte) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return err
	}
	args := xattrArgs{size: uint32(len(value))}
	if len(value) > 0 {
		args.value = uint64(uintptr(unsafe.Pointer(&value[0])))
	}
	_, _, errno := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	runtime.KeepAlive(value)
	if errno != 0 {
		return errno
	}
	return nil
}
