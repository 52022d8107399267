package console

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gdamore/tcell/v2"

	"drawbridge/vault/journal"
	"drawbridge/vault/restore"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

// fakeBackend serves trees from memory.
type fakeBackend struct {
	pass     string
	trees    map[tree.ID]*tree.Tree
	snaps    []store.Snapshot
	journal  []string
	readOnly bool
	restored []string

	records  []journal.Record // what ScanJournal reads
	verified []bool           // deep, per Verify
	problems []store.Problem
	daemon   bool // BackUpNow works
	nowAsked int
	power    []bool // reboot, per Power
	admin    string // "" means no admin passphrase
	settings []string
}

type fakeReader struct{ b *fakeBackend }

func (r fakeReader) Tree(_ context.Context, id tree.ID) (*tree.Tree, error) {
	t, ok := r.b.trees[id]
	if !ok {
		return nil, errors.New("no such tree")
	}
	return t, nil
}
func (r fakeReader) List(context.Context, tree.ID) ([]tree.ChunkRef, error) { return nil, nil }
func (r fakeReader) Chunk(context.Context, tree.ID, []byte) ([]byte, error) { return nil, nil }
func (r fakeReader) Close()                                                 {}

func (b *fakeBackend) Status(context.Context) Status {
	return Status{VaultID: "0123456789abcdef", Snapshots: b.snaps, DaemonErr: "absent"}
}
func (b *fakeBackend) Unlock(_ context.Context, p []byte) (Reader, error) {
	if string(p) != b.pass {
		b.journal = append(b.journal, "console-unlock-failed")
		return nil, ErrPassphrase
	}
	b.journal = append(b.journal, "console-unlock")
	return fakeReader{b}, nil
}
func (b *fakeBackend) Restore(_ context.Context, _ Reader, _ tree.ID, sub, target string, progress func(int64)) (*restore.Report, error) {
	b.restored = append(b.restored, sub+" -> "+target)
	progress(5)
	return &restore.Report{Files: 1, Bytes: 5}, nil
}
func (b *fakeBackend) Journal(typ, _ string, _ any) error {
	if b.readOnly {
		return ErrReadOnly
	}
	b.journal = append(b.journal, typ)
	return nil
}
func (b *fakeBackend) ReadOnly() bool { return b.readOnly }

