// Package storetest makes stores for tests: initialised with a key
// derivation cheap enough to run hundreds of times, holding snapshots of
// the trees a test gives, and closed and made removable again (the store
// seals its files immutable where it can) when the test ends.
//
//	s := storetest.New(t, filepath.Join(t.TempDir(), "store"), "pass", store.InitOptions{})
//	sn := storetest.Backup(t, s, "home", src)
//	r := storetest.Unlock(t, s, "pass")
//	root := storetest.Root(t, sn)
package storetest

import (
	"context"
	"encoding/hex"
	"testing"

	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

// KDF is the passphrase key derivation of test stores: the cheapest
// argon2id there is. Nothing a test stores is secret.
var KDF = seal.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// New initialises a store in dir with passphrase pass; o.KDF, when zero,
// is KDF. When the test ends, the store is closed and its files made
// removable.
func New(t testing.TB, dir, pass string, o store.InitOptions) *store.Store {
	t.Helper()
	if o.KDF == (seal.KDFParams{}) {
		o.KDF = KDF
	}
	s, err := store.Init(dir, []byte(pass), o)
	if err != nil {
		t.Fatalf("init a test store: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		if o.FS == nil {
			fixture.Unseal(dir)
		}
	})
	return s
}

// Backup backs paths up into s as source.
func Backup(t testing.TB, s *store.Store, source string, paths ...string) *store.Snapshot {
	t.Helper()
	sn, err := s.Backup(context.Background(), source, paths, store.BackupOptions{})
	if err != nil {
		t.Fatalf("back up %v: %v", paths, err)
	}
	return sn
}

// Unlock unlocks s for reading with pass; the reader is closed when the
// test ends.
func Unlock(t testing.TB, s *store.Store, pass string) *store.Reader {
	t.Helper()
	r, err := s.Unlock([]byte(pass))
	if err != nil {
		t.Fatalf("unlock the test store: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// Root is the id of a snapshot's root tree.
func Root(t testing.TB, sn *store.Snapshot) tree.ID {
	t.Helper()
	var id tree.ID
	b, err := hex.DecodeString(sn.Root)
	if err != nil || len(b) != len(id) {
		t.Fatalf("snapshot %s: root %q is not a tree id", sn.ID, sn.Root)
	}
	copy(id[:], b)
	return id
}
