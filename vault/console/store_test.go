package console

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gdamore/tcell/v2"

	"drawbridge/vault/daemon"
	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
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
	s, err := store.Init(dir, []byte("pass"), store.InitOptions{KDF: seal.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fixture.Unseal(dir) })
	defer s.Close()
	sn, err := s.Backup(context.Background(), "home", []string{src}, store.BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
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
	var types []string
	for _, rec := range b.Status(context.Background()).Journal {
		types = append(types, rec.Type)
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
	for _, want := range []string{"read-only", "last window: 2026-01-02 02:00:00Z", "next window: 2026-01-03 02:00:00Z",
		"db1", "last pull failed: connection refused", sn.ID[:12], "console-unlock"} {
		if !strings.Contains(got, want) {
			t.Errorf("screen lacks %q:\n%s", want, got)
		}
	}
}
