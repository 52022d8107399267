//go:build vm

// The VM tests build the appliance's artifacts and boot them in QEMU
// (software emulation), driving the serial console and the power button as
// a person would. They take minutes, so they run with -tags vm (make
// test-vm), not in the ordinary go test ./... run.
//
// The harness, for every VM test of this package:
//
//   - image(t, name, debug) builds the artifacts once per name per run
//     ("prod", "debug") and returns their paths;
//   - need(t, reqs) skips a test that lacks a tool, or fails it under
//     CI=true, naming the Debian packages to install;
//   - bootVM(t, a, opts...) starts images/qemu with options (--data FILE,
//     --stick FILE, --tap IFACE, --append "KERNEL ARGS", --uefi) and returns
//     a *vm; QEMU is killed when the test ends and the serial console is
//     logged when it failed;
//   - v.waitFor(s, timeout) waits for a console line, or a prompt still
//     without its newline, containing s; v.waitForAny(timeout, s...) for
//     the first of several; v.has(s), v.linesMatching(s) (whole lines
//     only) and v.console() look at what was said;
//   - v.typeLine(s) types s and enter on the serial console;
//   - v.qmp(cmd) runs a QMP command; v.sawEvent(name) tells whether QEMU
//     sent that event (WATCHDOG, RESET, SHUTDOWN …); v.powerButton() is
//     system_powerdown and waits for QEMU to exit; v.waitExit waits for it
//     to exit on its own (images/qemu passes -no-reboot: a reset ends it);
//   - blankDisk(t, size) is a sparse, all-zero disk file; storeDisk(t)
//     holds an ext4 filesystem labelled DRAWBRIDGE with a store and a
//     configuration, as the first boot leaves it.
package images

