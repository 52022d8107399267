package console

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gdamore/tcell/v2"

	"drawbridge/vault/journal"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

// drawn renders m on a simulated terminal of 120x40 and returns its text.
func drawn(t *testing.T, m *Model) string {
	t.Helper()
	s := tcell.NewSimulationScreen("UTF-8")
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	defer s.Fini()
	s.SetSize(120, 40)
	Draw(s, m)
	s.Show()
	return screenText(s)
}

func wantScreen(t *testing.T, m *Model, want ...string) {
	t.Helper()
	got := drawn(t, m)
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Fatalf("screen lacks %q:\n%s", w, got)
		}
	}
}

func TestJournalViewer(t *testing.T) {
	b := newFake(1)
	for i := range 1000 {
		b.records = append(b.records, journal.Record{Seq: uint64(i + 1), Time: time.Unix(2e9+int64(i), 0), Type: "snapshot",
			Message: fmt.Sprintf("record number %d %s", i+1, strings.Repeat("long ", 30))})
	}
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	keys(m, "j")
	if m.screen != ScreenJournal || m.jv == nil {
		t.Fatalf("j: screen %v", m.screen)
	}
	lines, _, total, done, err := m.jv.snapshot()
	if len(lines) != 1000 || total != 1000 || !done || err != nil {
		t.Fatalf("loaded %d of %d, done %v, %v", len(lines), total, done, err)
	}
	if m.jv.sel != 999 || m.jv.top != 1000-m.listRows() {
		t.Fatalf("opens at the newest: sel %d top %d", m.jv.sel, m.jv.top)
	}
	wantScreen(t, m, "Journal", "1000 records", "1000/1000", "record number 1000")
	keys(m, "Home")
	wantScreen(t, m, "1/1000", "record number 1 ")
	keys(m, "PgDn", "Enter")
	if m.dialog != DialogText || !strings.Contains(strings.Join(m.text, " "), fmt.Sprintf("record number %d", 1+m.listRows())) {
		t.Fatalf("Enter: dialog %v text %q", m.dialog, m.text)
	}
	keys(m, "x", "Esc")
	if m.screen != ScreenStatus || m.jv != nil {
		t.Fatalf("Esc: screen %v", m.screen)
	}
	if len(b.journal) != 0 {
		t.Errorf("reading the journal journaled %v", b.journal)
	}
}

// TestJournalViewerCapped: a journal longer than the viewer keeps shows
// the newest records and says how many older ones it left out.
func TestJournalViewerCapped(t *testing.T) {
	jv := &journalView{}
	n := 2*maxJournalLines + 10
	for i := range n {
		jv.add(journal.Record{Seq: uint64(i + 1)})
	}
	lines, dropped, _, _, _ := jv.snapshot()
	if dropped+len(lines) != n || len(lines) > 2*maxJournalLines || lines[len(lines)-1].Seq != uint64(n) || lines[0].Seq != uint64(dropped+1) {
		t.Fatalf("kept %d, dropped %d of %d", len(lines), dropped, n)
	}
}

func TestVerify(t *testing.T) {
	b := newFake(1)
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	keys(m, "v")
	if m.dialog != DialogVerify || m.verify == nil || m.verify.running || m.verify.rep == nil {
		t.Fatalf("v: dialog %v job %+v", m.dialog, m.verify)
	}
	wantScreen(t, m, "Verify", "3 packs, 30 blobs, 7 journal records, 1 snapshots", "no problems")
	if fmt.Sprint(b.verified) != "[false]" || b.journal[len(b.journal)-1] != RecordVerify {
		t.Fatalf("verified %v, journal %v", b.verified, b.journal)
	}
	keys(m, "x")

	// A deep verify asks for the restore passphrase first.
	b.problems = []store.Problem{{Pack: "3f2a", Message: "bytes 0-10: checksum mismatch"}}
	keys(m, "V")
	if m.dialog != DialogPassphrase {
		t.Fatalf("V: dialog %v, want the passphrase", m.dialog)
	}
	typeText(m, "right")
	keys(m, "Enter")
	if fmt.Sprint(b.verified) != "[false true]" || m.dialog != DialogVerify {
		t.Fatalf("deep: verified %v, dialog %v", b.verified, m.dialog)
	}
	wantScreen(t, m, "Deep verify", "DAMAGE: 1 problems", "pack 3f2a: bytes 0-10: checksum mismatch")
	want := []string{"console-verify", "console-unlock", "console-verify"}
	if fmt.Sprint(b.journal) != fmt.Sprint(want) {
		t.Errorf("journal %v, want %v", b.journal, want)
	}
}

