package todrive_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/hw/usb"
	"drawbridge/vault/export"
	"drawbridge/vault/export/manifest"
	"drawbridge/vault/restore"
	"drawbridge/vault/seal"
	"drawbridge/vault/todrive"
)

// benchTree is the tree BenchmarkRestoreToDrive restores: the one
// drawbridge-bench generates when DRAWBRIDGE_BENCH_TREE names it (make
// bench does), else a smaller mixed tree made here.
func benchTree(b *testing.B) string {
	if p := os.Getenv("DRAWBRIDGE_BENCH_TREE"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		b.Logf("DRAWBRIDGE_BENCH_TREE=%s: not there; using a generated tree", p)
	}
	dir := filepath.Join(b.TempDir(), "tree")
	files(200, 1<<20, 7)(filepath.Join(dir, "random"))
	// Text-like files, which compress, as most of a real tree does.
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog 0123456789\n", 4096))
	for i := range 200 {
		d := filepath.Join(dir, "text", fmt.Sprintf("d%d", i%10))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d.txt", i)), text[:len(text)-i*100], 0o644)
	}
	return dir
}

// BenchmarkRestoreToDrive restores the same snapshot to a local directory
// (what `drawbridge restore` does) and to a loop-mounted drive of each
// filesystem through todrive, which also flushes and reads everything
// back. The drives' MB/s against local's is the figure that matters.
func BenchmarkRestoreToDrive(b *testing.B) {
	src := benchTree(b)
	v := backup(b, src)
	size, err := todrive.Measure(context.Background(), v.r, v.root, v.sub)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("tree: %d files, %.1f MB", size.Files, float64(size.Bytes)/1e6)

	// The local directory is on a fresh ext4 filesystem like the ext4
	// drive's, not under TMPDIR: on a large, long-used filesystem ext4
	// spends a quarter of the restore's CPU finding free inodes
	// (recently_deleted, find_get_block_common), and how much moves with
	// that filesystem's state; the comparison is then of the flush and
	// the read-back alone.
	b.Run("local", func(b *testing.B) {
		local, _ := drive(b, size.OnDisk(64<<10)*2+256<<20, "ext4")
		settle()
		b.SetBytes(size.Bytes)
		dir := local.Root()
		i := 0
		for b.Loop() {
			i++
			target := filepath.Join(dir, fmt.Sprint(i))
			if _, err := restore.Restore(context.Background(), v.r, v.root, v.sub, target, restore.Options{}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(target)
			settle()
			b.StartTimer()
		}
	})
	// The plain-file export to the same kind of drive, as the console
	// makes it: written, flushed and read back (export does both), then
	// its signed MANIFEST checked against the drive mounted again,
	// read-only (a cold cache).
	b.Run("export-ext4", func(b *testing.B) {
		m, _ := drive(b, size.OnDisk(64<<10)*2+256<<20, "ext4")
		settle()
		b.SetBytes(size.Bytes)
		snap := export.Snapshot{VaultID: v.s.Info().VaultID, ID: v.snap.ID, Source: v.snap.Source, Time: v.snap.Time}
		key := seal.Fingerprint(v.s.Keys().Identity.Public())
		var write, verify float64
		i := 0
		for b.Loop() {
			i++
			start := time.Now()
			target := filepath.Join(m.Root(), "export")
			if _, err := export.Export(context.Background(), v.r, v.root, v.sub, target, snap,
				export.Options{Identity: v.s.Keys().Identity}); err != nil {
				b.Fatal(err)
			}
			m = remount(b, m, true)
			write += time.Since(start).Seconds()
			start = time.Now()
			res, err := manifest.VerifyLayout(filepath.Join(target, manifest.Dir), key)
			if err != nil || !res.OK() {
				b.Fatalf("read back: %v %v", err, res.Problems)
			}
			verify += time.Since(start).Seconds()
			b.StopTimer()
			m = remount(b, m, false)
			os.RemoveAll(target)
			b.StartTimer()
		}
		b.ReportMetric(write/float64(i), "write-s/op")
		b.ReportMetric(verify/float64(i), "verify-s/op")
	})
	for _, fstype := range []string{"ext4", "exfat", "vfat"} {
		b.Run(fstype, func(b *testing.B) {
			m, _ := drive(b, size.OnDisk(64<<10)*2+256<<20, fstype)
			settle()
			b.SetBytes(size.Bytes)
			var write, verify float64
			i := 0
			for b.Loop() {
				i++
				name := fmt.Sprint(i)
				rep, err := todrive.Restore(context.Background(), v.r, v.root, v.sub, m.Root(), name, todrive.Options{})
				if err != nil {
					b.Fatal(err)
				}
				write += rep.WriteSeconds
				verify += rep.VerifySeconds
				b.StopTimer()
				os.RemoveAll(filepath.Join(m.Root(), name))
				b.StartTimer()
			}
			b.ReportMetric(write/float64(i), "write-s/op")
			b.ReportMetric(verify/float64(i), "verify-s/op")
		})
	}
}

// remount unmounts the drive and mounts it again where it was, read-only
// or not, as the console does to read an export back.
func remount(b testing.TB, m *usb.Mounted, readOnly bool) *usb.Mounted {
	b.Helper()
	if err := m.Unmount(); err != nil {
		b.Fatal(err)
	}
	p := usb.Local()
	p.Any = true
	m, err := p.Mount(m.Partition, m.Root(), readOnly)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Unmount() })
	return m
}

// settle writes out what the machine still holds dirty (the backup's
// store, the last run's files) before a timed run, so that no run pays
// for writing what another left behind: a local restore leaves its files
// in the page cache, and the kernel writing the backup's store meanwhile
// would slow it, and not the drives after it.
func settle() { unix.Sync() }

// BenchmarkSHA256 is what hashing costs on this CPU: an export hashes
// every file with SHA-256 for its MANIFEST (a local restore hashes
// nothing of the kind), so where SHA-256 is slow (a CPU without SHA
// instructions, or an emulator lacking them) the export lags a restore.
func BenchmarkSHA256(b *testing.B) {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(buf)))
	h := seal.NewSHA256()
	for b.Loop() {
		h.Write(buf)
	}
}
