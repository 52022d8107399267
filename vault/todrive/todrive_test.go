package todrive_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/hw/usb"
	"drawbridge/hw/usb/usbtest"
	"drawbridge/vault/fixture"
	"drawbridge/vault/restore"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
	"drawbridge/vault/todrive"
	"drawbridge/vault/tree"
)

type vault struct {
	s    *store.Store
	snap *store.Snapshot
	r    *store.Reader
	root tree.ID
	sub  string // the backed-up directory inside the snapshot
	src  string
}

// newVault backs up what fill makes into a fresh store and unlocks it.
func newVault(t testing.TB, fill func(dir string)) *vault {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	fill(src)
	return backup(t, src)
}

// backup backs src up into a fresh store and unlocks it.
func backup(t testing.TB, src string) *vault {
	t.Helper()
	s := storetest.New(t, filepath.Join(t.TempDir(), "store"), "todrive test passphrase", store.InitOptions{})
	snap := storetest.Backup(t, s, "fixture", src)
	r := storetest.Unlock(t, s, "todrive test passphrase")
	return &vault{s: s, snap: snap, r: r, root: storetest.Root(t, snap), sub: strings.TrimPrefix(src, "/"), src: src}
}

// pacedSource is a restore.Source that waits before each chunk.
type pacedSource struct {
	restore.Source
	wait time.Duration
}

func (p pacedSource) Chunk(ctx context.Context, id tree.ID, dst []byte) ([]byte, error) {
	time.Sleep(p.wait)
	return p.Source.Chunk(ctx, id, dst)
}

// files makes n files of random (incompressible) content in a few
// directories, with names every filesystem takes; sizes vary up to max.
func files(n int, max int, seed uint64) func(dir string) {
	return func(dir string) {
		r := rand.New(rand.NewPCG(seed, 1))
		for i := range n {
			d := filepath.Join(dir, fmt.Sprintf("dir%d", i%4))
			os.MkdirAll(d, 0o755)
			b := make([]byte, r.IntN(max)+1)
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("file%03d.bin", i)), b, 0o644); err != nil {
				panic(err)
			}
		}
	}
}

// sameFiles compares the regular files under a and b, but for those
// named in skip.
func sameFiles(t *testing.T, a, b string, skip ...string) {
	t.Helper()
	n := 0
	filepath.Walk(a, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		if slices.Contains(skip, rel) {
			return nil
		}
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: restored copy differs (%v)", rel, err)
		}
		n++
		return nil
	})
	if n == 0 {
		t.Error("no files compared")
	}
}

// drive makes a loop device holding a fresh filesystem of fstype and
// mounts it through hw/usb. It returns the mount and the image file. The
// loop device does direct I/O on its image: a drive has no second page
// cache below the one of its filesystem, and writing to it costs what
// writing to a drive costs, not a copy into the image file's cache.
func drive(t testing.TB, size int64, fstype string) (*usb.Mounted, string) {
	t.Helper()
	img := usbtest.NewImage(t, (size+1<<20-1)/(1<<20)*(1<<20))
	dev := usbtest.Attach(t, img, usbtest.DirectIO)
	p := usb.Local()
	p.Any = true
	drives, _ := p.List()
	var d *usb.Drive
	for i := range drives {
		if drives[i].Path == dev {
			d = &drives[i]
		}
	}
	if d == nil {
		t.Fatalf("%s not listed", dev)
	}
	if err := p.Format(context.Background(), *d, fstype, "STICK", d.Confirmation()); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			fixture.Need(t, err.Error()+": apt-get install e2fsprogs exfatprogs dosfstools")
		}
		t.Fatal(err)
	}
	part := usb.Partition{Name: d.Name, Path: d.Path, Size: d.Size}
	m, err := p.Mount(part, filepath.Join(t.TempDir(), "mnt"), false)
	if err != nil {
		if strings.Contains(err.Error(), "FUSE driver") || strings.Contains(err.Error(), "kernel cannot mount") {
			fixture.Need(t, err.Error()+": apt-get install fusefat exfat-fuse, or a kernel with "+fstype)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount() })
	return m, img
}