func TestVerifyReadOnly(t *testing.T) {
	b := newFake(1)
	b.readOnly = true
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	keys(m, "v")
	if m.dialog != DialogNone || len(b.verified) != 0 || !strings.Contains(m.msg, "read-only") {
		t.Fatalf("read-only verify: dialog %v msg %q", m.dialog, m.msg)
	}
}

func TestBackUpNow(t *testing.T) {
	b := newFake(1)
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	keys(m, "n")
	wantScreen(t, m, "Back up now", "y  open the window")
	keys(m, "y")
	if !m.bad || !strings.Contains(m.msg, "no daemon runs this store") {
		t.Fatalf("without a daemon: %q", m.msg)
	}
	b.daemon = true
	keys(m, "n", "Esc")
	if b.nowAsked != 0 || m.msg != "cancelled" {
		t.Fatalf("Esc: asked %d, %q", b.nowAsked, m.msg)
	}
	keys(m, "n", "y")
	if b.nowAsked != 1 || m.bad || !strings.Contains(m.msg, "window of 1h0m0s") {
		t.Fatalf("with a daemon: asked %d, %q", b.nowAsked, m.msg)
	}
	if fmt.Sprint(b.journal) != "["+RecordBackupNow+"]" {
		t.Errorf("journal %v, want one %s (the refusal for want of a daemon is not one)", b.journal, RecordBackupNow)
	}
}

func TestPower(t *testing.T) {
	b := newFake(1)
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	keys(m, "p")
	wantScreen(t, m, "Power", "o  power off", "r  reboot")
	keys(m, "o")
	wantScreen(t, m, "Really power off the vault now?")
	keys(m, "n")
	if len(b.power) != 0 {
		t.Fatal("powered off after n")
	}
	keys(m, "p", "r", "y")
	if fmt.Sprint(b.power) != "[true]" || fmt.Sprint(b.journal) != "["+RecordReboot+"]" {
		t.Fatalf("reboot: power %v journal %v", b.power, b.journal)
	}
	keys(m, "p", "o", "y")
	if fmt.Sprint(b.power) != "[true false]" || b.journal[1] != RecordPowerOff {
		t.Fatalf("power off: power %v journal %v", b.power, b.journal)
	}
}

func TestSettings(t *testing.T) {
	b := newFake(1)
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	keys(m, "s")
	if m.dialog != DialogNone || !strings.Contains(m.msg, "admin passphrase") {
		t.Fatalf("no admin passphrase: dialog %v msg %q", m.dialog, m.msg)
	}
	b.admin, b.settings = "admin", []string{"store = \"/data/store\"", "[network]"}
	keys(m, "s")
	wantScreen(t, m, "Admin passphrase")
	typeText(m, "nope")
	keys(m, "Enter")
	if m.screen != ScreenStatus || m.dialog != DialogPassphrase || !strings.Contains(m.msg, "wrong admin passphrase") {
		t.Fatalf("wrong: screen %v dialog %v msg %q", m.screen, m.dialog, m.msg)
	}
	typeText(m, "admin")
	keys(m, "Enter")
	if m.screen != ScreenSettings {
		t.Fatalf("right: screen %v msg %q", m.screen, m.msg)
	}
	wantScreen(t, m, "Settings", "store = \"/data/store\"")
	if fmt.Sprint(b.journal) != "[console-settings]" || m.reader != nil {
		t.Errorf("journal %v, reader %v", b.journal, m.reader)
	}
	keys(m, "Esc")
	if m.screen != ScreenStatus || m.settings != nil {
		t.Fatalf("Esc: screen %v", m.screen)
	}
}

