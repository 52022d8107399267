//go:build vm

// The VM tests build the appliance's artifacts and boot them in QEMU
// (software emulation), driving the serial console and the power button as
// a person would. They take minutes, so they run with -tags vm (make
// test-vm), not in the ordinary go test ./... run.
package images

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds of a boot under software emulation.
const (
	readyTimeout    = 120 * time.Second
	powerOffTimeout = 60 * time.Second
)

var (
	tmpRoot string
	builds  sync.Map // name → *builtImage
)

func TestMain(m *testing.M) {
	var err error
	tmpRoot, err = os.MkdirTemp("", "drawbridge-vmtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

// need skips the test when something it needs is missing, or fails it
// under CI=true, naming the packages to install either way.
func need(t *testing.T, reqs []Requirement) {
	t.Helper()
	if m := Missing(reqs); len(m) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true requires it: %v", MissingError(m))
		}
		t.Skip(MissingError(m))
	}
}

type builtImage struct {
	once sync.Once
	a    *Artifacts
	took time.Duration
	err  error
}

// image builds the artifacts once per name ("prod", "debug", …) per run.
func image(t *testing.T, name string, debug bool) *Artifacts {
	t.Helper()
	need(t, BuildRequirements(false))
	v, _ := builds.LoadOrStore(name, &builtImage{})
	b := v.(*builtImage)
	b.once.Do(func() {
		start := time.Now()
		var log bytes.Buffer
		b.a, b.err = Build(context.Background(), Config{
			Repo:  "..",
			Out:   filepath.Join(tmpRoot, name),
			Debug: debug,
			Log:   &log,
		})
		b.took = time.Since(start)
		if b.err != nil {
			b.err = fmt.Errorf("%w\n%s", b.err, log.Bytes())
		}
	})
	if b.err != nil {
		t.Fatalf("build the %s image: %v", name, b.err)
	}
	t.Logf("%s image built in %.1fs", name, b.took.Seconds())
	return b.a
}

