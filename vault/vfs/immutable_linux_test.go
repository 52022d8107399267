package vfs_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"drawbridge/vault/vfs/vfstest"
)

// immutableSupported probes, independently of vfs, whether the immutable
// flag can be set on a file in dir.
func immutableSupported(t *testing.T, dir string) bool {
	p := filepath.Join(dir, "probe")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := vfstest.UnsealPath(p); err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
	}()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return false
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|0x10)) == nil
}
