package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
)

// tmuxTerm is a terminal the console runs in, driven with send-keys and read
// with capture-pane.
type tmuxTerm struct {
	t    *testing.T
	sock string
}

func needTmux(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tmux is needed to drive the console: install it (apt-get install tmux)")
		}
		t.Skip("tmux not found: install it (apt-get install tmux) to test the console")
	}
	return p
}

func startTmux(t *testing.T, command string) *tmuxTerm {
	t.Helper()
	needTmux(t)
	tt := &tmuxTerm{t: t, sock: filepath.Join(t.TempDir(), "tmux.sock")}
	tt.run("new-session", "-d", "-s", "console", "-x", "120", "-y", "40", command)
	t.Cleanup(func() { exec.Command("tmux", "-S", tt.sock, "kill-server").Run() })
	return tt
}

func (tt *tmuxTerm) run(args ...string) string {
	tt.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", tt.sock}, args...)...).CombinedOutput()
	if err != nil {
		tt.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// keys sends tmux key names (Enter, Escape, PageDown, …).
func (tt *tmuxTerm) keys(k ...string) {
	tt.t.Helper()
	tt.run(append([]string{"send-keys", "-t", "console"}, k...)...)
}

// text types literally.
func (tt *tmuxTerm) text(s string) {
	tt.t.Helper()
	tt.run("send-keys", "-t", "console", "-l", s)
}

func (tt *tmuxTerm) screen() string {
	tt.t.Helper()
	return tt.run("capture-pane", "-p", "-t", "console")
}

// waitFor waits until the screen shows every one of want, and returns how
// long that took.
func (tt *tmuxTerm) waitFor(timeout time.Duration, want ...string) time.Duration {
	tt.t.Helper()
	start := time.Now()
	for {
		s := tt.screen()
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
		time.Sleep(20 * time.Millisecond)
	}
}

func (tt *tmuxTerm) alive() bool {
	return exec.Command("tmux", "-S", tt.sock, "has-session", "-t", "console").Run() == nil
}

// TestConsoleInTmux drives drawbridge console in a real terminal: the status
// screen, a refused and an accepted passphrase, a file restored to a
// directory standing in for the drive, a directory of 10,000 entries, q.
func TestConsoleInTmux(t *testing.T) {
	needTmux(t)
	bin := buildDrawbridge(t)
	work := t.TempDir()
	src := filepath.Join(work, "src")
	big := filepath.Join(src, "big")
	if err := os.MkdirAll(big, 0o755); err != nil {
		t.Fatal(err)
	}
	const bigN = 10_000
	for i := range bigN {
		if err := os.WriteFile(filepath.Join(big, fmt.Sprintf("f%05d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hello := []byte("hello from the vault\n")
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), hello, 0o640); err != nil {
		t.Fatal(err)
	}
	storeDir, sn := consoleStore(t, work, src)

	rc := filepath.Join(work, "rc")
	tt := startTmux(t, fmt.Sprintf("%s console --store %s 2>%s; echo $? >%s", bin, storeDir, filepath.Join(work, "stderr"), rc))
	tt.waitFor(10*time.Second, "no daemon status", "home", sn.Time.UTC().Format("2006-01-02 15:04Z"))

	tt.keys("Enter") // sources
	tt.waitFor(5*time.Second, "Sources")
	tt.keys("Enter") // snapshots of home
	tt.waitFor(5*time.Second, "Snapshots of home")
	tt.keys("Enter") // open: asks for the passphrase
	tt.waitFor(5*time.Second, "Restore passphrase")
	tt.text("wrong pass")
	tt.keys("Enter")
	tt.waitFor(10*time.Second, "wrong restore passphrase: refused")
	if strings.Contains(tt.screen(), "wrong pass") {
		t.Fatal("the passphrase is echoed")
	}
	tt.text("right pass")
	tt.keys("Enter")
	tt.waitFor(10*time.Second, "unlocked")

	// Down the single-entry directories of the work directory's path.
	comps := strings.Split(strings.TrimPrefix(src, "/"), "/")
	for i := range comps {
		tt.waitFor(5*time.Second, comps[i]+"/")
		tt.keys("Enter")
		tt.waitFor(5*time.Second, "  /"+strings.Join(comps[:i+1], "/")+" ")
	}
	tt.waitFor(5*time.Second, "hello.txt", "big/", "1/2")

	// Restore hello.txt to a directory standing in for the drive.
	drive := filepath.Join(work, "drive")
	tt.keys("Down")
	tt.waitFor(5*time.Second, "2/2")
	tt.keys("r")
	tt.waitFor(5*time.Second, "Restore "+src+"/hello.txt")
	tt.text(drive)
	tt.keys("Enter")
	tt.waitFor(10*time.Second, "restored to "+drive+": 1 file", "100%")
	got, err := os.ReadFile(filepath.Join(drive, "hello.txt"))
	if err != nil || string(got) != string(hello) {
		t.Fatalf("restored file: %q, %v", got, err)
	}
	tt.keys("Enter") // closes the result
	tt.waitFor(5*time.Second, "Enter open   r restore")

	// The directory of 10,000 entries shows its first rows at once.
	tt.keys("Up")
	tt.waitFor(5*time.Second, "1/2")
	tt.keys("Enter")
	took := tt.waitFor(10*time.Second, fmt.Sprintf("%d entries", bigN), "f00000", fmt.Sprintf("1/%d", bigN))
	t.Logf("a directory of %d entries showed in %s", bigN, took)
	if took > 2*time.Second {
		t.Errorf("a directory of %d entries took %s to show", bigN, took)
	}
	rows := 40 - 6
	tt.keys("PageDown")
	tt.waitFor(5*time.Second, fmt.Sprintf("%d/%d", rows+1, bigN), fmt.Sprintf("f%05d", rows))
	tt.keys("End")
	tt.waitFor(5*time.Second, fmt.Sprintf("%d/%d", bigN, bigN), fmt.Sprintf("f%05d", bigN-1))

	quitConsole(t, tt, rc, work)
	// Every console action is in the journal.
	journalHas(t, bin, storeDir, "console-unlock-failed", "console-unlock", "console-browse", "console-restore")
}

// quitConsole presses q until the console walks back to the status screen
// and leaves, and checks that it exited with status 0 (written to rc; its
// standard error is work/stderr).
func quitConsole(t *testing.T, tt *tmuxTerm, rc, work string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for tt.alive() && time.Now().Before(deadline) {
		if strings.Contains(tt.screen(), "q quit") {
			tt.keys("q")
			time.Sleep(200 * time.Millisecond)
			continue
		}
		tt.keys("q")
		time.Sleep(50 * time.Millisecond)
	}
	if tt.alive() {
		t.Fatalf("the console is still running:\n%s", tt.screen())
	}
	if b, _ := os.ReadFile(rc); strings.TrimSpace(string(b)) != "0" {
		e, _ := os.ReadFile(filepath.Join(work, "stderr"))
		t.Fatalf("drawbridge console exited %q: %s", b, e)
	}
}

// journalHas checks that the store's journal holds a record of each type.
func journalHas(t *testing.T, bin, storeDir string, types ...string) {
	t.Helper()
	r := drawbridge(t, bin, "journal", "--store", storeDir)
	for _, typ := range types {
		if !strings.Contains(r.stdout, typ+" ") {
			t.Errorf("journal lacks %s:\n%s", typ, r.stdout)
		}
	}
}

// twoSnapshots makes a store with two snapshots of source home: between
// them a file grew and one was added. It returns the store directory.
func twoSnapshots(t *testing.T, work string) string {
	t.Helper()
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("first\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	storeDir, _ := consoleStore(t, work, src)
	if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("first\nsecond line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "added.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(storeDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Backup(context.Background(), "home", []string{src}, store.BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	return storeDir
}

// TestConsoleScreensInTmux drives the journal viewer, verify, deep verify,
// back up now (refused: no daemon) and a diff of two snapshots in a real
// terminal.
func TestConsoleScreensInTmux(t *testing.T) {
	needTmux(t)
	bin := buildDrawbridge(t)
	work := t.TempDir()
	storeDir := twoSnapshots(t, work)
	src := filepath.Join(work, "src")

	rc := filepath.Join(work, "rc")
	tt := startTmux(t, fmt.Sprintf("%s console --store %s 2>%s; echo $? >%s", bin, storeDir, filepath.Join(work, "stderr"), rc))
	tt.waitFor(10*time.Second, "no daemon status", "home")

	// The journal: every record, the newest selected.
	tt.keys("j")
	tt.waitFor(10*time.Second, "Journal", "3 records", "3/3", "snapshot")
	tt.keys("Home")
	tt.waitFor(5*time.Second, "1/3")
	tt.keys("Enter")
	tt.waitFor(5*time.Second, "Journal record 1", "init")
	tt.keys("x", "Escape")
	tt.waitFor(5*time.Second, "b browse  j journal")

	// Verify, then deep verify behind the passphrase.
	tt.keys("v")
	tt.waitFor(10*time.Second, "Verify", "no problems")
	tt.keys("x")
	tt.keys("V")
	tt.waitFor(5*time.Second, "Restore passphrase")
	tt.text("right pass")
	tt.keys("Enter")
	tt.waitFor(20*time.Second, "Deep verify", "blobs decrypted, 3 files checked", "no problems")
	tt.keys("x")
	tt.waitFor(5*time.Second, "last verify:", "no problems")

	// Back up now needs the daemon.
	tt.keys("n")
	tt.waitFor(5*time.Second, "Back up now")
	tt.keys("y")
	tt.waitFor(5*time.Second, "no daemon runs this store")

	// A diff of the two snapshots: the newer one is selected first.
	tt.keys("b")
	tt.waitFor(5*time.Second, "Sources")
	tt.keys("Enter")
	tt.waitFor(5*time.Second, "Snapshots of home")
	tt.keys("d")
	tt.waitFor(10*time.Second, "Diff of home", "1 added, 0 removed, 1 changed")
	tt.waitFor(5*time.Second, "+", src+"/added.txt", "6 B →      18 B  "+src+"/notes.txt")
	tt.keys("Escape")
	tt.waitFor(5*time.Second, "Snapshots of home")

	quitConsole(t, tt, rc, work)
	journalHas(t, bin, storeDir, "console-verify", "console-unlock", "console-diff")
	if r := drawbridge(t, bin, "verify", "--store", storeDir); r.code != 0 {
		t.Fatalf("verify after the console: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// consoleStore makes a store in work/store, with the passphrase "right
// pass", holding one snapshot of src as source home.
func consoleStore(t *testing.T, work, src string) (string, *store.Snapshot) {
	t.Helper()
	storeDir := filepath.Join(work, "store")
	s, err := store.Init(storeDir, []byte("right pass"), store.InitOptions{KDF: seal.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fixture.Unseal(storeDir) })
	defer s.Close()
	sn, err := s.Backup(context.Background(), "home", []string{src}, store.BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return storeDir, sn
}
