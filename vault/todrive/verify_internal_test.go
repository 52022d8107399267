package todrive

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want error
	}{
		{&os.PathError{Op: "write", Path: "x", Err: unix.EIO}, ErrDriveGone},
		{unix.ENODEV, ErrDriveGone},
		{unix.ENXIO, ErrDriveGone},
		{unix.EROFS, ErrDriveGone},
		{unix.ENOSPC, ErrNoSpace},
	} {
		if got := classify(c.err); !errors.Is(got, c.want) || !errors.Is(got, c.err) {
			t.Errorf("classify(%v) = %v", c.err, got)
		}
	}
	if got := classify(unix.EACCES); errors.Is(got, ErrDriveGone) || errors.Is(got, ErrNoSpace) {
		t.Errorf("classify(EACCES) = %v", got)
	}
}

// TestOnDiskHostile: sizes a hostile tree claims add up without wrapping
// into a small number that would pass the space check.
func TestOnDiskHostile(t *testing.T) {
	s := Size{Files: 4, sizes: []int64{1 << 62, 1 << 62, 1 << 62, 1 << 62}, Bytes: 1<<63 - 1}
	if n := s.OnDisk(4096); n < 1<<62 {
		t.Errorf("OnDisk = %d", n)
	}
	if n := (Size{Files: 1, sizes: []int64{1}}).OnDisk(32 << 10); n < 32<<10 {
		t.Errorf("a 1-byte file on 32 KiB clusters: OnDisk = %d", n)
	}
}

func TestDirName(t *testing.T) {
	at := time.Date(2026, 11, 27, 12, 3, 59, 0, time.UTC)
	if got := DirName("3f2a9c01b7e4aa55", at); got != "drawbridge-restore-3f2a9c01b7e4-20261127-1203" {
		t.Errorf("DirName = %q", got)
	}
	if got := DirName("../x", at); got != "drawbridge-restore-___x-20261127-1203" {
		t.Errorf("DirName of a hostile id = %q", got)
	}
}
