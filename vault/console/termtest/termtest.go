// Package termtest drives the console in a real terminal for tests: a tmux
// server of the test's own (its socket in the test's temporary directory)
// runs a command in one pane of a fixed size; the test types with
// send-keys and reads the screen with capture-pane. The hosted-mode tests
// (vault/cli) run `drawbridge console` in it, the appliance's test
// (images) QEMU with the serial console on the pane.
//
//	tt := termtest.Start(t, "console", 120, 40, bin+" console --store "+dir)
//	tt.WaitFor(10*time.Second, "Drawbridge console", "home")
//	tt.Keys("Enter")
//	tt.Text("restore passphrase")
package termtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/fixture"
)

// Term is one tmux pane running a command.
type Term struct {
	t       testing.TB
	sock    string
	session string
	// Poll is how often WaitFor reads the screen; Settle how long Pick
	// and BackTo leave the program to redraw after a key. Start sets
	// 20ms and 50ms; a slow program (a console on an emulated serial
	// line) wants more.
	Poll, Settle time.Duration
}

// Need fails the test when tmux is missing under CI=true, and skips it
// elsewhere.
func Need(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		fixture.Need(t, "tmux is needed to drive the console: install it (apt-get install tmux)")
	}
}

// Start runs command (through the shell) in a new tmux session of the
// given size and name, without a status line, in the test's own tmux
// server; the server is killed when the test ends, after the last screen
// is logged if the test failed.
func Start(t testing.TB, session string, width, height int, command string) *Term {
	t.Helper()
	Need(t)
	tt := &Term{t: t, sock: filepath.Join(t.TempDir(), "tmux.sock"), session: session,
		Poll: 20 * time.Millisecond, Settle: 50 * time.Millisecond}
	tt.Run("new-session", "-d", "-s", session, "-x", strconv.Itoa(width), "-y", strconv.Itoa(height), command)
	tt.Run("set-option", "-t", session, "status", "off")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last screen:\n%s", tt.ScreenQuiet())
		}
		exec.Command("tmux", "-S", tt.sock, "kill-server").Run()
	})
	return tt
}

// Run runs a tmux command on the test's server and returns its output.
func (tt *Term) Run(args ...string) string {
	tt.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", tt.sock}, args...)...).CombinedOutput()
	if err != nil {
		tt.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Keys sends tmux key names (Enter, Escape, PageDown, …).
func (tt *Term) Keys(k ...string) {
	tt.t.Helper()
	tt.Run(append([]string{"send-keys", "-t", tt.session}, k...)...)
}

// Text types s literally.
func (tt *Term) Text(s string) {
	tt.t.Helper()
	tt.Run("send-keys", "-t", tt.session, "-l", s)
}

// Screen is what the pane shows.
func (tt *Term) Screen() string {
	tt.t.Helper()
	return tt.Run("capture-pane", "-p", "-t", tt.session)
}

// ScreenQuiet is Screen, or "" once the session is gone, without failing.
func (tt *Term) ScreenQuiet() string {
	out, _ := exec.Command("tmux", "-S", tt.sock, "capture-pane", "-p", "-t", tt.session).CombinedOutput()
	return string(out)
}

// Alive reports whether the command still runs.
func (tt *Term) Alive() bool {
	return exec.Command("tmux", "-S", tt.sock, "has-session", "-t", tt.session).Run() == nil
}

// WaitFor waits until the screen shows every one of want, and returns how
// long that took; after timeout it fails the test with the screen.
func (tt *Term) WaitFor(timeout time.Duration, want ...string) time.Duration {
	tt.t.Helper()
	start := time.Now()
	for {
		s := tt.Screen()
		missing := ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			tt.t.Fatalf("after %s the console does not show %q:\n%s", timeout, missing, s)
		}
		time.Sleep(tt.Poll)
	}
}

// Pick moves a list's selection down until the selected row (the one
// that reads "| > ") shows want.
func (tt *Term) Pick(want string) {
	tt.t.Helper()
	for range 40 {
		for _, l := range strings.Split(tt.Screen(), "\n") {
			if i := strings.Index(l, "| > "); i >= 0 && strings.Contains(l[i:], want) {
				return
			}
		}
		tt.Keys("Down")
		time.Sleep(tt.Settle)
	}
	tt.t.Fatalf("no row with %q to pick:\n%s", want, tt.Screen())
}

// BackTo goes back, Escape by Escape, until the screen shows s.
func (tt *Term) BackTo(s string) {
	tt.t.Helper()
	for range 10 {
		if strings.Contains(tt.Screen(), s) {
			return
		}
		tt.Keys("Escape")
		time.Sleep(tt.Settle)
	}
	tt.WaitFor(10*time.Second, s)
}

// Unlock goes from the console's status screen (its first source
// selected) to that source's snapshots and answers the restore
// passphrase: wrong first, which the console must refuse without showing
// it, then right. step bounds each screen's coming, slow each answer
// (the passphrase's key derivation).
func (tt *Term) Unlock(source, wrong, right string, step, slow time.Duration) {
	tt.t.Helper()
	tt.Keys("Enter")
	tt.WaitFor(step, "Sources")
	tt.Keys("Enter")
	tt.WaitFor(step, "Snapshots of "+source)
	tt.Keys("Enter")
	tt.WaitFor(step, "Restore passphrase")
	tt.Text(wrong)
	tt.Keys("Enter")
	tt.WaitFor(slow, "wrong restore passphrase: refused")
	if strings.Contains(tt.Screen(), wrong) {
		tt.t.Fatalf("the passphrase is shown on the screen:\n%s", tt.Screen())
	}
	tt.Text(right)
	tt.Keys("Enter")
	tt.WaitFor(slow, "unlocked")
}

// PTY opens a pseudo-terminal pair for a test that talks to a terminal
// without tmux: it returns the controlling side, closed when the test
// ends, and the path of the terminal side (/dev/pts/N). Nothing drains
// the controlling side: a test that does not read it must, or writes to
// the terminal block once its buffer is full.
func PTY(t testing.TB) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		fixture.Need(t, "no pseudo-terminals here (mount devpts on /dev/pts): "+err.Error())
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	return m, "/dev/pts/" + strconv.Itoa(n)
}
