package vfstest

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

const fsImmutableFL = 0x00000010 // FS_IMMUTABLE_FL, linux/fs.h

func clearImmutable(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
			return nil
		}
		return err
	}
	if flags&fsImmutableFL == 0 {
		return nil
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags&^fsImmutableFL))
}
