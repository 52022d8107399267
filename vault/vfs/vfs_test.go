package vfs_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"drawbridge/vault/vfs"
	"drawbridge/vault/vfs/vfstest"
)

func TestConformanceMem(t *testing.T) {
	vfstest.Conformance(t, func(t *testing.T) vfs.FS { return vfs.NewMem() })
}

func TestConformanceOS(t *testing.T) {
	vfstest.Conformance(t, func(t *testing.T) vfs.FS {
		fsys, err := vfs.OS(vfstest.TempDir(t))
		if err != nil {
			t.Fatal(err)
		}
		return fsys
	})
}

// TestOSSealImmutable checks that a committed file carries the immutable
// flag wherever the filesystem under the test's temporary directory lets us
// set it at all, and is read-only everywhere.
func TestOSSealImmutable(t *testing.T) {
	dir := vfstest.TempDir(t)
	fsys, err := vfs.OS(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := vfs.WriteSealed(fsys, "tmp", "store.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "store.json"))
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("sealed file: %v %v, want mode 0444", fi, err)
	}
	imm, err := vfs.IsImmutable(fsys, "store.json")
	if err != nil {
		t.Fatal(err)
	}
	if supported := immutableSupported(t, dir); supported != imm {
		t.Fatalf("IsImmutable = %v, but the filesystem supports the flag: %v", imm, supported)
	}
	if !imm {
		t.Log("immutable flag unsupported here (tmpfs, overlay or no CAP_LINUX_IMMUTABLE): checked read-only only")
		return
	}
	// Root ignores mode bits but not the immutable flag.
	if err := os.WriteFile(filepath.Join(dir, "store.json"), []byte("x"), 0o644); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("writing an immutable file: %v, want ErrPermission", err)
	}
	if err := os.Remove(filepath.Join(dir, "store.json")); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("removing an immutable file: %v, want ErrPermission", err)
	}
}

func TestOSConfined(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := vfstest.TempDir(t)
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	fsys, err := vfs.OS(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.OpenFile("escape/secret", os.O_RDONLY, 0); err == nil {
		t.Fatal("opened a file through a symlink leading outside the root")
	}
	if err := vfs.WriteSealed(fsys, "tmp", "escape/new", []byte("x")); err == nil {
		t.Fatal("wrote through a symlink leading outside the root")
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file appeared outside the root: %v", err)
	}
}

func TestOSMissingDir(t *testing.T) {
	if _, err := vfs.OS(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OS(missing): %v, want ErrNotExist", err)
	}
}

// wrapped hides MemFS's atomic no-replace rename, so Commit takes the
// Stat-then-Rename path an outside FS wrapper would get.
type wrapped struct{ vfs.FS }

func TestConformanceWrapped(t *testing.T) {
	vfstest.Conformance(t, func(t *testing.T) vfs.FS { return wrapped{vfs.NewMem()} })
}
