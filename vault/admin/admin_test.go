package admin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"drawbridge/vault/admin"
	"drawbridge/vault/journal"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
)

type env struct {
	dir   string
	s     *store.Store
	g     *admin.Guard
	slept []time.Duration
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dir: filepath.Join(t.TempDir(), "store")}
	e.s = storetest.New(t, e.dir, "restore", store.InitOptions{})
	e.g = e.guard()
	return e
}

func (e *env) guard() *admin.Guard {
	return admin.ForStore(e.s, admin.Options{KDF: storetest.KDF, Sleep: func(_ context.Context, d time.Duration) error {
		e.slept = append(e.slept, d)
		return nil
	}})
}

func (e *env) records(t *testing.T, typ string) []journal.Record {
	var out []journal.Record
	if err := e.s.Journal().Scan(func(r journal.Record) error {
		if r.Type == typ {
			out = append(out, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSetCheckChange(t *testing.T) {
	e := newEnv(t)
	g, ctx := e.g, context.Background()
	if set, err := g.IsSet(); err != nil || set {
		t.Fatalf("IsSet on a new store: %v %v", set, err)
	}
	if err := g.Check(ctx, []byte("x")); !errors.Is(err, admin.ErrNotSet) {
		t.Fatalf("Check with none set: %v", err)
	}
	if err := g.Set(ctx, nil, nil); err == nil {
		t.Fatal("an empty admin passphrase was set")
	}
	if err := g.Set(ctx, nil, []byte("first admin")); err != nil {
		t.Fatal(err)
	}
	if set, err := g.IsSet(); err != nil || !set {
		t.Fatalf("IsSet after Set: %v %v", set, err)
	}
	if err := g.Check(ctx, []byte("first admin")); err != nil {
		t.Fatalf("right passphrase refused: %v", err)
	}
	if err := g.Set(ctx, nil, []byte("other")); !errors.Is(err, admin.ErrAlreadySet) {
		t.Fatalf("Set without the old one: %v", err)
	}
	if err := g.Set(ctx, []byte("wrong"), []byte("other")); !errors.Is(err, admin.ErrWrong) {
		t.Fatalf("Set with a wrong old one: %v", err)
	}
	if err := g.Set(ctx, []byte("first admin"), []byte("second admin")); err != nil {
		t.Fatal(err)
	}
	if err := g.Check(ctx, []byte("first admin")); !errors.Is(err, admin.ErrWrong) {
		t.Fatalf("old passphrase after a change: %v", err)
	}
	// A new Guard (a restart) reads the same file.
	if err := e.guard().Check(ctx, []byte("second admin")); err != nil {
		t.Fatal(err)
	}
	if n := len(e.records(t, admin.RecordSet)); n != 2 {
		t.Errorf("%d %s records, want 2", n, admin.RecordSet)
	}
	if n := len(e.records(t, admin.RecordRefused)); n != 2 {
		t.Errorf("%d %s records, want 2", n, admin.RecordRefused)
	}
	// The passphrase itself is nowhere in the store.
	filepath.Walk(e.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "second admin") {
				t.Errorf("the admin passphrase is stored in %s", p)
			}
		}
		return nil
	})
}

func TestGrowingDelay(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.g.Set(ctx, nil, []byte("right")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 9; i++ {
		if err := e.g.Check(ctx, []byte("wrong")); !errors.Is(err, admin.ErrWrong) {
			t.Fatal(err)
		}
	}
	// The count survives a restart; the right passphrase waits too, then
	// resets it.
	g2 := e.guard()
	if err := g2.Check(ctx, []byte("right")); err != nil {
		t.Fatal(err)
	}
	if err := g2.Check(ctx, []byte("right")); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{0, 1, 2, 4, 8, 16, 32, 60, 60, 60, 0}
	if len(e.slept) != len(want) {
		t.Fatalf("delays %v, want %v seconds", e.slept, want)
	}
	for i, d := range e.slept {
		if d != want[i]*time.Second {
			t.Fatalf("delays %v, want %v seconds", e.slept, want)
		}
	}
}

func TestCancelledWait(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.g.Set(ctx, nil, []byte("right"))
	e.g.Check(ctx, []byte("wrong"))
	real := admin.ForStore(e.s, admin.Options{KDF: storetest.KDF})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	start := time.Now()
	if err := real.Check(cctx, []byte("right")); !errors.Is(err, context.Canceled) {
		t.Fatalf("check during a cancelled wait: %v", err)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Fatal("a cancelled wait still waited")
	}
}

func TestDamagedFile(t *testing.T) {
	e := newEnv(t)
	os.MkdirAll(filepath.Join(e.dir, "state"), 0o700)
	for _, content := range []string{"{", `{"version":1,"verifier":{"kdf":"argon2id","time":1,"memory_kib":1073741824,"threads":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA==","hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}`, strings.Repeat(" ", 10000)} {
		os.WriteFile(filepath.Join(e.dir, admin.File), []byte(content), 0o600)
		if err := e.g.Check(context.Background(), []byte("x")); err == nil || errors.Is(err, admin.ErrWrong) {
			t.Errorf("damaged %.20q: %v", content, err)
		}
	}
}

func TestSealedExportCannotSet(t *testing.T) {
	k, _ := seal.NewKeys([]byte("p"), storetest.KDF)
	b, _ := k.MarshalPublic()
	pk, err := seal.ParseKeys(b)
	if err != nil {
		t.Fatal(err)
	}
	g := admin.New(nil, nil, pk.Identity, admin.Options{})
	if err := g.Set(context.Background(), nil, []byte("x")); !errors.Is(err, journal.ErrReadOnly) {
		t.Fatalf("Set on a read-only store: %v", err)
	}
}
