package pull

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"drawbridge/vault/config"
	"drawbridge/vault/internal/sshtest"
	"drawbridge/vault/journal"
	"drawbridge/vault/restore"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
)

var testPass = []byte("test passphrase")

func newStore(t testing.TB) *store.Store {
	t.Helper()
	s, _ := newStoreAt(t, 4<<20)
	return s
}

// keyLine is the vault's authorized_keys line with options.
func keyLine(s *store.Store, options string) string {
	return options + " " + s.Keys().SSHAuthorizedKey()
}

// sourceFor describes the test host h as a configured source.
func sourceFor(t testing.TB, h *sshtest.Host, name, kind string) config.Source {
	t.Helper()
	host, port, err := net.SplitHostPort(h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return config.Source{Name: name, Kind: kind, Host: host, Port: p, User: h.User,
		HostKey: h.HostKeyLine, HostKeyParsed: h.HostKey, Timeout: config.DefaultTimeout}
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func pullOne(t testing.TB, s *store.Store, src config.Source) Result {
	t.Helper()
	res := Run(context.Background(), s, &config.Config{Path: "test.toml", Sources: []config.Source{src}}, "", Options{Log: testLog(t)})
	if len(res) != 1 || res[0].Source != src.Name {
		t.Fatalf("Run returned %+v", res)
	}
	return res[0]
}

func records(t testing.TB, s *store.Store, typ string) []journal.Record {
	t.Helper()
	var out []journal.Record
	if err := s.Journal().Scan(func(r journal.Record) error {
		if r.Type == typ {
			out = append(out, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func snapshots(t testing.TB, s *store.Store) []store.Snapshot {
	t.Helper()
	all, err := s.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// restoreSnap restores path of the snapshot into a new directory.
func restoreSnap(t testing.TB, s *store.Store, sn *store.Snapshot, path string) string {
	t.Helper()
	r, err := s.Unlock(testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	target := filepath.Join(t.TempDir(), "restored")
	rep, err := restore.Restore(context.Background(), r, storetest.Root(t, sn), path, target, restore.Options{Owners: os.Geteuid() == 0})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Damaged) > 0 {
		t.Fatalf("restore damaged: %v", rep.Damaged)
	}
	return target
}

func verifyClean(t testing.TB, s *store.Store) {
	t.Helper()
	r, err := s.Unlock(testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep, err := s.Verify(context.Background(), r, nil)
	if err != nil || rep.Damaged() {
		t.Fatalf("deep verify: %v %+v", err, rep)
	}
}

func decode(t testing.TB, r journal.Record) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// since measures how long fn takes.
func since(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}
