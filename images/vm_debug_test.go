//go:build vm

package images

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// debugRun is a script run in the appliance's debug image by runInDebug.
type debugRun struct {
	Out    []string // what the script wrote, standard output and error
	Status int      // its exit status: 0, 1 or 2 (more reads as 2)
	Booted time.Duration
	Took   time.Duration // the script's run
}

// testBinary builds the tests of pkg (an import path) into a static test
// binary at dst, for the appliance's machine.
func testBinary(tb testing.TB, pkg, dst string) {
	tb.Helper()
	build := exec.Command("go", "test", "-c", "-o", dst, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("go test -c %s: %v\n%s", pkg, err, out)
	}
}

// runInDebug boots the debug image (a shell on the serial console) with a
// work disk: an ext4 filesystem of size bytes labelled DBBENCH, which PID
// 1 leaves alone (not its data disk's label, and not blank, so never
// offered for formatting), made from the directory stage, which holds
// run.sh and what it needs. It mounts the disk on /data (free: PID 1
// mounts nothing there without a data disk), runs /data/run.sh with gosh,
// its output going to a file on the disk so that no kernel or PID 1
// message splits its lines on the console, and returns that output once
// the script ends or timeout passes. stage is removed. qemu are further
// QEMU arguments.
func runInDebug(tb testing.TB, stage string, size int64, timeout time.Duration, qemu ...string) debugRun {
	tb.Helper()
	a := image(tb, "debug", true)
	disk := blankDisk(tb, size)
	if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-L", "DBBENCH", "-d", stage, disk).CombinedOutput(); err != nil {
		tb.Fatalf("mke2fs: %v\n%s", err, out)
	}
	os.RemoveAll(stage)

	start := time.Now()
	v := bootVM(tb, a, append([]string{"--data", disk, "--mem", "3072", "--append", "quiet", "--"}, qemu...)...)
	for _, s := range []string{"drawbridge: DEBUG IMAGE: shell on console", "drawbridge: ready"} {
		if _, _, err := v.await(readyTimeout, s); err != nil {
			tb.Fatal(err)
		}
	}
	r := debugRun{Booted: time.Since(start)}
	typeSeen(tb, v, "mount -t ext4 /dev/vda /data && gosh /data/run.sh >/data/run.out 2>&1; echo RUNEND $?", "echo RUNEND")
	// What is typed is echoed: "RUNEND $?", never "RUNEND 0".
	i, _, err := v.await(timeout, "RUNEND 0", "RUNEND 1", "RUNEND 2")
	if err != nil {
		tb.Fatal(err)
	}
	r.Status = i
	r.Took = time.Since(start) - r.Booted
	mark := len(v.linesMatching(""))
	typeSeen(tb, v, "cat /data/run.out; echo CATEND $?", "echo CATEND")
	if _, _, err := v.await(5*time.Minute, "CATEND 0", "CATEND 1"); err != nil {
		tb.Fatal(err)
	}
	for _, l := range v.linesMatching("")[mark:] {
		// Each line carries the seconds since QEMU started.
		if f := strings.SplitN(strings.TrimLeft(l, " "), " ", 2); len(f) == 2 {
			r.Out = append(r.Out, f[1])
		}
	}
	return r
}

// TestUSBInVM runs the tests of sticks in the appliance's own kernel,
// under CI=true: hw/usb's and vault/todrive's, vault/export's to a vfat
// drive and vault/console's with drives. They meet its vfat and exfat
// drivers, not the FUSE drivers a host without them falls back to (a
// stick pulled out in the middle of a restore fails differently through
// FUSE), and its MBR partition tables, which a kernel built without them
// (a minimal one for VMs) lacks, so that TestFormatPartitioned skips on
// such a host. Every test must pass, TestFormatPartitioned among them.
func TestUSBInVM(t *testing.T) {
	need(t, append(BootRequirements(false), Requirement{"mke2fs", "e2fsprogs"}, reqGo))
	stage := filepath.Join(t.TempDir(), "stage")
	must(t, os.MkdirAll(filepath.Join(stage, "tmp"), 0o1777))
	os.Chmod(filepath.Join(stage, "tmp"), 0o1777)
	var script strings.Builder
	script.WriteString("cd /data\n")
	// Each package's tests that run there, and one that must pass.
	pkgs := []struct{ pkg, run, pass string }{
		{"hw/usb", "Test", "TestFormatPartitioned"},
		{"vault/todrive", "Test", "TestDrivePulled"},
		{"vault/export", "VFAT", "TestVFAT"},
		{"vault/console", "USB", "TestUSBDrivesPulled"},
	}
	for _, c := range pkgs {
		bin := path.Base(c.pkg) + ".test"
		testBinary(t, "drawbridge/"+c.pkg, filepath.Join(stage, bin))
		fmt.Fprintf(&script, "CI=true TMPDIR=/data/tmp /data/%s -test.v -test.run %s -test.timeout 5m || exit 1\n", bin, c.run)
	}
	must(t, os.WriteFile(filepath.Join(stage, "run.sh"), []byte(script.String()), 0o644))
	r := runInDebug(t, stage, 1<<30, 11*time.Minute)
	out := strings.Join(r.Out, "\n")
	t.Logf("in the VM (booted in %.0fs, tests %.0fs):\n%s", r.Booted.Seconds(), r.Took.Seconds(), out)
	if r.Status != 0 {
		t.Fatalf("the tests of sticks did not all pass in the VM (exit status %d)", r.Status)
	}
	for _, c := range pkgs {
		if !strings.Contains(out, "--- PASS: "+c.pass+" ") {
			t.Errorf("%s's %s did not pass in the VM", c.pkg, c.pass)
		}
	}
}
