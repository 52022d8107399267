package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"
)

// Inode flags from linux/fs.h. A drawbridge store seals what it has
// committed with FS_IMMUTABLE_FL, which even root cannot unlink.
const (
	fsImmutableFL = 0x10
	fsAppendFL    = 0x20

	// _IOR('f', 1, long) and _IOW('f', 2, long); the kernel reads and
	// writes an int whatever the size encoded.
	iocGetFlags = 2<<30 | uintptr(unsafe.Sizeof(uintptr(0)))<<16 | 'f'<<8 | 1
	iocSetFlags = 1<<30 | uintptr(unsafe.Sizeof(uintptr(0)))<<16 | 'f'<<8 | 2
)

// unseal clears the immutable and append-only flags under dir so that the
// store of an earlier run can be removed. Errors are left for the removal
// that follows to report.
func unseal(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !(d.IsDir() || d.Type().IsRegular()) {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil
		}
		defer f.Close()
		var flags int32
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), iocGetFlags, uintptr(unsafe.Pointer(&flags))); e != 0 {
			return nil
		}
		if flags&(fsImmutableFL|fsAppendFL) != 0 {
			flags &^= fsImmutableFL | fsAppendFL
			syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), iocSetFlags, uintptr(unsafe.Pointer(&flags)))
		}
		return nil
	})
}
