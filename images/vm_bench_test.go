//go:build vm

package images

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Bounds of the benchmark in the VM.
const (
	// benchTreeMax is the largest DRAWBRIDGE_BENCH_TREE taken into the VM;
	// a larger one (make bench's full tree) gives way to a generated tree
	// of benchTreeBytes. Under software emulation everything runs 5 to 10
	// times slower than on the host.
	benchTreeMax   = 300 << 20
	benchTreeBytes = 200 << 20
	// benchTimeout bounds the test binary's run in the VM (make bench
	// gives the whole benchmark 30 minutes).
	benchTimeout = 20 * time.Minute
)

// BenchmarkRestoreToDriveInVM runs vault/todrive's BenchmarkRestoreToDrive
// (-benchtime 2x) inside the appliance: the debug image (a shell on the
// serial console) boots with a work disk, an ext4 filesystem labelled
// DBBENCH that PID 1 leaves alone (not its data disk's label, and not
// blank, so never offered for formatting), holding the static test
// binary, the tree to back up and restore, and the directory TMPDIR names.
// So the store, the local restore (what `drawbridge restore` does) and the
// loop-mounted drive images all live on the same virtio disk, and the
// drives are vfat, exfat and ext4 of the appliance's own kernel, not the
// FUSE drivers a hosted machine without them falls back to. The debug
// image carries the loop module, which the test binary loads, and it
// attaches the images with the loop ioctls (the image has no losetup).
//
// The tree is DRAWBRIDGE_BENCH_TREE when it is set and at most 300 MB,
// else a generated mixed tree of about 210 MB, random and text-like files
// (make bench sets none: its 600 MB tree would take too long emulated). It
// all takes about 3 minutes here with a warm build cache, most of it in
// the VM.
//
// DRAWBRIDGE_VM_BENCH, when set, is the -test.bench pattern run in the VM
// instead of all of RestoreToDrive and SHA256 (what the export's MANIFEST
// hash costs on the VM's CPU), e.g. 'RestoreToDrive/(local|vfat)$'.
//
// QEMU runs with -cpu max: under software emulation it offers every
// instruction set extension QEMU emulates (QEMU 7.2: SSSE3, SSE4.1, AVX2,
// BMI2, AES-NI; no SHA, no AVX-512), so the vault's ChaCha20-Poly1305,
// BLAKE3 and zstd take the AVX2 and BMI2 code they take on the
// appliance's hardware, not the generic Go they would take on QEMU's
// default CPU model (SSE3 at most). The log names the CPU model and these
// flags as the VM saw them. The VM has 2 CPUs and 3 GiB of memory.
//
// The figures are those of the benchmark in the VM, reported as metrics:
// MB/s of each target, each one's as a percentage of local (-%local),
// and each drive's restore as a percentage of that drive alone (-%raw:
// raw-<fstype> writes, flushes and reads back the same bytes with none of
// the vault's work). Under
// software emulation the absolute speeds say little about real hardware;
// the ratios, drive against local on the same emulated machine and disk,
// are the figures to read.
func BenchmarkRestoreToDriveInVM(b *testing.B) {
	need(b, append(BootRequirements(false), Requirement{"mke2fs", "e2fsprogs"}, reqGo))
	work := b.TempDir()
	stage := filepath.Join(work, "stage")
	must(b, os.MkdirAll(filepath.Join(stage, "tmp"), 0o1777))
	os.Chmod(filepath.Join(stage, "tmp"), 0o1777)
	testBinary(b, "drawbridge/vault/todrive", filepath.Join(stage, "todrive.test"))
	tree := filepath.Join(stage, "tree")
	if src, size := os.Getenv("DRAWBRIDGE_BENCH_TREE"), int64(0); src != "" && dirSize(src, &size) == nil && size <= benchTreeMax {
		b.Logf("tree: DRAWBRIDGE_BENCH_TREE=%s (%.1f MB)", src, float64(size)/1e6)
		if out, err := exec.Command("cp", "-a", src, tree).CombinedOutput(); err != nil {
			b.Fatalf("copy the tree: %v\n%s", err, out)
		}
	} else {
		if src != "" {
			b.Logf("DRAWBRIDGE_BENCH_TREE=%s: missing or over %.0f MB; a generated tree of %.0f MB instead", src, benchTreeMax/1e6, benchTreeBytes/1e6)
		}
		genTree(b, tree, benchTreeBytes)
	}
	// The shell's line editor is happier with short lines: what runs in
	// the VM is a script on the work disk.
	pattern := "RestoreToDrive|SHA256"
	if p := os.Getenv("DRAWBRIDGE_VM_BENCH"); p != "" {
		pattern = p
	}
	script := "cat /proc/cpuinfo\n" +
		"TMPDIR=/data/tmp DRAWBRIDGE_BENCH_TREE=/data/tree /data/todrive.test -test.run '^$' -test.bench '" + pattern + "' " +
		"-test.benchtime 2x -test.timeout " + benchTimeout.String() + "\n"
	must(b, os.WriteFile(filepath.Join(stage, "run.sh"), []byte(script), 0o644))
	var treeBytes int64
	must(b, dirSize(tree, &treeBytes))
	treeFiles := 0
	filepath.Walk(tree, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			treeFiles++
		}
		return err
	})
	// The tree, its store, a local restore and one drive image at a
	// time, with room to spare.
	r := runInDebug(b, stage, max(2<<30, (4*treeBytes+(512<<20))>>20<<20), benchTimeout+time.Minute, "-cpu", "max")
	out := r.Out
	if r.Status != 0 {
		b.Fatalf("the benchmark in the VM failed (exit status %d); its output:\n%s", r.Status, strings.Join(out, "\n"))
	}
	// A benchmark's log is cut after ten lines: the lines that matter.
	rates := map[string]float64{}
	var cpu, flags string
	var sha float64
	var lines []string
	for _, l := range out {
		switch m := benchLine.FindStringSubmatch(l); {
		case strings.HasPrefix(l, "BenchmarkSHA256"):
			// First: the log is cut after ten lines.
			lines = append([]string{strings.Join(strings.Fields(l), " ")}, lines...)
			if m := shaLine.FindStringSubmatch(l); m != nil {
				sha, _ = strconv.ParseFloat(m[1], 64)
			}
		case m != nil:
			rates[m[1]], _ = strconv.ParseFloat(m[2], 64)
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		case strings.HasPrefix(l, "flags") && flags == "":
			have := strings.Fields(l)
			for _, f := range []string{"aes", "pclmulqdq", "ssse3", "sse4_1", "avx", "avx2", "bmi2", "sha_ni", "avx512f"} {
				if !slices.Contains(have, f) {
					f = "no " + f
				}
				flags += " " + f
			}
		case strings.HasPrefix(l, "cpu: "):
			cpu = strings.TrimPrefix(l, "cpu: ")
		}
	}
	b.Logf("in the VM (cpu %s:%s; 3 GiB; booted in %.0fs, benchmark %.0fs), tree of %d files, %.1f MB:\n%s",
		cpu, flags, r.Booted.Seconds(), r.Took.Seconds(), treeFiles, float64(treeBytes)/1e6, strings.Join(lines, "\n"))
	if sha > 0 {
		b.ReportMetric(sha, "sha256-MB/s")
	}
	local := rates["local"]
	if local == 0 {
		b.Fatal("no MB/s for the local restore in the benchmark's output")
	}
	for _, name := range []string{"local", "export-ext4", "ext4", "exfat", "vfat", "raw-ext4", "raw-exfat", "raw-vfat"} {
		r, ok := rates[name]
		if !ok && pattern != "RestoreToDrive|SHA256" {
			continue
		}
		if !ok {
			b.Errorf("no MB/s for %s in the benchmark's output", name)
			continue
		}
		b.ReportMetric(r, name+"-MB/s")
		if name != "local" {
			b.ReportMetric(100*r/local, name+"-%local")
		}
		if raw := rates["raw-"+name]; raw > 0 {
			b.ReportMetric(100*r/raw, name+"-%raw")
		}
	}
}

