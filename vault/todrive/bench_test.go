package todrive_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/hw/usb"
	"drawbridge/vault/export"
	"drawbridge/vault/export/manifest"
	"drawbridge/vault/readback"
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
// back. The drives' MB/s against local's is the figure that matters;
// raw-<fstype> is each drive alone doing the writing, the flush and the
// reading back (rawDrive), which says how much of the gap is the drive's.
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
	// Each drive by itself: the tree's bytes written, flushed and read
	// back, with none of the vault's work.
	tree := treeFiles(b, src)
	for _, fstype := range []string{"ext4", "exfat", "vfat"} {
		b.Run("raw-"+fstype, func(b *testing.B) {
			m, _ := drive(b, size.OnDisk(64<<10)*2+256<<20, fstype)
			settle()
			rawDrive(b, m.Root(), tree)
		})
	}
	for _, fstype := range []string{"ext4", "exfat", "vfat"} {
		b.Run(fstype, func(b *testing.B) {
			m, _ := drive(b, size.OnDisk(64<<10)*2+256<<20, fstype)
			settle()
			b.SetBytes(size.Bytes)
			var write, verify, early float64
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
				early += float64(rep.ReadWhileWriting) / 1e6
				b.StopTimer()
				os.RemoveAll(filepath.Join(m.Root(), name))
				b.StartTimer()
			}
			b.ReportMetric(write/float64(i), "write-s/op")
			b.ReportMetric(verify/float64(i), "verify-s/op")
			b.ReportMetric(early/float64(i), "early-MB/op")
		})
	}
}

// treeFiles lists the regular files under dir: their slash paths under
// it, and sizes.
func treeFiles(b *testing.B, dir string) []readback.File {
	var files []readback.File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files = append(files, readback.File{Rel: filepath.ToSlash(rel), Size: fi.Size()})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return files
}

// rawDrive times the drive alone doing what a restore to it must do,
// with none of the vault's work (reading the store, decrypting,
// decompressing): files of the given paths and sizes (a tree's: a FAT
// directory of thousands of files is far slower than the same files in a
// tree) written from memory in 1 MiB writes by as many writers as a
// restore has, flushed (syncfs), then read back as a restore to a drive
// reads them at the end (vault/readback: as many readers, O_DIRECT). A
// restore that reads back while it writes can beat it where the drive
// reads and writes at once; where the drive alone is slower than a local
// restore, no restore to it can keep up with one. write-s/op (with the
// flush) and verify-s/op (the read-back) say where its time goes.
func rawDrive(b *testing.B, drive string, tree []readback.File) {
	var total int64
	for _, f := range tree {
		total += f.Size
	}
	b.SetBytes(total)
	data := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{1}).Read(data) // incompressible, as a drive sees it
	workers := runtime.GOMAXPROCS(0)
	var write, verify float64
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		dir := filepath.Join(drive, fmt.Sprint(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for _, f := range tree {
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f.Rel)), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		files := make([]readback.File, len(tree))
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for k := w; k < len(tree) && errs[w] == nil; k += workers {
					files[k], errs[w] = writeRaw(dir, tree[k].Rel, tree[k].Size, data[k*4099%(len(data)/2):])
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		if err := readback.Syncfs(dir); err != nil {
			b.Fatal(err)
		}
		write += time.Since(start).Seconds()
		start = time.Now()
		ctx, cancel := context.WithCancelCause(context.Background())
		c, err := readback.Start(ctx, cancel, dir, readback.Options{FlushInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range files {
			c.Add(f)
		}
		c.StopFlushing()
		res, err := c.Finish(workers)
		c.Close()
		cancel(nil)
		if err != nil || len(res.Mismatches) > 0 || res.Bytes != total {
			b.Fatalf("read back %d of %d bytes: %v %v", res.Bytes, total, err, res.Mismatches)
		}
		verify += time.Since(start).Seconds()
		b.StopTimer()
		os.RemoveAll(dir)
		settle()
		b.StartTimer()
	}
	b.ReportMetric(write/float64(i), "write-s/op")
	b.ReportMetric(verify/float64(i), "verify-s/op")
}

// writeRaw writes n bytes of data (repeated as needed) to dir/rel in
// 1 MiB writes, as a restore's worker does.
func writeRaw(dir, rel string, n int64, data []byte) (readback.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, rel), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return readback.File{}, err
	}
	h := readback.NewHash()
	for left := n; left > 0; {
		p := data[:min(left, 1<<20, int64(len(data)))]
		if _, err := f.Write(p); err != nil {
			f.Close()
			return readback.File{}, err
		}
		h.Write(p)
		left -= int64(len(p))
	}
	return readback.File{Rel: rel, Size: n, Sum: h.Sum(nil)}, f.Close()
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
