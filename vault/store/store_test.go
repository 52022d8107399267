package store

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/seal"
)

var (
	testPass = []byte("test passphrase")
	testKDF  = seal.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
)

func newStore(t testing.TB) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Init(dir, testPass, InitOptions{KDF: testKDF, PackTarget: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); fixture.Unseal(dir) })
	return s, dir
}

func mustBackup(t testing.TB, s *Store, source string, paths ...string) *Snapshot {
	t.Helper()
	sn, err := s.Backup(context.Background(), source, paths, BackupOptions{Warn: func(p string, err error) { t.Errorf("warn %s: %v", p, err) }})
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// A closed store holds nothing open in its directory (which may be on a
// drive to unmount: a sealed export read elsewhere).
func TestCloseReleasesTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Init(dir, testPass, InitOptions{KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fixture.Unseal(dir) })
	if open := fixture.OpenUnder(dir); len(open) == 0 {
		t.Error("an open store holds nothing open: the check sees nothing")
	}
	s.Close()
	for _, o := range []Options{{}, {JournalOnly: true}} {
		s, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if open := fixture.OpenUnder(dir); len(open) > 0 {
			t.Errorf("closed (%+v), still open: %v", o, open)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "none"), Options{}); err == nil {
		t.Fatal("opened a missing store")
	}
}

func TestBackupVerifyAndDedup(t *testing.T) {
	s, dir := newStore(t)
	src := filepath.Join(t.TempDir(), "src")
	fixture.Nasty(src)
	a := mustBackup(t, s, "host1", src)
	if a.Files == 0 || a.Bytes == 0 || a.NewBytes == 0 || a.Status != "ok" {
		t.Fatalf("first snapshot: %+v", a)
	}
	b := mustBackup(t, s, "host1", src)
	if float64(b.StoredBytes) >= 0.01*float64(a.StoredBytes) {
		t.Fatalf("second backup of the same tree stored %d bytes, the first %d", b.StoredBytes, a.StoredBytes)
	}
	snaps, err := s.Snapshots()
	if err != nil || len(snaps) != 2 || snaps[1].ID != b.ID {
		t.Fatalf("snapshots: %v %v", snaps, err)
	}
	rep, err := s.Verify(context.Background(), nil, nil)
	if err != nil || rep.Damaged() {
		t.Fatalf("verify: %v %+v", err, rep.Problems)
	}
	// No plaintext at rest: the marker is in no file of the store.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if data, _ := os.ReadFile(p); bytes.Contains(data, []byte(fixture.Marker)) {
				t.Errorf("plaintext marker found in %s", p)
			}
		}
		return nil
	})
	r, err := s.Unlock(testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep, err = s.Verify(context.Background(), r, nil)
	if err != nil || rep.Damaged() || rep.DeepBlobs == 0 {
		t.Fatalf("deep verify: %v %+v", err, rep)
	}
	_ = time.Now
}

func TestJournalOnlyWhileHeld(t *testing.T) {
	s, dir := newStore(t)
	src := filepath.Join(t.TempDir(), "src")
	fixture.Random(src, 3)
	sn := mustBackup(t, s, "held", src)
	if _, err := Open(dir, Options{}); err != ErrBusy {
		t.Fatalf("second writer: got %v, want ErrBusy", err)
	}
	r, err := Open(dir, Options{JournalOnly: true})
	if err != nil {
		t.Fatalf("journal-only open while the store is held: %v", err)
	}
	defer r.Close()
	snaps, err := r.Snapshots()
	if err != nil || len(snaps) != 1 || snaps[0].ID != sn.ID {
		t.Fatalf("snapshots: %v %v", snaps, err)
	}
}
