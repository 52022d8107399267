// Package vfstest holds the conformance suite every vfs.FS implementation
// must pass, and the few powers a test needs that the store must never have:
// undoing a seal so a test can tamper with a file, and removing a temporary
// directory full of immutable files.
package vfstest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"drawbridge/vault/vfs"
)

// Backend is a fresh FS of one implementation, for tests that must run
// against every implementation.
type Backend struct {
	Name string
	FS   vfs.FS
	Mem  *vfs.MemFS // nil unless the backend is a MemFS
	Dir  string     // the directory under an OS backend, "" otherwise
}

// Unseal makes a sealed file writable and removable again.
func (b *Backend) Unseal(t testing.TB, name string) {
	t.Helper()
	if b.Mem != nil {
		if err := b.Mem.Unseal(name); err != nil {
			t.Fatalf("unseal %s: %v", name, err)
		}
		return
	}
	if err := UnsealPath(filepath.Join(b.Dir, filepath.FromSlash(name))); err != nil {
		t.Fatalf("unseal %s: %v", name, err)
	}
}

// Run calls fn in a subtest for each implementation: "mem" (vfs.NewMem) and
// "os" (vfs.OS over a temporary directory).
func Run(t *testing.T, fn func(t *testing.T, b *Backend)) {
	t.Run("mem", func(t *testing.T) {
		m := vfs.NewMem()
		fn(t, &Backend{Name: "mem", FS: m, Mem: m})
	})
	t.Run("os", func(t *testing.T) {
		dir := TempDir(t)
		fsys, err := vfs.OS(dir)
		if err != nil {
			t.Fatal(err)
		}
		fn(t, &Backend{Name: "os", FS: fsys, Dir: dir})
	})
}

// TempDir is t.TempDir whose cleanup first clears immutable flags, which
// sealing sets when the test runs as root.
func TempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { // runs before t.TempDir's removal
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if err := UnsealPath(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Logf("unseal %s: %v", p, err)
				}
			}
			return nil
		})
	})
	return dir
}

// UnsealPath clears a real file's immutable flag, if any, and makes it
// writable.
func UnsealPath(p string) error {
	if err := clearImmutable(p); err != nil {
		return err
	}
	return os.Chmod(p, 0o644)
}
