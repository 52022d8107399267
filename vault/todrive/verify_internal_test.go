package todrive

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"
)

// TestVerifyMismatch: files that changed on the drive after writing (a
// flipped byte, a short file, a missing one) are listed by path; the
// others are counted as verified.
func TestVerifyMismatch(t *testing.T) {
	dir := t.TempDir()
	var files []writtenFile
	for _, name := range []string{"good", "flipped", "short", "gone"} {
		b := []byte("content of " + name)
		h := xxhash.New()
		h.Write(b)
		sum := h.Sum(nil)
		files = append(files, writtenFile{name, int64(len(b)), sum[:]})
		switch name {
		case "flipped":
			b[0] ^= 1
		case "short":
			b = b[:3]
		case "gone":
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rep := &Report{}
	ctx, cancel := context.WithCancelCause(context.Background())
	c, err := newChecker(ctx, cancel, dir, rep, classify)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	c.queue(files[:1])
	c.queue(files[1:])
	if err := c.finish(2); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range rep.Mismatches {
		got = append(got, m.Path)
		t.Logf("%s: %v", m.Path, m.Err)
	}
	if rep.Verified != 1 || len(got) != 3 || got[0] != "flipped" || got[1] != "gone" || got[2] != "short" {
		t.Errorf("verified %d, mismatches %q", rep.Verified, got)
	}
}

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

// TestReadBackSizes reads files of awkward sizes back, with O_DIRECT in
// buffers it takes and, with a buffer length O_DIRECT refuses, through
// the page cache instead; both see every byte, and a changed byte.
func TestReadBackSizes(t *testing.T) {
	dir := t.TempDir()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, size := range []int{0, 1, 511, 4096, 4097, 1 << 20, 1<<20 + 1, 3<<20 - 7} {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i*7 + i>>9)
		}
		name := fmt.Sprintf("f%d", size)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := xxhash.Sum64(b)
		w := writtenFile{name, int64(size), binary.BigEndian.AppendUint64(nil, sum)}
		for _, buf := range [][]byte{alignedBuffer(1 << 20), alignedBuffer(4096), alignedBuffer(1000)} {
			var done atomic.Int64
			if err := readBack(context.Background(), r, w, buf, &done); err != nil {
				t.Errorf("%d bytes, buffer %d: %v", size, len(buf), err)
			}
			if done.Load() != int64(size) {
				t.Errorf("%d bytes, buffer %d: %d counted", size, len(buf), done.Load())
			}
		}
		if size == 0 {
			continue
		}
		b[size/2] ^= 1
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
		for _, buf := range [][]byte{alignedBuffer(1 << 20), alignedBuffer(1000)} {
			var done atomic.Int64
			if err := readBack(context.Background(), r, w, buf, &done); err == nil {
				t.Errorf("%d bytes with a changed byte, buffer %d: read back as written", size, len(buf))
			}
		}
	}
}