func (b *fakeBackend) ScanJournal(ctx context.Context, last func(uint64), fn func(journal.Record) error) error {
	last(uint64(len(b.records)))
	for _, r := range b.records {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (b *fakeBackend) Verify(_ context.Context, deep Reader, progress func(int64, int64)) (*store.VerifyReport, error) {
	b.verified = append(b.verified, deep != nil)
	progress(50, 100)
	progress(100, 100)
	return &store.VerifyReport{Packs: 3, Blobs: 30, Records: 7, Snapshots: 1, Problems: b.problems}, nil
}

func (b *fakeBackend) BackUpNow(context.Context) (time.Duration, error) {
	if !b.daemon {
		return 0, ErrNoDaemon
	}
	if err := b.Journal(RecordBackupNow, "", nil); err != nil {
		return 0, err
	}
	b.nowAsked++
	return time.Hour, nil
}

func (b *fakeBackend) Power(reboot bool) error {
	typ := RecordPowerOff
	if reboot {
		typ = RecordReboot
	}
	b.journal = append(b.journal, typ)
	b.power = append(b.power, reboot)
	return nil
}

func (b *fakeBackend) HasAdmin() bool { return b.admin != "" }

func (b *fakeBackend) Settings(_ context.Context, p []byte) ([]string, error) {
	if string(p) != b.admin {
		return nil, ErrAdminPassphrase
	}
	return b.settings, nil
}

func (b *fakeBackend) SetAdmin(_ context.Context, old, next []byte) error {
	if string(old) != b.admin {
		return ErrAdminPassphrase
	}
	b.admin = string(next)
	b.journal = append(b.journal, "admin-passphrase-set")
	return nil
}

func id(n byte) tree.ID { return tree.ID{n} }

// newFake is a store with one source, "home", whose snapshot holds
// /etc/hosts and a directory /big of n files.
func newFake(n int) *fakeBackend {
	big := &tree.Tree{}
	for i := range n {
		big.Entries = append(big.Entries, tree.Entry{Name: fmt.Sprintf("f%06d", i), Kind: tree.File, Mode: 0o644, Size: uint64(i)})
	}
	b := &fakeBackend{pass: "right", trees: map[tree.ID]*tree.Tree{
		id(1): {Entries: []tree.Entry{{Name: "big", Kind: tree.Dir, Mode: 0o755, Subtree: id(3)}, {Name: "etc", Kind: tree.Dir, Mode: 0o755, Subtree: id(2)}}},
		id(2): {Entries: []tree.Entry{{Name: "hosts", Kind: tree.File, Mode: 0o644, Size: 5}}},
		id(3): big,
	}}
	root := id(1)
	b.snaps = []store.Snapshot{{ID: strings.Repeat("ab", 32), Source: "home", Time: time.Unix(1e9, 0), Files: 2, Root: fmt.Sprintf("%x", root[:]), Status: "ok"}}
	return b
}

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// drive feeds msg to m and runs every Cmd it starts, depth first, to the end.
func drive(m *Model, msg Msg) {
	for _, c := range m.Update(msg) {
		drive(m, c())
	}
}

func keys(m *Model, ks ...string) {
	for _, k := range ks {
		if len(k) == 1 {
			drive(m, Key{Name: "Rune", Rune: rune(k[0])})
		} else {
			drive(m, Key{Name: k})
		}
	}
}

func typeText(m *Model, s string) {
	for _, r := range s {
		drive(m, Key{Name: "Rune", Rune: r})
	}
}

func started(t *testing.T, b Backend, clk *fakeClock) *Model {
	t.Helper()
	m := New(b, Options{Clock: clk.now})
	drive(m, Resize{Width: 120, Height: 40})
	for _, c := range m.Init() {
		drive(m, c())
	}
	return m
}

func TestNavigateUnlockRestore(t *testing.T) {
	b := newFake(3)
	clk := &fakeClock{time.Unix(2e9, 0)}
	m := started(t, b, clk)
	if m.screen != ScreenStatus || len(m.sources) != 1 {
		t.Fatalf("screen %v, sources %v", m.screen, m.sources)
	}
	keys(m, "Enter", "Enter", "Enter")
	if m.dialog != DialogPassphrase {
		t.Fatalf("dialog %v, want the passphrase", m.dialog)
	}
	typeText(m, "wrong")
	keys(m, "Enter")
	if m.reader != nil || m.dialog != DialogPassphrase || !m.bad || !strings.Contains(m.msg, "wrong restore passphrase") {
		t.Fatalf("wrong passphrase: reader %v dialog %v msg %q", m.reader, m.dialog, m.msg)
	}
	// q inside the dialog is part of a passphrase, not a way out.
	typeText(m, "rightq")
	keys(m, "Backspace", "Enter")
	if m.reader == nil || m.screen != ScreenBrowse || m.cur() == nil {
		t.Fatalf("right passphrase: screen %v msg %q", m.screen, m.msg)
	}
	want := []string{"console-unlock-failed", "console-unlock", "console-browse"}
	if fmt.Sprint(b.journal) != fmt.Sprint(want) {
		t.Errorf("journal %v, want %v", b.journal, want)
	}
	keys(m, "Down", "Enter") // into etc
	if got := m.browsePath(); got != "/etc" {
		t.Fatalf("path %q, want /etc", got)
	}
	keys(m, "r")
	typeText(m, "/mnt/usb")
	keys(m, "Enter")
	if len(b.restored) != 1 || b.restored[0] != "/etc/hosts -> /mnt/usb" {
		t.Fatalf("restored %v", b.restored)
	}
	if m.job == nil || m.job.running || m.job.failed || m.job.done.Load() != 5 {
		t.Fatalf("job %+v", m.job)
	}
	if b.journal[len(b.journal)-1] != "console-restore" {
		t.Errorf("restore not journaled: %v", b.journal)
	}
	keys(m, "x") // closes the result
	keys(m, "Esc", "Esc")
	if m.screen != ScreenSnapshots {
		t.Fatalf("back twice: screen %v", m.screen)
	}
	keys(m, "q", "q")
	if m.screen != ScreenStatus || m.Quit {
		t.Fatalf("back to status: screen %v quit %v", m.screen, m.Quit)
	}
	keys(m, "?")
	if m.dialog != DialogHelp {
		t.Fatal("? shows no help")
	}
	keys(m, "q", "q")
	if !m.Quit {
		t.Fatal("q on the status screen does not quit")
	}
	if m.reader != nil {
		t.Error("the reader outlives the console")
	}
}

func TestIdleTimeoutForgets(t *testing.T) {
	b := newFake(3)
	clk := &fakeClock{time.Unix(2e9, 0)}
	m := started(t, b, clk)
	keys(m, "Enter", "Enter", "Enter")
	typeText(m, "right")
	keys(m, "Enter")
	if m.reader == nil {
		t.Fatal("not unlocked")
	}
	clk.t = clk.t.Add(IdleTimeout - time.Second)
	drive(m, Tick{})
	if m.reader == nil {
		t.Fatal("forgotten before the timeout")
	}
	keys(m, "Down") // a key press restarts the timeout
	clk.t = clk.t.Add(IdleTimeout - time.Second)
	drive(m, Tick{})
	if m.reader == nil {
		t.Fatal("a key press did not restart the timeout")
	}
	clk.t = clk.t.Add(time.Second)
	drive(m, Tick{})
	if m.reader != nil || m.cur() != nil || m.screen != ScreenSnapshots {
		t.Fatalf("not forgotten: reader %v screen %v", m.reader, m.screen)
	}
	keys(m, "Enter")
	if m.dialog != DialogPassphrase {
		t.Fatal("the passphrase is not asked again")
	}
}

func TestLargeDirectoryPaging(t *testing.T) {
	const n = 100_000
	b := newFake(n)
	clk := &fakeClock{time.Unix(2e9, 0)}
	m := started(t, b, clk)
	keys(m, "Enter", "Enter", "Enter")
	typeText(m, "right")
	keys(m, "Enter", "Enter") // into big
	l := m.cur()
	if l == nil || len(l.entries) != n {
		t.Fatal("big not open")
	}
	rows := m.listRows()
	top, vis := m.VisibleRows()
	if top != 0 || len(vis) != rows || !strings.Contains(vis[0], "f000000") {
		t.Fatalf("first page: top %d, %d rows (want %d): %q", top, len(vis), rows, vis[:1])
	}
	keys(m, "PgDn")
	top, vis = m.VisibleRows()
	if l.sel != rows || !strings.Contains(vis[l.sel-top], fmt.Sprintf("f%06d", rows)) {
		t.Fatalf("after PgDn: sel %d top %d", l.sel, top)
	}
	keys(m, "End")
	top, vis = m.VisibleRows()
	if l.sel != n-1 || top != n-rows || len(vis) != rows {
		t.Fatalf("after End: sel %d top %d rows %d", l.sel, top, len(vis))
	}
	keys(m, "PgUp", "Home")
	if top, _ = m.VisibleRows(); l.sel != 0 || top != 0 {
		t.Fatalf("after Home: sel %d top %d", l.sel, top)
	}
	// The view draws only what fits.
	s := tcell.NewSimulationScreen("UTF-8")
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	defer s.Fini()
	s.SetSize(120, 40)
	drive(m, Resize{Width: 120, Height: 40})
	Draw(s, m)
	s.Show()
	if got := screenText(s); !strings.Contains(got, "f000000") || !strings.Contains(got, "100000 entries") {
		t.Fatalf("screen:\n%s", got)
	}
}

func TestReadOnlyRefusesBrowsing(t *testing.T) {
	b := newFake(1)
	b.readOnly = true
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	keys(m, "Enter", "Enter", "Enter")
	if m.dialog != DialogNone || m.screen != ScreenSnapshots || !strings.Contains(m.msg, "read-only") {
		t.Fatalf("read-only: dialog %v screen %v msg %q", m.dialog, m.screen, m.msg)
	}
}

func TestStatusScreen(t *testing.T) {
	m := started(t, newFake(1), &fakeClock{time.Unix(2e9, 0)})
	s := tcell.NewSimulationScreen("UTF-8")
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	defer s.Fini()
	s.SetSize(120, 40)
	Draw(s, m)
	s.Show()
	got := screenText(s)
	for _, want := range []string{"no daemon status", "home", "2001-09-09 01:46Z", "ok"} {
		if !strings.Contains(got, want) {
			t.Errorf("status screen lacks %q:\n%s", want, got)
		}
	}
}

func screenText(s tcell.SimulationScreen) string {
	cells, w, h := s.GetContents()
	var sb strings.Builder
	for y := range h {
		for x := range w {
			c := cells[y*w+x]
			if len(c.Runes) > 0 {
				sb.WriteRune(c.Runes[0])
			} else {
				sb.WriteByte(' ')
			}
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

func TestRestoreWholeSnapshotAndRefresh(t *testing.T) {
	b := newFake(2)
	clk := &fakeClock{time.Unix(2e9, 0)}
	m := started(t, b, clk)
	keys(m, "Enter", "Enter", "Enter")
	typeText(m, "right")
	keys(m, "Enter", "R")
	typeText(m, "/mnt/usb")
	keys(m, "Enter")
	if len(b.restored) != 1 || b.restored[0] != "/ -> /mnt/usb" {
		t.Fatalf("restored %v", b.restored)
	}
	// The status is read again now and then.
	b.snaps = append(b.snaps, store.Snapshot{ID: strings.Repeat("cd", 32), Source: "db1", Time: time.Unix(2e9, 0)})
	clk.t = clk.t.Add(StatusEvery)
	drive(m, Tick{})
	if len(m.sources) != 2 {
		t.Fatalf("sources after refresh: %v", m.sources)
	}
}

func TestTreeBytes(t *testing.T) {
	b := newFake(4) // big holds files of 0, 1, 2 and 3 bytes
	n, err := treeBytes(context.Background(), fakeReader{b}, id(1))
	if err != nil || n != 5+6 {
		t.Fatalf("treeBytes = %d, %v; want 11", n, err)
	}
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	keys(m, "Enter", "Enter", "Enter")
	typeText(m, "right")
	keys(m, "Enter")
	if p, size, dir := m.restoreWhat(); p != "/big" || size != 0 || dir == nil || *dir != id(3) {
		t.Fatalf("restoreWhat = %q %d %v", p, size, dir)
	}
}