// TestImageIsReproducible builds the image twice from two copies of the
// source at different paths, and compares the bytes. (Copies, so that an
// edit to the working tree between the builds cannot make them differ.)
func TestImageIsReproducible(t *testing.T) {
	need(t, BuildRequirements(false))
	var outs []string
	for _, name := range []string{"a", "bb"} {
		src := filepath.Join(tmpRoot, "src-"+name)
		if name == "a" {
			if err := copySource("..", src); err != nil {
				t.Fatal(err)
			}
		} else if err := copySource(filepath.Join(tmpRoot, "src-a"), src); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(tmpRoot, "repro-"+name)
		start := time.Now()
		var log bytes.Buffer
		if _, err := Build(context.Background(), Config{Repo: src, Out: out, Log: &log}); err != nil {
			t.Fatalf("build from %s: %v\n%s", src, err, log.Bytes())
		}
		t.Logf("built from %s in %.1fs", src, time.Since(start).Seconds())
		outs = append(outs, out)
	}
	for _, f := range []string{KernelFile, InitramfsFile, DiskFile} {
		a, err := os.ReadFile(filepath.Join(outs[0], f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(outs[1], f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same source", f)
		}
	}
}

// copySource copies the Go source of the repository: everything but the
// git directory, build outputs, demo data and test data.
func copySource(src, dst string) error {
	skip := map[string]bool{".git": true, "bin": true, "demo": true, "out": true, "testdata": true}
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() && skip[d.Name()] && rel != "." {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
		return nil
	})
}

// forbidden are programs the production image must not carry: shells and
// remote logins.
var forbidden = []string{"sh", "bash", "ash", "dash", "busybox", "elvish", "gosh", "sshd", "dropbear", "telnetd", "getty"}

func TestInitramfsContents(t *testing.T) {
	a := image(t, "prod", false)
	st, err := os.Stat(a.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %.1f MiB", InitramfsFile, float64(st.Size())/(1<<20))
	if st.Size() > 40<<20 {
		t.Errorf("%s is %d bytes, over the 40 MB budget", InitramfsFile, st.Size())
	}
	entries, err := List(a.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]Entry{}
	modules := 0
	for _, e := range entries {
		names[e.Name] = e
		if strings.HasSuffix(e.Name, ".ko") {
			modules++
		}
		base := path.Base(e.Name)
		for _, f := range forbidden {
			if base == f {
				t.Errorf("the production initramfs has %s", e.Name)
			}
		}
		if e.Mode&0o170000 == 0o100000 && e.Mode&0o111 != 0 && !strings.HasPrefix(e.Name, "bin/") && !strings.HasPrefix(e.Name, "sbin/") &&
			!(strings.HasPrefix(e.Name, "lib") && strings.Contains(e.Name, ".so")) {
			t.Errorf("an executable outside /bin and /sbin: %s", e.Name)
		}
	}
	for _, want := range []string{"init", "bin/drawbridge-init", "bin/drawbridge", "dev/console", "etc/os-release",
		"lib/modules/" + a.Release + "/modules.dep", "sbin/mke2fs", "sbin/mkfs.vfat", "sbin/mkfs.exfat",
		"lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libext2fs.so.2"} {
		if _, ok := names[want]; !ok {
			t.Errorf("the initramfs has no %s", want)
		}
	}
	var bins []string
	for n := range names {
		if strings.HasPrefix(n, "bin/") || strings.HasPrefix(n, "sbin/") {
			bins = append(bins, n)
		}
	}
	sort.Strings(bins)
	if want := "bin/drawbridge bin/drawbridge-init sbin/mke2fs sbin/mkfs.exfat sbin/mkfs.vfat"; strings.Join(bins, " ") != want {
		t.Errorf("programs in the image: %v, want only %s", bins, want)
	}
	if modules < 30 {
		t.Errorf("only %d kernel modules in the image", modules)
	}
	if root := names["."]; root.Mode&0o777 != 0o755 {
		t.Errorf("the root directory has mode %o, want 755", root.Mode&0o777)
	}
}

func TestDebugInitramfsHasAShell(t *testing.T) {
	a := image(t, "debug", true)
	entries, err := List(a.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name == "bin/gosh" {
			return
		}
	}
	t.Error("the debug image has no bin/gosh")
}

// vm is one QEMU run of images/qemu.
type vm struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	qmp   string
	start time.Time

	mu    sync.Mutex
	lines []string // the serial console, each line prefixed with the seconds since start
	cond  *sync.Cond
	eof   bool
	exit  chan error
}

// bootVM starts images/qemu on the artifacts in dir with the given options.
func bootVM(t *testing.T, a *Artifacts, opts ...string) *vm {
	t.Helper()
	need(t, BootRequirements(slicesContains(opts, "--uefi")))
	sock := filepath.Join(t.TempDir(), "qmp")
	args := append([]string{"--out", filepath.Dir(a.Kernel), "--qmp", sock}, opts...)
	cmd := exec.Command("./qemu", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	v := &vm{t: t, cmd: cmd, stdin: stdin, qmp: sock, exit: make(chan error, 1)}
	v.cond = sync.NewCond(&v.mu)
	v.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go v.read(out)
	go func() { v.exit <- cmd.Wait() }()
	t.Cleanup(func() {
		// QEMU and the script's shell, if the test did not power off.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("serial console:\n%s", v.console())
		}
	})
	return v
}

func slicesContains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

// ansi matches the terminal escapes firmware writes to the console.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[a-zA-Z]|\x1bc`)

func (v *vm) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(ansi.ReplaceAllString(sc.Text(), ""), "\r")
		v.mu.Lock()
		v.lines = append(v.lines, fmt.Sprintf("%6.2f %s", time.Since(v.start).Seconds(), line))
		v.cond.Broadcast()
		v.mu.Unlock()
	}
	v.mu.Lock()
	v.eof = true
	v.cond.Broadcast()
	v.mu.Unlock()
}

func (v *vm) console() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(v.lines, "\n")
}

// waitFor waits until a console line contains s and returns the seconds
// since QEMU started.
func (v *vm) waitFor(s string, timeout time.Duration) float64 {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { v.mu.Lock(); v.cond.Broadcast(); v.mu.Unlock() })
	defer timer.Stop()
	v.mu.Lock()
	defer v.mu.Unlock()
	seen := 0
	for {
		for ; seen < len(v.lines); seen++ {
			if strings.Contains(v.lines[seen], s) {
				var secs float64
				fmt.Sscanf(v.lines[seen], "%f", &secs)
				return secs
			}
		}
		if v.eof {
			v.t.Fatalf("QEMU exited before the console said %q", s)
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("the console did not say %q within %v", s, timeout)
		}
		v.cond.Wait()
	}
}

// has reports whether a console line contains s.
func (v *vm) has(s string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, l := range v.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// linesMatching returns the console lines that contain s.
func (v *vm) linesMatching(s string) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var m []string
	for _, l := range v.lines {
		if strings.Contains(l, s) {
			m = append(m, l)
		}
	}
	return m
}