func TestRestoreToDrive(t *testing.T) {
	v := newVault(t, func(dir string) {
		files(40, 300<<10, 1)(dir)
		// What FAT and exFAT cannot hold.
		os.Symlink("dir0/file000.bin", filepath.Join(dir, "link"))
		os.WriteFile(filepath.Join(dir, "Case"), []byte("upper"), 0o644)
		os.WriteFile(filepath.Join(dir, "case"), []byte("lower"), 0o644)
	})
	for _, fstype := range []string{"ext4", "exfat", "vfat"} {
		t.Run(fstype, func(t *testing.T) {
			m, _ := drive(t, 64<<20, fstype)
			var mu sync.Mutex
			var last = map[string]todrive.Progress{}
			// The source takes its time, as a store on a disk does: a
			// restore of these few MB would otherwise be written before
			// the first flush had anything to read back.
			src := pacedSource{v.r, 5 * time.Millisecond}
			rep, err := todrive.Restore(context.Background(), src, v.root, v.sub, m.Root(), "restore", todrive.Options{
				Interval: time.Millisecond,
				Progress: func(p todrive.Progress) {
					mu.Lock()
					last[p.Phase] = p
					mu.Unlock()
				},
				// Flushes as often as it can: files are read back
				// while others are written.
				FlushInterval: time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			var skipped []string
			for _, d := range rep.Skipped {
				skipped = append(skipped, strings.TrimPrefix(d.Path, v.sub+"/"))
			}
			t.Logf("skipped: %v", rep.Skipped)
			wantSkipped := ""
			if fstype != "ext4" {
				// "Case" is written first and "case" then clashes with it.
				wantSkipped = "case link"
			}
			if strings.Join(skipped, " ") != wantSkipped {
				t.Errorf("skipped %q, want %q", skipped, wantSkipped)
			}
			sameFiles(t, v.src, filepath.Join(m.Root(), "restore"), skipped...)
			want := int64(42) // 40 files, Case and case
			if fstype != "ext4" {
				want = 41
			}
			if rep.Verified != want || rep.Files != want || len(rep.Mismatches) != 0 || rep.VerifiedBytes != rep.Bytes {
				t.Errorf("report: %d files, %d verified (%d of %d bytes), mismatches %v", rep.Files, rep.Verified, rep.VerifiedBytes, rep.Bytes, rep.Mismatches)
			}
			for _, ph := range []string{todrive.PhaseWrite, todrive.PhaseVerify} {
				p := last[ph]
				if p.Done != rep.Bytes || p.Total != rep.Bytes || p.Rate <= 0 || p.ETA != 0 {
					t.Errorf("last %s progress %+v, want done = total = %d", ph, p, rep.Bytes)
				}
			}
			if rep.ReadWhileWriting <= 0 || rep.ReadWhileWriting > rep.Bytes {
				t.Errorf("%d bytes read back while writing, of %d", rep.ReadWhileWriting, rep.Bytes)
			}
			if rep.Needed > rep.Free || rep.Needed < rep.Bytes {
				t.Errorf("needed %d, free %d, bytes %d", rep.Needed, rep.Free, rep.Bytes)
			}
			t.Logf("%s: %d bytes written in %.2fs (%d read back meanwhile), the rest verified in %.2fs",
				fstype, rep.Bytes, rep.WriteSeconds, rep.ReadWhileWriting, rep.VerifySeconds)
		})
	}
}

// TestNoSpace: a restore larger than the drive is refused before anything
// is written, with both numbers in the message.
func TestNoSpace(t *testing.T) {
	v := newVault(t, files(12, 4<<20, 2))
	m, _ := drive(t, 32<<20, "ext4")
	free, _, _ := m.Space()
	_, err := todrive.Restore(context.Background(), v.r, v.root, v.sub, m.Root(), "restore", todrive.Options{})
	if !errors.Is(err, todrive.ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
	t.Logf("refused: %v", err)
	if !strings.Contains(err.Error(), "MiB free") || !strings.Contains(err.Error(), "needs about") {
		t.Errorf("message does not name both sizes: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(m.Root(), "restore")); err == nil {
		t.Error("the restore directory was created")
	}
	if after, _, _ := m.Space(); after != free {
		t.Errorf("free space went from %d to %d", free, after)
	}
}

// TestSymlinkOnDrive: a stick that already has a symlink under the name of
// the restore directory, pointing out of the drive. Nothing is written
// through it.
func TestSymlinkOnDrive(t *testing.T) {
	v := newVault(t, files(3, 1000, 3))
	stick, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(stick, "restore")); err != nil {
		t.Fatal(err)
	}
	_, err := todrive.Restore(context.Background(), v.r, v.root, v.sub, stick, "restore", todrive.Options{})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("err = %v, want already exists", err)
	}
	if des, _ := os.ReadDir(outside); len(des) != 0 {
		t.Errorf("wrote %d entries through the symlink", len(des))
	}
	for _, bad := range []string{"", ".", "..", "a/b", "../x"} {
		if _, err := todrive.Restore(context.Background(), v.r, v.root, v.sub, stick, bad, todrive.Options{}); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

// TestDrivePulled takes the drive away in the middle of a restore: the
// loop device shrinks to one sector at once, so every later read and write
// of the device fails as a pulled USB stick's do. (Device-mapper's error
// target would do the same where the kernel has it.) The restore ends with
// ErrDriveGone within seconds.
func TestDrivePulled(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 160 MiB")
	}
	v := newVault(t, files(80, 4<<20, 4))
	for _, fstype := range []string{"ext4", "exfat", "vfat"} {
		t.Run(fstype, func(t *testing.T) { pull(t, v, fstype, todrive.PhaseWrite) })
	}
	t.Run("ext4 while verifying", func(t *testing.T) { pull(t, v, "ext4", todrive.PhaseVerify) })
}

// pull takes the drive away once the restore is into phase. To pull it
// while verifying, no flush runs before the end of the writing, so that
// everything is read back after it rather than while writing.
func pull(t *testing.T, v *vault, fstype, phase string) {
	m, _ := drive(t, 512<<20, fstype)
	dev := m.Partition.Path
	pulled := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	o := todrive.Options{
		Interval: 10 * time.Millisecond,
		Present:  m.Present,
		Progress: func(p todrive.Progress) {
			if p.Phase == phase && p.Done > 24<<20 && p.Done < p.Total {
				once.Do(func() { close(pulled) })
			}
		},
	}
	if phase == todrive.PhaseVerify {
		o.SyncEvery, o.FlushInterval = 1<<40, time.Hour
	}
	go func() {
		_, err := todrive.Restore(context.Background(), v.r, v.root, v.sub, m.Root(), "restore", o)
		errc <- err
	}()
	select {
	case <-pulled:
	case err := <-errc:
		t.Fatalf("restore ended before the drive was pulled: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("no progress within 60s")
	}
	usbtest.Pull(t, dev)
	at := time.Now()
	select {
	case err := <-errc:
		if !errors.Is(err, todrive.ErrDriveGone) {
			t.Fatalf("err = %v, want ErrDriveGone", err)
		}
		t.Logf("after %v: %v", time.Since(at).Round(time.Millisecond), err)
	case <-time.After(20 * time.Second):
		t.Fatal("the restore did not notice the pulled drive within 20s")
	}
	err := m.Unmount()
	t.Logf("unmount after the pull: %v", err)
	var a, b unix.Stat_t
	unix.Stat(m.Root(), &a)
	unix.Stat(filepath.Dir(m.Root()), &b)
	if a.Dev != b.Dev {
		t.Error("the pulled drive is still mounted after Unmount")
	}
}

// TestRestorePart restores one file, one directory, then the whole
// snapshot into a plain directory standing in for the drive (no root
// needed).
func TestRestorePart(t *testing.T) {
	v := newVault(t, files(8, 10000, 5))
	stick := t.TempDir()
	rep, err := todrive.Restore(context.Background(), v.r, v.root, v.sub+"/dir1/file001.bin", stick, "one", todrive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(v.src, "dir1/file001.bin"))
	got, err := os.ReadFile(filepath.Join(stick, "one", "file001.bin"))
	if err != nil || !bytes.Equal(got, want) || rep.Verified != 1 || rep.Size.Files != 1 {
		t.Errorf("one file: %v, verified %d, size %+v", err, rep.Verified, rep.Size)
	}
	rep, err = todrive.Restore(context.Background(), v.r, v.root, v.sub+"/dir2", stick, "dir", todrive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, filepath.Join(v.src, "dir2"), filepath.Join(stick, "dir"))
	if rep.Verified != 2 || rep.Size.Files != 2 {
		t.Errorf("dir2: verified %d, size %+v", rep.Verified, rep.Size)
	}
	fi, err := os.Stat(filepath.Join(v.src, "dir2", rep.Size.LargestPath))
	if err != nil || fi.Size() != rep.Size.Largest {
		t.Errorf("largest file %q of %d bytes: %v", rep.Size.LargestPath, rep.Size.Largest, err)
	}
	rep, err = todrive.Restore(context.Background(), v.r, v.root, "", stick, "all", todrive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, v.src, filepath.Join(stick, "all", v.sub))
	if rep.Verified != 8 || rep.Size.Files != 8 {
		t.Errorf("whole snapshot: verified %d, size %+v", rep.Verified, rep.Size)
	}
	if _, err := todrive.Restore(context.Background(), v.r, v.root, v.sub+"/nothing", stick, "none", todrive.Options{}); err == nil {
		t.Error("a missing path restored")
	}
	if _, err := os.Lstat(filepath.Join(stick, "none")); err == nil {
		t.Error("a missing path left a directory on the drive")
	}
}