import (
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

	"drawbridge/vault/fixture"
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
func need(t testing.TB, reqs []Requirement) {
	t.Helper()
	if m := Missing(reqs); len(m) > 0 {
		fixture.Need(t, MissingError(m).Error())
	}
}

type builtImage struct {
	once sync.Once
	a    *Artifacts
	took time.Duration
	err  error
}

// image builds the artifacts once per name ("prod", "debug", …) per run.
func image(t testing.TB, name string, debug bool) *Artifacts {
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

// vm is one QEMU run of images/qemu: its serial console, as lines, and
// its QMP socket, kept open from the start so that no event is missed.
type vm struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	start time.Time

	mu      sync.Mutex
	cond    *sync.Cond
	lines   []string // the serial console, each line prefixed with the seconds since start
	partial string   // the line being written (a prompt waits without its newline)
	eof     bool
	events  []string // QMP event names, in order

	exited  chan struct{} // closed when QEMU has exited
	exitErr error

	qmpConn    net.Conn
	qmpReplies chan map[string]any
	qmpReady   chan struct{} // closed once capabilities are negotiated
	qmpErr     error
}

// bootVM starts images/qemu on the artifacts with the given options
// (--data FILE, --stick FILE, --tap IFACE, --append ARGS, --uefi, …; see
// images/qemu --help). QEMU is killed when the test ends, and the serial
// console is logged if the test failed.
func bootVM(t testing.TB, a *Artifacts, opts ...string) *vm {
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
	v := &vm{t: t, cmd: cmd, stdin: stdin, exited: make(chan struct{}),
		qmpReplies: make(chan map[string]any, 8), qmpReady: make(chan struct{})}
	v.cond = sync.NewCond(&v.mu)
	v.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go v.read(out)
	go func() {
		err := cmd.Wait()
		v.mu.Lock()
		v.exitErr = err
		v.mu.Unlock()
		close(v.exited)
	}()
	go v.qmpConnect(sock)
	t.Cleanup(func() {
		// QEMU and the script's shell, if the test did not power off.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if v.qmpConn != nil {
			v.qmpConn.Close()
		}
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

// ansi matches the terminal escapes firmware and the full-screen console
// write to the serial line.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[a-zA-Z]|\x1b[()][0-9A-B]|\x1b[c78=>]`)

func (v *vm) read(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		v.mu.Lock()
		v.partial += string(buf[:n])
		for {
			i := strings.IndexByte(v.partial, '\n')
			if i < 0 {
				break
			}
			line := strings.TrimRight(ansi.ReplaceAllString(v.partial[:i], ""), "\r")
			v.lines = append(v.lines, fmt.Sprintf("%6.2f %s", time.Since(v.start).Seconds(), line))
			v.partial = v.partial[i+1:]
		}
		if len(v.partial) > 1<<20 { // a screen that never ends a line
			v.lines = append(v.lines, fmt.Sprintf("%6.2f %s", time.Since(v.start).Seconds(), ansi.ReplaceAllString(v.partial, "")))
			v.partial = ""
		}
		if err != nil {
			v.eof = true
		}
		v.cond.Broadcast()
		v.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// console is everything the serial console said so far.
func (v *vm) console() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(append(v.lines, ansi.ReplaceAllString(v.partial, "")), "\n")
}

// waitFor waits until a console line, or the line being written (a
// prompt), contains s, and returns the seconds since QEMU started. Lines
// seen by an earlier waitFor are searched again: use a string that only
// the awaited event prints.
func (v *vm) waitFor(s string, timeout time.Duration) float64 {
	v.t.Helper()
	_, secs, err := v.await(timeout, s)
	if err != nil {
		v.t.Fatal(err)
	}
	return secs
}

// waitForAny waits for the first of several strings, as waitFor does,
// and returns which one came.
func (v *vm) waitForAny(timeout time.Duration, s ...string) int {
	v.t.Helper()
	i, _, err := v.await(timeout, s...)
	if err != nil {
		v.t.Fatal(err)
	}
	return i
}

func (v *vm) await(timeout time.Duration, ss ...string) (int, float64, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { v.mu.Lock(); v.cond.Broadcast(); v.mu.Unlock() })
	defer timer.Stop()
	v.mu.Lock()
	defer v.mu.Unlock()
	seen := 0
	what := strings.Join(ss, `" or "`)
	for {
		for ; seen < len(v.lines); seen++ {
			for i, s := range ss {
				if strings.Contains(v.lines[seen], s) {
					var secs float64
					fmt.Sscanf(v.lines[seen], "%f", &secs)
					return i, secs, nil
				}
			}
		}
		partial := ansi.ReplaceAllString(v.partial, "")
		for i, s := range ss {
			if strings.Contains(partial, s) {
				return i, time.Since(v.start).Seconds(), nil
			}
		}
		if v.eof {
			return -1, 0, fmt.Errorf("QEMU exited before the console said %q", what)
		}
		if time.Now().After(deadline) {
			return -1, 0, fmt.Errorf("the console did not say %q within %v", what, timeout)
		}
		v.cond.Wait()
	}
}

// typeLine types s and the enter key on the serial console.
func (v *vm) typeLine(s string) {
	v.t.Helper()
	if _, err := io.WriteString(v.stdin, s+"\r"); err != nil {
		v.t.Fatalf("type %q: %v", s, err)
	}
}

// has reports whether a console line contains s.
func (v *vm) has(s string) bool {
	return len(v.linesMatching(s)) > 0
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

// qmpConnect connects to QEMU's QMP socket, negotiates, then reads
// replies (for qmp) and events (for sawEvent) until QEMU exits.
func (v *vm) qmpConnect(sock string) {
	var conn net.Conn
	var err error
	for i := 0; i < 100; i++ {
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		v.qmpErr = fmt.Errorf("QMP: %w", err)
		close(v.qmpReady)
		return
	}
	v.qmpConn = conn
	dec := json.NewDecoder(conn)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		v.qmpErr = fmt.Errorf("QMP greeting: %w", err)
		close(v.qmpReady)
		return
	}
	fmt.Fprintf(conn, `{"execute": "qmp_capabilities"}`+"\n")
	ready := false
	for {
		var msg map[string]any
		if err := dec.Decode(&msg); err != nil {
			if !ready {
				v.qmpErr = fmt.Errorf("QMP: %w", err)
				close(v.qmpReady)
			}
			close(v.qmpReplies)
			return
		}
		if ev, ok := msg["event"].(string); ok {
			v.mu.Lock()
			v.events = append(v.events, ev)
			v.lines = append(v.lines, fmt.Sprintf("%6.2f [QMP event %s %v]", time.Since(v.start).Seconds(), ev, msg["data"]))
			v.cond.Broadcast()
			v.mu.Unlock()
			continue
		}
		if !ready {
			ready = true
			close(v.qmpReady)
			continue
		}
		v.qmpReplies <- msg
	}
}

// qmp runs a QMP command ("system_powerdown", "system_reset", …).
func (v *vm) qmp(command string) {
	v.t.Helper()
	<-v.qmpReady
	if v.qmpErr != nil {
		v.t.Fatal(v.qmpErr)
	}
	fmt.Fprintf(v.qmpConn, `{"execute": %q}`+"\n", command)
	select {
	case reply, ok := <-v.qmpReplies:
		if !ok {
			v.t.Fatalf("QMP %s: QEMU closed the socket", command)
		}
		if e, ok := reply["error"]; ok {
			v.t.Fatalf("QMP %s: %v", command, e)
		}
	case <-time.After(30 * time.Second):
		v.t.Fatalf("QMP %s: no reply", command)
	}
}

// sawEvent reports whether QEMU sent a QMP event of that name
// ("WATCHDOG", "RESET", "SHUTDOWN", "POWERDOWN").
func (v *vm) sawEvent(name string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slicesContains(v.events, name)
}

// waitExit waits for QEMU to exit on its own and returns how long that
// took; images/qemu passes -no-reboot, so a reset (the watchdog's) ends it.
func (v *vm) waitExit(timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	select {
	case <-v.exited:
		v.mu.Lock()
		defer v.mu.Unlock()
		return time.Since(start), v.exitErr
	case <-time.After(timeout):
		return 0, fmt.Errorf("QEMU still running after %v", timeout)
	}
}

// powerButton presses the power button through QMP (system_powerdown) and
// waits for QEMU to exit on its own.
func (v *vm) powerButton() {
	v.t.Helper()
	v.qmp("system_powerdown")
	took, err := v.waitExit(powerOffTimeout)
	if err != nil {
		v.t.Fatal(err)
	}
	v.t.Logf("powered off %.1fs after the power button", took.Seconds())
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

// blankDisk is a sparse disk file of size bytes, all zeros: a new disk.
func blankDisk(t testing.TB, size int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(name, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
	return name
}

// vmPassphrase is the restore passphrase of the stores the VM tests make.
const vmPassphrase = "correct horse battery staple"

// vmConfig is a configuration the daemon accepts: a nightly window on an
// interface the VM does not have, and a source it never reaches, so the
// daemon only waits.
const vmConfig = `store = "/data/store"

[network]
interface = "eth0"
address = "198.18.0.2/24"

[[window]]
days = "daily"
start = "02:00"
duration = "1h"

[[source]]
name = "web1"
kind = "sftp"
host = "198.18.0.1"
port = 22
user = "backup"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3ukDbZp5AtAfGZpmNwOeTX0xe1V9BKPYR6MUawHK92"
paths = ["/etc"]
`

// storeDisk is a 256 MiB disk holding what a first boot leaves: an ext4
// filesystem labelled DRAWBRIDGE with a store (made by this repository's
// drawbridge init) and a configuration. mke2fs -d fills it without
// mounting anything.
func storeDisk(t *testing.T) string {
	t.Helper()
	need(t, []Requirement{{"mke2fs", "e2fsprogs"}, {"chattr", "e2fsprogs"}, reqGo})
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	// The store makes its journal immutable where the filesystem can.
	t.Cleanup(func() { exec.Command("chattr", "-R", "-i", root).Run() })
	bin := fixture.Build(t, "drawbridge/cmd/drawbridge")[0]
	pass := filepath.Join(dir, "passphrase")
	if err := os.WriteFile(pass, []byte(vmPassphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "init", "--store", filepath.Join(root, "store"), "--passphrase-file", pass).CombinedOutput(); err != nil {
		t.Fatalf("drawbridge init: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(root, "drawbridge.toml"), []byte(vmConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	img := blankDisk(t, 256<<20)
	if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-L", "DRAWBRIDGE", "-d", root, img).CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	return img
}

// checkClean checks, after power-off, that the data disk's filesystem was
// cleanly unmounted (e2fsck finds nothing to do) and is labelled
// DRAWBRIDGE.
func checkClean(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-f", "-n", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck after power-off: %v\n%s", err, out)
	}
	out, err := exec.Command("e2label", img).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "DRAWBRIDGE" {
		t.Errorf("e2label: %q, %v; want DRAWBRIDGE", out, err)
	}
}

func TestBootWithDataDisk(t *testing.T) {
	a := image(t, "prod", false)
	data := storeDisk(t)
	v := bootVM(t, a, "--data", data)
	ready := v.waitFor("drawbridge: ready", readyTimeout)
	v.logTimes(ready)
	v.checkBoot()
	for _, l := range []string{
		"drawbridge: boot: data-disk: /dev/vda",
		"drawbridge: boot: mount-data: /dev/vda on /data",
		"drawbridge: boot: store: /data/store",
		"drawbridge: boot: config: /data/drawbridge.toml",
		"drawbridge: boot: daemon: /bin/drawbridge run --config /data/drawbridge.toml",
		"drawbridge: boot: daemon: ok",
	} {
		if !v.has(l) {
			t.Errorf("no %q on the console", l)
		}
	}
	if v.has("drawbridge: no data disk") {
		t.Error("says no data disk with one attached")
	}
	if v.has("drawbridge: boot: format: first boot") {
		t.Error("offered to format the data disk")
	}
	// Let the daemon settle before it is stopped.
	time.Sleep(5 * time.Second)
	v.powerButton()
	if !v.has("drawbridge: shutdown: unmount: /data") {
		t.Error("/data was not unmounted at power-off")
	}
	checkClean(t, data)
}

// TestFirstBoot boots with a blank disk, confirms formatting at the
// serial console, types the restore passphrase twice for the new store,
// and checks that the disk is the data disk and clean after power-off.
func TestFirstBoot(t *testing.T) {
	need(t, []Requirement{{"e2fsck", "e2fsprogs"}, {"debugfs", "e2fsprogs"}})
	a := image(t, "prod", false)
	data := blankDisk(t, 1<<30)
	v := bootVM(t, a, "--data", data)
	v.waitFor("drawbridge: boot: format: first boot: vda (", readyTimeout)
	asked := v.waitFor(`type "format vda" and enter`, time.Minute)
	v.typeLine("format vda")
	v.waitFor("drawbridge: boot: format: formatting /dev/vda: /sbin/mke2fs", time.Minute)
	formatted := v.waitFor("drawbridge: boot: format: ok", 5*time.Minute)
	t.Logf("mke2fs of a 1 GiB disk: %.1fs", formatted-asked)
	v.waitFor("drawbridge: boot: store: no store at /data/store", time.Minute)
	// The prompt is written before echo is turned off: a person is slower
	// than that, the test waits.
	v.waitFor("Restore passphrase:", time.Minute)
	time.Sleep(2 * time.Second)
	v.typeLine(vmPassphrase)
	v.waitFor("Repeat it:", time.Minute)
	time.Sleep(2 * time.Second)
	v.typeLine(vmPassphrase)
	v.waitFor("drawbridge: boot: store: store made at /data/store", 2*time.Minute)
	// With no USB stick to import a configuration from, ctrl-c goes on
	// without one (a drawbridge without config import says so itself).
	importing := "drawbridge: boot: config: no configuration at /data/drawbridge.toml: importing one"
	if v.waitForAny(time.Minute, importing, "drawbridge: the configuration must be imported") == 0 {
		v.waitFor("Waiting for a USB drive", time.Minute)
		io.WriteString(v.stdin, "\x03")
		v.waitFor("drawbridge: boot: config: failed: ", time.Minute)
	}
	ready := v.waitFor("drawbridge: ready", 2*time.Minute)
	v.logTimes(ready)
	for _, l := range []string{
		"drawbridge: boot: format: /dev/vda is the data disk (label DRAWBRIDGE",
		"drawbridge: boot: mount-data: /dev/vda on /data",
		"drawbridge: boot: store: ok",
	} {
		if !v.has(l) {
			t.Errorf("no %q on the console", l)
		}
	}
	if v.has(vmPassphrase) {
		t.Error("the passphrase was echoed on the console")
	}
	v.powerButton()
	checkClean(t, data)
	out, err := exec.Command("debugfs", "-R", "stat /store/store.json", data).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Type: regular") {
		t.Errorf("no store on the data disk: %v\n%s", err, out)
	}
}

// TestDiskWithDataIsNotOffered boots with a disk that is all zeros but
// for a few bytes near its end (where a GPT keeps its backup): it is not
// offered for formatting, and not a byte of it changes.
func TestDiskWithDataIsNotOffered(t *testing.T) {
	a := image(t, "prod", false)
	data := blankDisk(t, 64<<20)
	f, err := os.OpenFile(data, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("EFI PART"), 64<<20-512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	v := bootVM(t, a, "--data", data)
	v.waitFor("drawbridge: ready", readyTimeout)
	v.checkBoot()
	for _, l := range []string{
		"drawbridge: boot: format: vda (64.0 MiB) holds data (its first or last MiB is not all zeros): not offered",
		"drawbridge: boot: format: skipped: no blank disk",
		"drawbridge: no data disk",
	} {
		if !v.has(l) {
			t.Errorf("no %q on the console", l)
		}
	}
	if v.has("format vda") {
		t.Error("offered a disk with data on it for formatting")
	}
	v.powerButton()
	after, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the disk with data on it was written to")
	}
}

// TestDaemonRestartedAndWatchdog makes the daemon crash (SIGKILL), then
// hang (SIGSTOP), through the test-only drawbridge.fault: PID 1 restarts
// the crashed one, and stops petting the watchdog once the hung one's
// heartbeat is stale, so QEMU's i6300esb resets the box (with
// -no-reboot, QEMU exits).
func TestDaemonRestartedAndWatchdog(t *testing.T) {
	const wdTimeout = 15 * time.Second
	a := image(t, "prod", false)
	data := storeDisk(t)
	v := bootVM(t, a, "--data", data, "--append",
		fmt.Sprintf("drawbridge.watchdog_timeout=%ds drawbridge.fault=kill-daemon-after:10s,stop-daemon-after:30s", int(wdTimeout.Seconds())))
	v.waitFor("drawbridge: ready", readyTimeout)
	if !v.has("drawbridge: boot: watchdog: i6300ESB timer, reboots a hung box after 15s") {
		t.Errorf("the watchdog's timeout was not set: %v", v.linesMatching("boot: watchdog:"))
	}
	v.waitFor("drawbridge: test fault: SIGKILL sent to the daemon", time.Minute)
	v.waitFor("drawbridge: daemon: killed by a signal; restarting in 1s", 30*time.Second)
	if v.has("daemon: warning: this drawbridge writes no heartbeat") {
		t.Skip("this drawbridge has no --heartbeat: the watchdog cannot tell a hung daemon")
	}
	stopped := v.waitFor("drawbridge: test fault: SIGSTOP sent to the daemon", time.Minute)
	hung := v.waitFor("it seems hung; no longer petting the watchdog", time.Minute)
	// Two stages of the i6300esb's timer, and the slowness of emulation.
	took, err := v.waitExit(2*wdTimeout + 60*time.Second)
	if err != nil {
		t.Fatalf("after the daemon hung: %v", err)
	}
	t.Logf("daemon stopped at %.1fs, PID 1 stopped petting at %.1fs, QEMU reset %.1fs later", stopped, hung, took.Seconds())
	if !v.sawEvent("WATCHDOG") && !v.sawEvent("RESET") {
		t.Error("QEMU exited without a watchdog event or a reset")
	}
	if v.has("drawbridge: power off") {
		t.Error("the box powered off instead of being reset")
	}
	// The restarted daemon journaled its restart on the data disk. The
	// reset left its ext4 journal unreplayed, and what it holds may be
	// the only good copy of the store's directories: a copy of the disk is
	// mounted read-write, which replays it (the disk itself stays as the
	// reset left it; a read-only loop device could not be replayed).
	bin := hostBinaries(t)
	mnt := t.TempDir()
	replayed := filepath.Join(t.TempDir(), "replayed.img")
	sh(t, "cp", "--sparse=always", data, replayed)
	sh(t, "mount", "-o", "loop,noatime", replayed, mnt)
	defer exec.Command("umount", mnt).Run()
	journal := sh(t, filepath.Join(bin, "drawbridge"), "journal", "--json", "--store", filepath.Join(mnt, "store"))
	if !strings.Contains(journal, `"type":"daemon-restarted"`) {
		t.Errorf("no daemon-restarted record in the journal:\n%s", journal)
	}
}

func TestBootUEFIDisk(t *testing.T) {
	a := image(t, "prod", false)
	v := bootVM(t, a, "--uefi")
	ready := v.waitFor("drawbridge: ready", readyTimeout)
	v.logTimes(ready)
	v.checkBoot()
	if !v.has("drawbridge: boot: consoles: /dev/tty1, /dev/ttyS0") {
		t.Errorf("PID 1 does not write to the screen and the serial port: %v", v.linesMatching("boot: consoles:"))
	}
	if !v.has("Command line: " + DefaultCmdline) {
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
