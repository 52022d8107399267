package cli

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/hw/link/linktest"
	"drawbridge/vault/journal"
	"drawbridge/vault/store"
)

// ptyPair is a pseudo-terminal: the daemon's console draws on the slave,
// the test reads the master as a serial terminal would.
type ptyPair struct {
	master *os.File
	slave  string
	keep   *os.File // the slave held open, so the master never reads EIO

	mu  sync.Mutex
	out bytes.Buffer
}

func openPty(t *testing.T) *ptyPair {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	p := &ptyPair{master: m, slave: fmt.Sprintf("/dev/pts/%d", n)}
	if p.keep, err = os.OpenFile(p.slave, os.O_RDWR|unix.O_NOCTTY, 0); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { p.keep.Close(); m.Close() })
	return p
}

var escapes = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78])|[\x00-\x08\x0e-\x1f]`)

// text is what the console wrote, its escape sequences taken out.
func (p *ptyPair) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return escapes.ReplaceAllString(p.out.String(), " ")
}

func (p *ptyPair) raw() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *ptyPair) waitFor(t *testing.T, limit time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		s, missing := p.text(), ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the console on the pty does not show %q; it wrote:\n%s", limit, missing, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *ptyPair) mark() {
	p.mu.Lock()
	p.out.Reset()
	p.mu.Unlock()
}

func (p *ptyPair) key(t *testing.T, s string) {
	t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// runProc is drawbridge run in the background.
type runProc struct {
	cmd  *exec.Cmd
	out  string
	done chan struct{}
	err  error
}

func startRun(t *testing.T, bin string, args ...string) *runProc {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "run-*.out")
	if err != nil {
		t.Fatal(err)
	}
	r := &runProc{cmd: exec.Command(bin, append([]string{"run"}, args...)...), out: f.Name(), done: make(chan struct{})}
	r.cmd.Stdout, r.cmd.Stderr = f, f
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DRAWBRIDGE_") {
			r.cmd.Env = append(r.cmd.Env, kv)
		}
	}
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-r.done
	})
	return r
}

func (r *runProc) stop(t *testing.T) {
	t.Helper()
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		t.Fatal("drawbridge run did not stop on SIGTERM")
	}
	if r.err != nil {
		b, _ := os.ReadFile(r.out)
		t.Fatalf("drawbridge run: %v\n%s", r.err, b)
	}
}

func journalTypes(t *testing.T, dir string) []journal.Record {
	t.Helper()
	s, err := store.Open(dir, store.Options{JournalOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var recs []journal.Record
	if err := s.Journal().Scan(func(r journal.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return recs
}

func seqOf(recs []journal.Record, typ string) uint64 {
	for _, r := range recs {
		if r.Type == typ {
			return r.Seq
		}
	}
	return 0
}

// TestRunConsoleOnPty runs drawbridge run --console on a pseudo-terminal
// (which reports no size, like a serial line) in a network namespace: the
// status screen renders at 80x24 with the next window, the log stays off
// the terminal, q does not end the console, verify and back up now from
// the console interleave their records with the daemon's window, and the
// store verifies clean afterwards. A second start journals
// daemon-restarted.
func TestRunConsoleOnPty(t *testing.T) {
	if testing.Short() {
		t.Skip("builds drawbridge and runs it in a network namespace; not with -short")
	}
	p := linktest.NewPair(t)
	bin := buildDrawbridge(t)
	work := t.TempDir()
	storeDir := twoSnapshots(t, work)
	later := time.Now().Add(12 * time.Hour).Format("15:04")
	cfg := filepath.Join(work, "drawbridge.toml")
	// The source is the source namespace's address, where nothing listens:
	// the pull fails at once.
	conf := fmt.Sprintf("store = %q\n\n[network]\ninterface = %q\naddress = %q\n\n[[window]]\ndays = \"daily\"\nstart = %q\nduration = \"2m\"\n\n"+
		"[[source]]\nname = \"db1\"\nkind = \"exec\"\nhost = %q\nport = 22\nuser = \"backup\"\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\ncommand = \"dump\"\n",
		storeDir, p.VaultIf, linktest.VaultAddr, later, linktest.SourceAddr.Addr())
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	pty := openPty(t)
	runDir := filepath.Join(work, "run")
	hb := filepath.Join(runDir, "heartbeat")
	args := []string{"--config", cfg, "--netns", p.VaultNS, "--console", pty.slave, "--console", "/dev/no-such-tty", "--heartbeat", hb}

	// PID 1 looks for --console in the help.
	if r := drawbridge(t, bin, "run", "--help"); !strings.Contains(r.stdout, "--console") {
		t.Fatalf("run --help lacks --console:\n%s", r.stdout)
	}

	d := startRun(t, bin, args...)
	start := time.Now()
	pty.waitFor(t, 15*time.Second, "Drawbridge console", "Windows", "next window:", "Sources", "home", "db1")
	t.Logf("status screen on the pty %s after start", time.Since(start).Round(time.Millisecond))
	if s := pty.text(); strings.Contains(s, "level=") {
		t.Fatalf("the daemon's log reached the console:\n%s", s)
	}
	// 80x24: the key hints sit on row 24.
	if !strings.Contains(pty.raw(), "\x1b[24;1H") {
		t.Errorf("no drawing on row 24 of an 80x24 screen:\n%q", pty.raw())
	}
	if fi, err := os.Stat(hb); err != nil || time.Since(fi.ModTime()) > 10*time.Second {
		t.Fatalf("heartbeat: %v", err)
	}

	// q on the status screen keeps the console.
	pty.key(t, "q")
	pty.waitFor(t, 5*time.Second, "this console stays on")

	// Verify from the console, then back up now: the daemon opens a window.
	pty.mark()
	pty.key(t, "v")
	pty.waitFor(t, 20*time.Second, "no problems")
	pty.key(t, "x")
	pty.key(t, "n")
	pty.waitFor(t, 5*time.Second, "Back up now")
	pty.key(t, "y")
	deadline := time.Now().Add(60 * time.Second)
	var recs []journal.Record
	for {
		recs = journalTypes(t, storeDir)
		if seqOf(recs, "window-close") != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no window-close after back up now: %v", recs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	v, now, open, failed := seqOf(recs, "console-verify"), seqOf(recs, "console-backup-now"), seqOf(recs, "window-open"), seqOf(recs, "pull-failed")
	if v == 0 || now == 0 || open == 0 || failed == 0 || !(seqOf(recs, "link-down") < v && v < now && now < open && open < failed) {
		t.Fatalf("records out of order: verify %d, back up now %d, window-open %d, pull-failed %d", v, now, open, failed)
	}

	log, err := os.ReadFile(filepath.Join(runDir, "daemon.log"))
	if err != nil || !strings.Contains(string(log), "console stopped or unavailable") || !strings.Contains(string(log), "/dev/no-such-tty") {
		t.Fatalf("daemon.log (%v) does not say the missing console is unavailable:\n%s", err, log)
	}
	d.stop(t)
	if r := drawbridge(t, bin, "verify", "--store", storeDir); r.code != 0 || !strings.Contains(r.stdout, ": 0 problems") {
		t.Fatalf("verify after the daemon: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The heartbeat file is left: a second daemon of this "boot" says so.
	d = startRun(t, bin, args...)
	deadline = time.Now().Add(20 * time.Second)
	for seqOf(journalTypes(t, storeDir), "daemon-restarted") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no daemon-restarted record")
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.stop(t)
}

func TestDaemonLogFile(t *testing.T) {
	for _, c := range []struct {
		flag, heartbeat string
		consoles        bool
		want            string
	}{
		{"", "", false, ""},
		{"", "/run/drawbridge/heartbeat", false, ""},
		{"/var/log/d.log", "", false, "/var/log/d.log"},
		{"", "/run/x/heartbeat", true, "/run/x/daemon.log"},
		{"", "", true, "/run/drawbridge/daemon.log"},
	} {
		if got := daemonLogPath(c.flag, c.heartbeat, c.consoles); got != c.want {
			t.Errorf("daemonLogPath(%q, %q, %v) = %q, want %q", c.flag, c.heartbeat, c.consoles, got, c.want)
		}
	}
	// The log starts over at its cap, the previous one kept as .1.
	path := filepath.Join(t.TempDir(), "run", "daemon.log")
	l, err := openCappedLog(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	line := []byte(strings.Repeat("x", 39) + "\n")
	for range 5 {
		if _, err := l.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := os.ReadFile(path)
	prev, _ := os.ReadFile(path + ".1")
	if len(cur) != 40 || len(prev) != 80 { // rotated at the third and fifth line
		t.Fatalf("five lines of 40 bytes with a cap of 100: %d bytes, previous %d", len(cur), len(prev))
	}
}
