package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gdamore/tcell/v2"

	"drawbridge/vault/admin"
	"drawbridge/vault/daemon"
	"drawbridge/vault/journal"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
	"drawbridge/vault/vfs"
)

func TestStoreBackend(t *testing.T) {
	work := t.TempDir()
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "store")
	s := storetest.New(t, dir, "pass", store.InitOptions{})
	sn := storetest.Backup(t, s, "home", src)
	b := &StoreBackend{Store: s, Dir: dir, Writable: true}
	st := b.Status(context.Background())
	if len(st.Snapshots) != 1 || st.Snapshots[0].ID != sn.ID || st.Packs == 0 || st.PackBytes == 0 || st.Daemon != nil || len(st.Journal) != 2 {
		t.Fatalf("status: %+v", st)
	}
	if _, err := b.Unlock(context.Background(), []byte("nope")); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	r, err := b.Unlock(context.Background(), []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	root, err := parseRoot(sn.Root)
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(work, "drive")
	var n int64
	rep, err := b.Restore(context.Background(), r, root, src+"/a.txt", target, func(d int64) { n += d })
	if err != nil || rep.Files != 1 || n != 5 {
		t.Fatalf("restore: %+v, %v, progress %d", rep, err, n)
	}
	if got, _ := os.ReadFile(filepath.Join(target, "a.txt")); string(got) != "alpha" {
		t.Fatalf("restored %q", got)
	}
	// The status reads a growing journal again only after a pause that
	// scales with the last read: wait for it to show the new records.
	var types []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		types = types[:0]
		for _, rec := range b.Status(context.Background()).Journal {
			types = append(types, rec.Type)
		}
		if strings.Join(types, " ") == "init snapshot console-unlock-failed console-unlock" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Join(types, " ") != "init snapshot console-unlock-failed console-unlock" {
		t.Errorf("journal: %v", types)
	}

	// While another process holds the store the console is read-only, and
	// shows the daemon's status.
	ws := daemon.Status{
		LastWindow: &daemon.WindowStatus{Start: time.Date(2026, 1, 2, 2, 0, 0, 0, time.UTC), End: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC), Result: "done"},
		NextWindow: &daemon.WindowStatus{Start: time.Date(2026, 1, 3, 2, 0, 0, 0, time.UTC), End: time.Date(2026, 1, 3, 3, 0, 0, 0, time.UTC)},
		Sources:    []daemon.SourceStatus{{Name: "home"}, {Name: "db1", LastError: "connection refused", LastErrorTime: time.Date(2026, 1, 2, 2, 1, 0, 0, time.UTC)}},
	}
	jb, _ := json.Marshal(ws)
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(daemon.StatusFile)), jb, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(dir, store.Options{}); !errors.Is(err, store.ErrBusy) {
		t.Fatalf("second open: %v", err)
	}
	ro, err := store.Open(dir, store.Options{JournalOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	rb := &StoreBackend{Store: ro, Dir: dir}
	if err := rb.Journal("console-restore", "x", nil); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only journal: %v", err)
	}
	if _, err := rb.Unlock(context.Background(), []byte("pass")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only unlock: %v", err)
	}
	if _, err := rb.BackUpNow(context.Background()); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only back up now: %v", err)
	}
	m := New(rb, Options{})
	drive(m, Resize{Width: 120, Height: 40})
	for _, c := range m.Init() {
		drive(m, c())
	}
	scr := tcell.NewSimulationScreen("UTF-8")
	if err := scr.Init(); err != nil {
		t.Fatal(err)
	}
	defer scr.Fini()
	scr.SetSize(120, 40)
	Draw(scr, m)
	scr.Show()
	got := screenText(scr)
	for _, want := range []string{"read-only", "last window: 2026-01-02 02:00Z for 1h0m0s: done", "next window: 2026-01-03 02:00Z for 1h0m0s",
		"db1", "pull failed: connection refused", sn.ID[:12], "console-unlock"} {
		if !strings.Contains(got, want) {
			t.Errorf("screen lacks %q:\n%s", want, got)
		}
	}
}

// fakeDaemon stands in for the daemon the console shares a store with.
type fakeDaemon struct {
	st      daemon.Status
	asked   []time.Duration
	windowN bool // a window is open: WhileIdle refuses
}

func (d *fakeDaemon) Started() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
func (d *fakeDaemon) Status() daemon.Status        { return d.st }
func (d *fakeDaemon) OpenNow(length time.Duration) { d.asked = append(d.asked, length) }
func (d *fakeDaemon) WhileIdle(ctx context.Context, fn func(context.Context) error) error {
	if d.windowN {
		return daemon.ErrWindowOpen
	}
	return fn(ctx)
}

