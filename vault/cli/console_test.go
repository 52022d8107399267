package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"drawbridge/vault/console/termtest"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
)

// TestConsoleInTmux drives drawbridge console in a real terminal: the status
// screen, a refused and an accepted passphrase, a file restored to a
// directory standing in for the drive, a directory of 10,000 entries, q.
func TestConsoleInTmux(t *testing.T) {
	termtest.Need(t)
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
	tt := termtest.Start(t, "console", 120, 40, fmt.Sprintf("%s console --store %s 2>%s; echo $? >%s", bin, storeDir, filepath.Join(work, "stderr"), rc))
	tt.WaitFor(10*time.Second, "no daemon status", "home", sn.Time.UTC().Format("2006-01-02 15:04Z"))

	tt.Unlock("home", "wrong pass", "right pass", 5*time.Second, 10*time.Second)

	// Down the single-entry directories of the work directory's path.
	comps := strings.Split(strings.TrimPrefix(src, "/"), "/")
	for i := range comps {
		tt.WaitFor(5*time.Second, comps[i]+"/")
		tt.Keys("Enter")
		tt.WaitFor(5*time.Second, "  /"+strings.Join(comps[:i+1], "/")+" ")
	}
	tt.WaitFor(5*time.Second, "hello.txt", "big/", "1/2")

	// Restore hello.txt to a directory standing in for the drive.
	drive := filepath.Join(work, "drive")
	tt.Keys("Down")
	tt.WaitFor(5*time.Second, "2/2")
	tt.Keys("r")
	tt.WaitFor(5*time.Second, "Restore "+src+"/hello.txt")
	tt.Text(drive)
	tt.Keys("Enter")
	tt.WaitFor(10*time.Second, "restored to "+drive+": 1 file", "100%")
	got, err := os.ReadFile(filepath.Join(drive, "hello.txt"))
	if err != nil || string(got) != string(hello) {
		t.Fatalf("restored file: %q, %v", got, err)
	}
	tt.Keys("Enter") // closes the result
	tt.WaitFor(5*time.Second, "Enter open   r restore")

	// The directory of 10,000 entries shows its first rows at once.
	tt.Keys("Up")
	tt.WaitFor(5*time.Second, "1/2")
	tt.Keys("Enter")
	took := tt.WaitFor(10*time.Second, fmt.Sprintf("%d entries", bigN), "f00000", fmt.Sprintf("1/%d", bigN))
	t.Logf("a directory of %d entries showed in %s", bigN, took)
	if took > 2*time.Second {
		t.Errorf("a directory of %d entries took %s to show", bigN, took)
	}
	rows := 40 - 6
	tt.Keys("PageDown")
	tt.WaitFor(5*time.Second, fmt.Sprintf("%d/%d", rows+1, bigN), fmt.Sprintf("f%05d", rows))
	tt.Keys("End")
	tt.WaitFor(5*time.Second, fmt.Sprintf("%d/%d", bigN, bigN), fmt.Sprintf("f%05d", bigN-1))

	quitConsole(t, tt, rc, work)
	// Every console action is in the journal.
	journalHas(t, bin, storeDir, "console-unlock-failed", "console-unlock", "console-browse", "console-restore")
}

// quitConsole presses q until the console walks back to the status screen
// and leaves, and checks that it exited with status 0 (written to rc; its
// standard error is work/stderr).
func quitConsole(t *testing.T, tt *termtest.Term, rc, work string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for tt.Alive() && time.Now().Before(deadline) {
		if strings.Contains(tt.Screen(), "q quit") {
			tt.Keys("q")
			time.Sleep(200 * time.Millisecond)
			continue
		}
		tt.Keys("q")
		time.Sleep(50 * time.Millisecond)
	}
	if tt.Alive() {
		t.Fatalf("the console is still running:\n%s", tt.Screen())
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
	storeDir := filepath.Join(work, "store")
	s := storetest.New(t, storeDir, "right pass", store.InitOptions{})
	defer s.Close() // the console opens it
	storetest.Backup(t, s, "home", src)
	if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("first\nsecond line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "added.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	storetest.Backup(t, s, "home", src)
	return storeDir
}

// TestConsoleScreensInTmux drives the journal viewer, verify, deep verify,
// back up now (refused: no daemon) and a diff of two snapshots in a real
// terminal.
func TestConsoleScreensInTmux(t *testing.T) {
	termtest.Need(t)
	bin := buildDrawbridge(t)
	work := t.TempDir()
	storeDir := twoSnapshots(t, work)
	src := filepath.Join(work, "src")

	rc := filepath.Join(work, "rc")
	tt := termtest.Start(t, "console", 120, 40, fmt.Sprintf("%s console --store %s 2>%s; echo $? >%s", bin, storeDir, filepath.Join(work, "stderr"), rc))
	tt.WaitFor(10*time.Second, "no daemon status", "home")

	// The journal: every record, the newest selected.
	tt.Keys("j")
	tt.WaitFor(10*time.Second, "Journal", "3 records", "3/3", "snapshot")
	tt.Keys("Home")
	tt.WaitFor(5*time.Second, "1/3")
	tt.Keys("Enter")
	tt.WaitFor(5*time.Second, "Journal record 1", "init")
	tt.Keys("x", "Escape")
	tt.WaitFor(5*time.Second, "b browse  j journal")

	// Verify, then deep verify behind the passphrase.
	tt.Keys("v")
	tt.WaitFor(10*time.Second, "Verify", "no problems")
	tt.Keys("x")
	tt.Keys("V")
	tt.WaitFor(5*time.Second, "Restore passphrase")
	tt.Text("right pass")
	tt.Keys("Enter")
	tt.WaitFor(20*time.Second, "Deep verify", "blobs decrypted, 3 files checked", "no problems")
	tt.Keys("x")
	tt.WaitFor(5*time.Second, "last verify:", "no problems")

	// Back up now needs the daemon.
	tt.Keys("n")
	tt.WaitFor(5*time.Second, "Back up now")
	tt.Keys("y")
	tt.WaitFor(5*time.Second, "no daemon runs this store")

	// A diff of the two snapshots: the newer one is selected first.
	tt.Keys("b")
	tt.WaitFor(5*time.Second, "Sources")
	tt.Keys("Enter")
	tt.WaitFor(5*time.Second, "Snapshots of home")
	tt.Keys("d")
	tt.WaitFor(10*time.Second, "Diff of home", "1 added, 0 removed, 1 changed")
	tt.WaitFor(5*time.Second, "+", src+"/added.txt", "6 B →      18 B  "+src+"/notes.txt")
	tt.Keys("Escape")
	tt.WaitFor(5*time.Second, "Snapshots of home")

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
	s := storetest.New(t, storeDir, "right pass", store.InitOptions{})
	defer s.Close() // the console opens it
	return storeDir, storetest.Backup(t, s, "home", src)
}