// TestFixedConsole: on the appliance's terminals q and Ctrl-C never end the
// console; Ctrl-C forgets the passphrase and goes home.
func TestFixedConsole(t *testing.T) {
	b := newFake(3)
	m := New(b, Options{Clock: (&fakeClock{time.Unix(2e9, 0)}).now, Fixed: true})
	drive(m, Resize{Width: 120, Height: 40})
	for _, c := range m.Init() {
		drive(m, c())
	}
	keys(m, "q", "q")
	if m.Quit || m.screen != ScreenStatus {
		t.Fatalf("q: quit %v screen %v", m.Quit, m.screen)
	}
	wantScreen(t, m, "p power")
	keys(m, "Enter", "Enter", "Enter")
	typeText(m, "right")
	keys(m, "Enter", "Down", "Enter")
	if m.reader == nil || m.browsePath() != "/etc" {
		t.Fatalf("not browsing: %q", m.msg)
	}
	keys(m, "Ctrl-C")
	if m.Quit || m.reader != nil || m.screen != ScreenStatus {
		t.Fatalf("Ctrl-C: quit %v reader %v screen %v", m.Quit, m.reader, m.screen)
	}
	keys(m, "?")
	wantScreen(t, m, "back to the status screen")
}

// diffFake adds a second snapshot of home: etc/hosts grew, etc/passwd and
// new.txt are new, big/ is gone.
func diffFake() *fakeBackend {
	b := newFake(3)
	b.trees[id(10)] = &tree.Tree{Entries: []tree.Entry{
		{Name: "etc", Kind: tree.Dir, Mode: 0o755, Subtree: id(11)},
		{Name: "new.txt", Kind: tree.File, Mode: 0o644, Size: 7},
	}}
	b.trees[id(11)] = &tree.Tree{Entries: []tree.Entry{
		{Name: "hosts", Kind: tree.File, Mode: 0o644, Size: 9},
		{Name: "passwd", Kind: tree.File, Mode: 0o644, Size: 3},
	}}
	root := id(10)
	b.snaps = append(b.snaps, store.Snapshot{ID: strings.Repeat("cd", 32), Source: "home", Time: time.Unix(1e9+3600, 0),
		Files: 3, Root: fmt.Sprintf("%x", root[:]), Status: "ok"})
	return b
}

func TestDiffScreen(t *testing.T) {
	b := diffFake()
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	keys(m, "Enter", "Enter") // the snapshots of home, newest first
	keys(m, "d")
	if m.dialog != DialogPassphrase {
		t.Fatalf("d: dialog %v, want the passphrase", m.dialog)
	}
	typeText(m, "right")
	keys(m, "Enter")
	if m.screen != ScreenDiff || m.diff == nil || m.diff.running || m.diff.res == nil {
		t.Fatalf("diff: screen %v msg %q", m.screen, m.msg)
	}
	r := m.diff.res
	var got []string
	for _, c := range r.Changes {
		got = append(got, string(c.Op)+c.Path)
	}
	want := []string{"-/big", "~/etc/hosts", "+/etc/passwd", "+/new.txt"}
	if fmt.Sprint(got) != fmt.Sprint(want) || r.Added != 2 || r.Removed != 1 || r.Changed != 1 {
		t.Fatalf("changes %v (%+v), want %v", got, r, want)
	}
	wantScreen(t, m, "Diff of home: abababababab", "2 added, 1 removed, 1 changed", "5 B →       9 B  /etc/hosts", "/big/")
	if b.journal[len(b.journal)-1] != RecordDiff {
		t.Errorf("journal %v", b.journal)
	}
	keys(m, "Esc")
	if m.screen != ScreenSnapshots {
		t.Fatalf("Esc: screen %v", m.screen)
	}
	// With one marked, d compares the marked one: the same pair, now
	// without asking again.
	keys(m, "m", "Down", "d")
	if m.screen != ScreenDiff || m.diff.res.Added != 2 || m.diff.old.ID != b.snaps[0].ID {
		t.Fatalf("marked diff: screen %v %+v", m.screen, m.diff)
	}
}

// countingReader counts the trees read.
type countingReader struct {
	fakeReader
	n int
}

func (r *countingReader) Tree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	r.n++
	return r.fakeReader.Tree(ctx, id)
}