// powerButton presses the power button through QMP (system_powerdown) and
// waits for QEMU to exit on its own.
func (v *vm) powerButton() {
	v.t.Helper()
	var conn net.Conn
	var err error
	for i := 0; i < 50; i++ {
		if conn, err = net.Dial("unix", v.qmp); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		v.t.Fatalf("QMP: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	dec := json.NewDecoder(conn)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		v.t.Fatalf("QMP greeting: %v", err)
	}
	for _, c := range []string{"qmp_capabilities", "system_powerdown"} {
		fmt.Fprintf(conn, `{"execute": %q}`+"\n", c)
		for {
			var reply map[string]any
			if err := dec.Decode(&reply); err != nil {
				v.t.Fatalf("QMP %s: %v", c, err)
			}
			if e, ok := reply["error"]; ok {
				v.t.Fatalf("QMP %s: %v", c, e)
			}
			if _, ok := reply["return"]; ok {
				break
			}
		}
	}
	start := time.Now()
	select {
	case err := <-v.exit:
		if err != nil {
			v.t.Errorf("QEMU exited with %v", err)
		}
		v.t.Logf("powered off %.1fs after the power button", time.Since(start).Seconds())
	case <-time.After(powerOffTimeout):
		v.t.Fatalf("QEMU still running %v after the power button", powerOffTimeout)
	}
}

// checkBoot checks that every boot step reported and none failed.
func (v *vm) checkBoot() {
	v.t.Helper()
	for _, l := range v.linesMatching("drawbridge: boot: ") {
		if strings.Contains(l, ": failed: ") {
			v.t.Errorf("a boot step failed: %s", l)
		}
	}
	for _, step := range []string{"mount", "modules", "entropy", "rtc", "watchdog", "power-button", "data-disk"} {
		if !v.has("drawbridge: boot: " + step + ": ok") {
			v.t.Errorf("no %q", "drawbridge: boot: "+step+": ok")
		}
	}
}

func (v *vm) logTimes(ready float64) {
	v.t.Helper()
	init := v.waitFor("Run /init as init process", time.Second)
	v.t.Logf("QEMU start to /init: %.1fs, to drawbridge: ready: %.1fs", init, ready)
}

func TestBootWithoutDataDisk(t *testing.T) {
	a := image(t, "prod", false)
	v := bootVM(t, a)
	ready := v.waitFor("drawbridge: ready", readyTimeout)
	v.logTimes(ready)
	v.checkBoot()
	if !v.has("drawbridge: no data disk") {
		t.Error("the console does not say there is no data disk")
	}
	if !v.has("drawbridge: boot: daemon: skipped: no data disk") {
		t.Error("the daemon step did not say why it started nothing")
	}
	if v.has("DEBUG IMAGE") {
		t.Error("the production image says it is a debug image")
	}
	v.powerButton()
	for _, l := range []string{"drawbridge: shutting down: power button", "drawbridge: shutdown: watchdog: ok", "drawbridge: power off"} {
		if !v.has(l) {
			t.Errorf("no %q on the console", l)
		}
	}
}

func TestBootWithDataDisk(t *testing.T) {
	need(t, []Requirement{{"mke2fs", "e2fsprogs"}})
	a := image(t, "prod", false)
	data := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(data, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(data, 256<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-L", "DRAWBRIDGE", data).CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	v := bootVM(t, a, "--data", data)
	ready := v.waitFor("drawbridge: ready", readyTimeout)
	v.logTimes(ready)
	v.checkBoot()
	for _, l := range []string{
		"drawbridge: boot: data-disk: /dev/vda",
		"drawbridge: boot: mount-data: /dev/vda on /data",
		"drawbridge: boot: mount-data: ok",
	} {
		if !v.has(l) {
			t.Errorf("no %q on the console", l)
		}
	}
	if v.has("drawbridge: no data disk") {
		t.Error("says no data disk with one attached")
	}
	v.powerButton()
	if !v.has("drawbridge: shutdown: unmount: /data") {
		t.Error("/data was not unmounted at power-off")
	}
	// The filesystem was cleanly unmounted: e2fsck finds nothing to do.
	if out, err := exec.Command("e2fsck", "-n", "-f", data).CombinedOutput(); err != nil {
		t.Errorf("e2fsck after power-off: %v\n%s", err, out)
	}
}

func TestBootUEFIDisk(t *testing.T) {
	a := image(t, "prod", false)
	v := bootVM(t, a, "--uefi")
	ready := v.waitFor("drawbridge: ready", readyTimeout)
	v.logTimes(ready)
	v.checkBoot()
	if !v.has("Command line: console=ttyS0") {
		t.Error("the kernel did not get its command line from the unified image")
	}
	v.powerButton()
}

func TestBootDebugImage(t *testing.T) {
	a := image(t, "debug", true)
	v := bootVM(t, a)
	v.waitFor("drawbridge: DEBUG IMAGE: shell on console", readyTimeout)
	v.waitFor("drawbridge: ready", readyTimeout)
	// Type a command at the shell; its output, not the echo of what was
	// typed, carries the answer.
	time.Sleep(2 * time.Second)
	fmt.Fprintf(v.stdin, "cat /etc/os-release\r")
	v.waitFor(`PRETTY_NAME="Drawbridge backup vault"`, 60*time.Second)
	v.powerButton()
}
