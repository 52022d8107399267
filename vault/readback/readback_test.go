package readback

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// TestMismatch: files that changed on the drive after writing (a
// flipped byte, a short file, a missing one) are listed by path; the
// others are counted as verified.
func TestMismatch(t *testing.T) {
	dir := t.TempDir()
	var files []File
	for _, name := range []string{"good", "flipped", "short", "gone"} {
		b := []byte("content of " + name)
		h := xxhash.New()
		h.Write(b)
		sum := h.Sum(nil)
		files = append(files, File{name, int64(len(b)), sum[:]})
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
	ctx, cancel := context.WithCancelCause(context.Background())
	c, err := Start(ctx, cancel, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, f := range files {
		c.Add(f)
	}
	if err := c.StopFlushing(); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Finish(2)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range rep.Mismatches {
		got = append(got, m.Path)
		t.Logf("%s: %v", m.Path, m.Err)
	}
	if rep.Files != 1 || len(got) != 3 || got[0] != "flipped" || got[1] != "gone" || got[2] != "short" {
		t.Errorf("verified %d, mismatches %q", rep.Files, got)
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
		w := File{name, int64(size), binary.BigEndian.AppendUint64(nil, sum)}
		for _, buf := range [][]byte{alignedBuffer(1 << 20), alignedBuffer(4096), alignedBuffer(1000)} {
			var done atomic.Int64
			if err := ReadBack(context.Background(), r, w, buf, &done); err != nil {
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
			if err := ReadBack(context.Background(), r, w, buf, &done); err == nil {
				t.Errorf("%d bytes with a changed byte, buffer %d: read back as written", size, len(buf))
			}
		}
	}
}

// TestReadWhileWriting: a file added and flushed is read back before
// StopFlushing, and Close ends everything without Finish.
func TestReadWhileWriting(t *testing.T) {
	dir := t.TempDir()
	b := make([]byte, 100<<10)
	for i := range b {
		b[i] = byte(i)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	c, err := Start(ctx, cancel, dir, Options{FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.Add(File{"f", int64(len(b)), binary.BigEndian.AppendUint64(nil, xxhash.Sum64(b))})
	c.Wrote(int64(len(b)))
	deadline := time.Now().Add(10 * time.Second)
	for c.ReadBytes() < int64(len(b)) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes read back 10s after the write", c.ReadBytes())
		}
		time.Sleep(time.Millisecond)
	}
	// More files, never flushed nor finished: Close does not wait for
	// them, nor cancel the caller's context.
	for i := range 1000 {
		c.Add(File{fmt.Sprint("missing", i), 1, nil})
	}
	c.Close()
	if ctx.Err() != nil {
		t.Errorf("Close cancelled the caller: %v", context.Cause(ctx))
	}
}

// TestGone: a read error Gone accepts cancels the caller with it,
// classified, and Finish returns it.
func TestGone(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	gone := errors.New("gone")
	c, err := Start(ctx, cancel, dir, Options{
		Gone:     func(err error) bool { return errors.Is(err, fs.ErrNotExist) },
		Classify: func(err error) error { return fmt.Errorf("%w: %w", gone, err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Add(File{"not-there", 1, nil})
	if err := c.StopFlushing(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Finish(2); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Finish: %v", err)
	}
	if !errors.Is(context.Cause(ctx), gone) {
		t.Errorf("the caller's context: %v", context.Cause(ctx))
	}
}