// TestStoreBackendInDaemon: the backend of a console inside the daemon
// reads its status from it, asks it for windows, verifies outside
// windows, and its journal appends interleave with the daemon's (run with
// -race).
func TestStoreBackendInDaemon(t *testing.T) {
	work := t.TempDir()
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "store")
	s := storetest.New(t, dir, "pass", store.InitOptions{})
	storetest.Backup(t, s, "home", src)
	fd := &fakeDaemon{st: daemon.Status{NextWindow: &daemon.WindowStatus{Start: time.Date(2026, 1, 3, 2, 0, 0, 0, time.UTC)}}}
	b := &StoreBackend{Store: s, Dir: dir, Writable: true, Daemon: fd, NowLength: 20 * time.Minute}
	st := b.Status(context.Background())
	if st.Daemon == nil || st.Daemon.NextWindow == nil || st.DaemonErr != "" || st.DiskSize == 0 || st.DiskFree > st.DiskSize {
		t.Fatalf("status: %+v", st)
	}
	if n, err := b.BackUpNow(context.Background()); err != nil || n != 20*time.Minute || len(fd.asked) != 1 {
		t.Fatalf("back up now: %v %v %v", n, err, fd.asked)
	}
	fd.st.Open = &daemon.WindowStatus{End: time.Date(2026, 1, 3, 3, 0, 0, 0, time.UTC)}
	if _, err := b.BackUpNow(context.Background()); err == nil || !strings.Contains(err.Error(), "a backup window is open now") || len(fd.asked) != 1 {
		t.Fatalf("back up now during a window: %v", err)
	}
	fd.st.Open = nil
	if _, err := (&StoreBackend{Store: s, Dir: dir, Writable: true}).BackUpNow(context.Background()); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("back up now without a daemon: %v", err)
	}
	if err := b.Power(false); !errors.Is(err, ErrNoPower) {
		t.Fatalf("power: %v", err)
	}
	if _, err := b.Settings(context.Background(), []byte("x")); !errors.Is(err, ErrNoAdmin) || b.HasAdmin() {
		t.Fatalf("settings: %v", err)
	}
	// The settings behind the admin passphrase.
	b.Admin = admin.ForStore(s, admin.Options{KDF: seal.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
		Sleep: func(context.Context, time.Duration) error { return nil }})
	b.Config = func() ([]string, error) { return []string{"store = \"/data/store\""}, nil }
	if _, err := b.Settings(context.Background(), []byte("x")); !errors.Is(err, ErrNoAdmin) || b.HasAdmin() {
		t.Fatalf("settings before an admin passphrase is set: %v", err)
	}
	if err := b.Admin.Set(context.Background(), nil, []byte("admin pass")); err != nil {
		t.Fatal(err)
	}
	if !b.HasAdmin() {
		t.Fatal("HasAdmin after Set")
	}
	if _, err := b.Settings(context.Background(), []byte("nope")); !errors.Is(err, ErrAdminPassphrase) {
		t.Fatalf("wrong admin passphrase: %v", err)
	}
	if lines, err := b.Settings(context.Background(), []byte("admin pass")); err != nil || len(lines) != 1 {
		t.Fatalf("settings: %q %v", lines, err)
	}
	refused := func() bool {
		tail := b.Status(context.Background()).Journal
		return tail[len(tail)-1].Type == admin.RecordRefused
	}
	for deadline := time.Now().Add(10 * time.Second); !refused(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the refusal is not journaled: %v", b.Status(context.Background()).Journal)
		}
	}
	// A change: refused with a wrong current one, then made and journaled.
	if err := b.SetAdmin(context.Background(), []byte("nope"), []byte("next")); !errors.Is(err, ErrAdminPassphrase) {
		t.Fatalf("change with a wrong current one: %v", err)
	}
	if err := b.SetAdmin(context.Background(), []byte("admin pass"), []byte("next")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Settings(context.Background(), []byte("next")); err != nil {
		t.Fatalf("the new admin passphrase: %v", err)
	}
	changed := func() bool {
		for _, r := range b.Status(context.Background()).Journal {
			if r.Type == admin.RecordSet && strings.Contains(r.Message, "changed") {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); !changed(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the change is not journaled: %v", b.Status(context.Background()).Journal)
		}
	}

	// Verify, and deep verify with the reader; none during a window.
	var done, total int64
	rep, err := b.Verify(context.Background(), nil, func(d, t int64) { done, total = d, t })
	if err != nil || rep.Damaged() || rep.Packs == 0 || done != total || total == 0 {
		t.Fatalf("verify: %+v %v (%d of %d)", rep, err, done, total)
	}
	r, err := b.Unlock(context.Background(), []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep, err = b.Verify(context.Background(), r, nil)
	if err != nil || rep.Damaged() || rep.DeepFiles != 1 {
		t.Fatalf("deep verify: %+v %v", rep, err)
	}
	fd.windowN = true
	if _, err := b.Verify(context.Background(), nil, nil); !errors.Is(err, daemon.ErrWindowOpen) {
		t.Fatalf("verify during a window: %v", err)
	}

	// The daemon's appends and the console's, at once.
	var wg sync.WaitGroup
	const n = 30
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := range n {
			if _, err := s.Journal().Append(s.Keys().Identity, time.Now(), "link-down", fmt.Sprint("daemon ", i), nil); err != nil {
				t.Error(err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			if err := b.Journal("console-test", fmt.Sprint("console ", i), nil); err != nil {
				t.Error(err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 5 {
			b.Status(context.Background())
		}
	}()
	wg.Wait()
	var seqs []uint64
	var last uint64
	if err := b.ScanJournal(context.Background(), func(l uint64) { last = l }, func(r journal.Record) error {
		seqs = append(seqs, r.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seqs) != int(last) || last < 2*n {
		t.Fatalf("scanned %d of %d records", len(seqs), last)
	}
	fd.windowN = false
	rep, err = b.Verify(context.Background(), nil, nil)
	if err != nil || rep.Damaged() {
		t.Fatalf("verify after concurrent appends: %+v %v", rep, err)
	}
}

func TestStoreBackendPower(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := storetest.New(t, dir, "pass", store.InitOptions{})
	var did []string
	b := &StoreBackend{Store: s, Dir: dir, Writable: true}
	if err := b.Power(true); !errors.Is(err, ErrNoPower) {
		t.Fatalf("reboot off the appliance: %v", err)
	}
	b.Reboot = func() error { did = append(did, "reboot"); return nil }
	b.PowerOff = func() error { did = append(did, "poweroff"); return nil }
	if err := b.Power(true); err != nil {
		t.Fatal(err)
	}
	if err := b.Power(false); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, r := range b.Status(context.Background()).Journal {
		types = append(types, r.Type)
	}
	if fmt.Sprint(did) != "[reboot poweroff]" || strings.Join(types, " ") != "init console-reboot console-poweroff" {
		t.Fatalf("did %v, journal %v", did, types)
	}
}

// countingFS counts the journal records opened through it.
type countingFS struct {
	vfs.FS
	mu      sync.Mutex
	records int
}

func (c *countingFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	if strings.HasPrefix(name, "journal/0") {
		c.mu.Lock()
		c.records++
		c.mu.Unlock()
	}
	return c.FS.OpenFile(name, flag, perm)
}

func (c *countingFS) opened() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.records
}

// TestStatusReadsOnlyNewRecords: once the status has read the journal, a
// grown journal costs the records added, not the whole journal again.
func TestStatusReadsOnlyNewRecords(t *testing.T) {
	fsys := &countingFS{FS: vfs.NewMem()}
	s, err := store.Init("mem", []byte("pass"), store.InitOptions{
		Options: store.Options{FS: fsys}, KDF: seal.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := &StoreBackend{Store: s, Dir: t.TempDir(), Writable: true}
	for i := range 300 {
		if err := b.Journal("console-test", fmt.Sprintf("record %d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if st := b.Status(context.Background()); st.JournalErr != "" || st.Journal[len(st.Journal)-1].Message != "record 299" {
		t.Fatalf("first status: %s", st.JournalErr)
	}
	before := fsys.opened()
	for i := range 3 {
		b.Journal("console-test", fmt.Sprintf("more %d", i), nil)
	}
	var st Status
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st = b.Status(context.Background()); st.Journal[len(st.Journal)-1].Message == "more 2" {
			break
		}
	}
	if last := st.Journal[len(st.Journal)-1]; last.Message != "more 2" || st.JournalErr != "" {
		t.Fatalf("the status does not show the new records: %q %s", last.Message, st.JournalErr)
	}
	// Appending reads the record it links to; the status, only the new ones.
	if n := fsys.opened() - before; n > 3*2 {
		t.Errorf("%d journal records opened for 3 new ones", n)
	}
	if len(st.Journal) != maxJournalShown {
		t.Errorf("the status keeps %d records, want %d", len(st.Journal), maxJournalShown)
	}
}