// shaLine is BenchmarkSHA256's result line: MB/s on one CPU.
var shaLine = regexp.MustCompile(`^BenchmarkSHA256\S*\s+\d+\s+[0-9.e+]+ ns/op\s+([0-9.]+) MB/s`)

// benchLine is a result line of BenchmarkRestoreToDrive: the target and
// its MB/s.
var benchLine = regexp.MustCompile(`^BenchmarkRestoreToDrive/([a-z0-9-]+?)(?:-\d+)?\s+\d+\s+[0-9.e+]+ ns/op\s+([0-9.]+) MB/s`)

// typeSeen types s and the enter key at the shell, and again until the
// console echoes a line with echo in it: the shell's line editor drops
// what comes while it sets up its prompt.
func typeSeen(b testing.TB, v *vm, s, echo string) {
	b.Helper()
	for range 3 {
		time.Sleep(2 * time.Second)
		n := len(v.linesMatching(echo))
		if _, err := io.WriteString(v.stdin, s+"\r"); err != nil {
			b.Fatalf("type %q: %v", s, err)
		}
		for range 100 {
			if len(v.linesMatching(echo)) > n {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	b.Fatalf("typed %q three times; the shell did not take it", s)
}

// genTree writes a mixed tree of about size bytes under dir: files of
// random (incompressible) content up to 2 MiB, and text-like files, which
// compress, as most of a real tree does, in a few levels of directories.
func genTree(b testing.TB, dir string, size int64) {
	b.Helper()
	r := rand.New(rand.NewPCG(7, 1))
	src := rand.NewChaCha8([32]byte{7})
	words := strings.Fields("the vault keeps every snapshot of every source sealed on its own disk and a person at its console restores files to a drive 0123456789")
	var total int64
	for i := 0; total < size; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%d", i%8), fmt.Sprintf("e%d", i%5))
		must(b, os.MkdirAll(d, 0o755))
		var data []byte
		if i%3 == 2 {
			n := r.IntN(2 << 20)
			data = make([]byte, n)
			src.Read(data)
		} else {
			n := r.IntN(512 << 10)
			var buf bytes.Buffer
			for buf.Len() < n {
				fmt.Fprintf(&buf, "%d ", r.IntN(100000))
				for range 10 {
					buf.WriteString(words[r.IntN(len(words))])
					buf.WriteByte(' ')
				}
				buf.WriteByte('\n')
			}
			data = buf.Bytes()
		}
		data = data[:min(int64(len(data)), size-total)]
		must(b, os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d.dat", i)), data, 0o644))
		total += int64(len(data))
	}
}

// dirSize adds the sizes of the regular files under dir to *n.
func dirSize(dir string, n *int64) error {
	return filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			*n += fi.Size()
		}
		return err
	})
}