// TestDiffSkipsSameSubtrees: a directory with the same tree id on both
// sides is not read.
func TestDiffSkipsSameSubtrees(t *testing.T) {
	b := newFake(3)
	b.trees[id(20)] = &tree.Tree{Entries: []tree.Entry{
		{Name: "big", Kind: tree.Dir, Mode: 0o755, Subtree: id(3)},
		{Name: "etc", Kind: tree.Dir, Mode: 0o700, Subtree: id(2)},
	}}
	r := &countingReader{fakeReader: fakeReader{b}}
	var dirs atomic.Int64
	res, err := Diff(context.Background(), r, id(1), id(20), &dirs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 0 || r.n != 2 || dirs.Load() != 1 {
		t.Fatalf("changes %+v, %d trees read, %d dirs", res.Changes, r.n, dirs.Load())
	}
	if _, err := Diff(context.Background(), r, id(1), id(99), nil); err == nil {
		t.Fatal("a missing tree is no error")
	}
}

func TestStatusHealthAndVerify(t *testing.T) {
	b := newFake(1)
	b.snaps[0].Status = "partial"
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	wantScreen(t, m, "Alerts", "1 of 1 sources need attention", "partial: some files were unreadable", "last verify: none from a console yet")
	m.status.LastVerify = &journal.Record{Type: RecordVerify, Time: time.Unix(2e9, 0), Data: []byte(`{"problems":2}`)}
	wantScreen(t, m, "last verify: 2033-05-18 03:33:20Z, DAMAGE: 2 problems", "the last verify (2033-05-18 03:33Z) found damage: 2 problems")
	m.status.DiskFree, m.status.DiskSize = 100<<20, 100<<30
	wantScreen(t, m, "disk: 100.0 MiB free of 100.0 GiB", "the store disk is nearly full (100.0 MiB free): windows are skipped")
}

func TestTTY(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for dev, want := range map[string]string{"/dev/tty1": TermVT, "/dev/tty12": TermVT, "/dev/ttyS0": TermSerial, "/dev/ttyAMA0": TermSerial, "/dev/pts/3": TermSerial} {
		if got := TermFor(dev, env(nil)); got != want {
			t.Errorf("TermFor(%s) = %s, want %s", dev, got, want)
		}
	}
	if got := TermFor("/dev/ttyS0", env(map[string]string{EnvSerialTerm: "xterm"})); got != "xterm" {
		t.Errorf("override: %s", got)
	}
	if _, err := tcell.LookupTerminfo(TermSerial); err != nil {
		t.Errorf("%s is not built in: %v", TermSerial, err)
	}
	if _, err := tcell.LookupTerminfo(TermVT); err != nil {
		t.Errorf("%s is not built in: %v", TermVT, err)
	}
	if ws, err := ParseSize("132x43"); err != nil || ws.Width != 132 || ws.Height != 43 {
		t.Errorf("ParseSize: %v %v", ws, err)
	}
	for _, bad := range []string{"", "80", "x24", "0x0", "80x-1", "99999x24"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if _, err := OpenTTY("/dev/nonexistent-tty", env(nil)); err == nil {
		t.Error("a missing device opened")
	}
	if _, err := OpenTTY("/dev/null", env(nil)); err == nil || !strings.Contains(err.Error(), "not a terminal") {
		t.Errorf("/dev/null: %v", err)
	}
}

// TestIdleTimeoutWaitsForDiff: a diff that holds the reader keeps it past
// the idle timeout; the reader goes once the diff is done.
func TestIdleTimeoutWaitsForDiff(t *testing.T) {
	b := diffFake()
	clk := &fakeClock{time.Unix(2e9, 0)}
	m := started(t, b, clk)
	keys(m, "Enter", "Enter", "d")
	typeText(m, "right")
	// Run the unlock but hold the diff back, as if it were still running.
	var held []Cmd
	for _, c := range m.Update(Key{Name: "Enter"}) {
		for _, c2 := range m.Update(c()) {
			held = append(held, c2)
		}
	}
	if m.diff == nil || !m.diff.running {
		t.Fatalf("diff not running: %+v", m.diff)
	}
	clk.t = clk.t.Add(IdleTimeout + time.Second)
	drive(m, Tick{})
	if m.reader == nil {
		t.Fatal("the reader was dropped under a running diff")
	}
	for _, c := range held {
		drive(m, c())
	}
	drive(m, Tick{})
	if m.reader != nil {
		t.Fatal("the reader outlived the diff and the idle timeout")
	}
}
