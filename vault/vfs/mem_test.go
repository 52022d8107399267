package vfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"testing"

	"drawbridge/vault/vfs"
)

func read(t *testing.T, fsys vfs.FS, name string) ([]byte, bool) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b, true
}

func create(t *testing.T, fsys vfs.FS, name, content string, sync bool) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCrashLosesUnsyncedWrites(t *testing.T) {
	m := vfs.NewMem()
	create(t, m, "unsynced", "a", false)
	create(t, m, "synced", "b", true)
	create(t, m, "entry-only", "c", false) // the entry is made durable below, the data is not
	must(t, m.SyncDir("."))
	create(t, m, "late", "d", true) // data synced, entry not

	c := m.Crash()
	if b, ok := read(t, c, "unsynced"); !ok || len(b) != 0 {
		t.Fatalf("unsynced file after crash: %q %v, want empty", b, ok)
	}
	if b, _ := read(t, c, "synced"); string(b) != "b" {
		t.Fatalf("synced file after crash: %q", b)
	}
	if b, _ := read(t, c, "entry-only"); len(b) != 0 {
		t.Fatalf("file never synced holds %q after crash", b)
	}
	if _, ok := read(t, c, "late"); ok {
		t.Fatal("file whose directory was never synced survived the crash")
	}
	// The crashed FS is fully durable: a second crash changes nothing.
	if b, _ := read(t, c.Crash(), "synced"); string(b) != "b" {
		t.Fatalf("second crash: %q", b)
	}
}

func TestCrashWriteWithoutSyncIsGone(t *testing.T) {
	m := vfs.NewMem()
	create(t, m, "f", "v1", true)
	must(t, m.SyncDir("."))
	f, err := m.OpenFile("f", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	f.Write([]byte(" v2"))
	f.Close()
	if b, _ := read(t, m, "f"); string(b) != "v1 v2" {
		t.Fatalf("before crash: %q", b)
	}
	if b, _ := read(t, m.Crash(), "f"); string(b) != "v1" {
		t.Fatalf("after crash: %q, want the synced v1", b)
	}
}

func TestCrashKeepsCommitted(t *testing.T) {
	m := vfs.NewMem()
	must(t, m.MkdirAll("packs/ab", 0o755))
	must(t, m.SyncDir("packs"))
	must(t, m.SyncDir("."))
	must(t, vfs.WriteSealed(m, "tmp", "packs/ab/ab01.pack", []byte("pack")))
	p, err := vfs.Create(m, "tmp")
	must(t, err)
	p.Write([]byte("half"))

	c := m.Crash()
	if b, _ := read(t, c, "packs/ab/ab01.pack"); string(b) != "pack" {
		t.Fatalf("committed file after crash: %q", b)
	}
	fi, err := c.Stat("packs/ab/ab01.pack")
	must(t, err)
	if imm, _ := vfs.IsImmutable(c, "packs/ab/ab01.pack"); !imm || fi.Mode().Perm() != 0o444 {
		t.Fatalf("committed file after crash: immutable %v, mode %v", imm, fi.Mode())
	}
	if _, err := c.Stat("tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("tmp, never synced, survived: %v", err)
	}
}

func TestCrashRollsBackDirectoryChanges(t *testing.T) {
	m := vfs.NewMem()
	create(t, m, "a", "A", true)
	create(t, m, "gone", "G", true)
	must(t, m.SyncDir("."))
	must(t, m.Rename("a", "b"))
	must(t, m.Remove("gone"))
	must(t, m.MkdirAll("d/e", 0o755))

	c := m.Crash()
	if b, _ := read(t, c, "a"); string(b) != "A" {
		t.Fatalf("rename without dir sync not rolled back: a = %q", b)
	}
	if _, ok := read(t, c, "b"); ok {
		t.Fatal("rename target survived without dir sync")
	}
	if b, _ := read(t, c, "gone"); string(b) != "G" {
		t.Fatalf("remove without dir sync not rolled back: %q", b)
	}
	if _, err := c.Stat("d"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("directory survived without its parent synced: %v", err)
	}

	must(t, m.SyncDir("."))
	c = m.Crash()
	if _, ok := read(t, c, "a"); ok {
		t.Fatal("a still there after a synced rename")
	}
	if b, _ := read(t, c, "b"); string(b) != "A" {
		t.Fatalf("synced rename: b = %q", b)
	}
	if _, err := c.Stat("d/e"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("d/e survived though d was never synced: %v", err)
	}
	if fi, err := c.Stat("d"); err != nil || !fi.IsDir() {
		t.Fatalf("d after syncing its parent: %v %v", fi, err)
	}
}

func TestCrashAcrossDirectories(t *testing.T) {
	// The durable-write pattern: tmp is never synced, the destination is.
	m := vfs.NewMem()
	must(t, m.MkdirAll("tmp", 0o755))
	must(t, m.MkdirAll("journal", 0o755))
	must(t, m.SyncDir("."))
	create(t, m, "tmp/x", "record", true)
	must(t, m.Rename("tmp/x", "journal/1"))
	if _, ok := read(t, m.Crash(), "journal/1"); ok {
		t.Fatal("rename survived before the destination directory was synced")
	}
	must(t, m.SyncDir("journal"))
	if b, _ := read(t, m.Crash(), "journal/1"); string(b) != "record" {
		t.Fatalf("after syncing the destination: %q", b)
	}
}

func TestSealedMem(t *testing.T) {
	m := vfs.NewMem()
	create(t, m, "f", "x", true)
	f, err := m.OpenFile("f", os.O_WRONLY, 0)
	must(t, err)
	must(t, m.Seal("f"))
	if _, err := f.Write([]byte("y")); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("write through a handle opened before sealing: %v, want ErrPermission", err)
	}
	f.Close()
	must(t, m.Unseal("f"))
	if err := m.Remove("f"); err != nil {
		t.Fatalf("remove after Unseal: %v", err)
	}
}

func TestInjectErrors(t *testing.T) {
	m := vfs.NewMem()
	if m.Ops() != 0 {
		t.Fatal("fresh MemFS counted operations")
	}
	must(t, m.MkdirAll("d", 0o755))
	m.Stat("d")
	m.ReadDir(".")
	if m.Ops() != 1 {
		t.Fatalf("Ops = %d after one mutation and two reads, want 1", m.Ops())
	}

	m.InjectErrors(1)
	if err := m.SyncDir("."); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("SyncDir with every=1: %v, want ErrInjected", err)
	}
	if _, err := m.OpenFile("d/f", os.O_WRONLY|os.O_CREATE, 0o644); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("OpenFile for writing: %v, want ErrInjected", err)
	}
	if _, err := m.OpenFile("d", os.O_RDONLY, 0); err != nil {
		t.Fatalf("a read-only open is not a counted operation: %v", err)
	}

	m.InjectErrors(2)
	f, err := m.OpenFile("d/f", os.O_WRONLY|os.O_CREATE, 0o644) // 1st: passes
	must(t, err)
	n, err := f.Write([]byte("abcdef")) // 2nd: fails, torn
	if !errors.Is(err, vfs.ErrInjected) || n != 3 {
		t.Fatalf("injected write: %d, %v; want 3 bytes written and ErrInjected", n, err)
	}
	if b, _ := read(t, m, "d/f"); string(b) != "abc" {
		t.Fatalf("torn write left %q", b)
	}
	must(t, f.Sync())                                      // 3rd
	if err := f.Sync(); !errors.Is(err, vfs.ErrInjected) { // 4th
		t.Fatalf("4th op: %v", err)
	}
	f.Close()

	m.InjectErrors(0)
	for i := 0; i < 5; i++ {
		must(t, m.SyncDir("."))
	}
	if m.Ops() != 12 {
		t.Fatalf("Ops = %d, want 12", m.Ops())
	}
}

// TestCrashSweepWriteSealed injects a fault at every N-th operation of a run
// of WriteSealed calls, crashes, and checks that every file either exists
// with its full content or does not exist, and that every write that
// reported success survived.
func TestCrashSweepWriteSealed(t *testing.T) {
	const files = 6
	content := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, 100*(i+1)) }
	dest := func(i int) string { return fmt.Sprintf("packs/%02d.pack", i) }
	run := func(m *vfs.MemFS) []bool {
		ok := make([]bool, files)
		for i := range files {
			ok[i] = vfs.WriteSealed(m, "tmp", dest(i), content(i)) == nil
		}
		return ok
	}
	setup := func() *vfs.MemFS {
		m := vfs.NewMem()
		must(t, m.MkdirAll("packs", 0o755))
		must(t, m.SyncDir("."))
		return m
	}

	m := setup()
	start := m.Ops()
	run(m)
	total := m.Ops() - start
	if total < files*6 {
		t.Fatalf("a clean run took only %d operations", total)
	}
	for every := 1; every <= total+1; every++ {
		m := setup()
		m.InjectErrors(every)
		ok := run(m)
		c := m.Crash()
		for i := range files {
			b, exists := read(t, c, dest(i))
			if exists && !bytes.Equal(b, content(i)) {
				t.Fatalf("every=%d: %s holds %d bytes, want %d: half-written file visible", every, dest(i), len(b), len(content(i)))
			}
			if ok[i] {
				if !exists {
					t.Fatalf("every=%d: %s reported written but lost in the crash", every, dest(i))
				}
				if imm, _ := vfs.IsImmutable(c, dest(i)); !imm {
					t.Fatalf("every=%d: %s reported written but not sealed", every, dest(i))
				}
			}
		}
		// The store starts again on the crashed FS: missing files can be written.
		for i := range files {
			if _, exists := read(t, c, dest(i)); !exists {
				must(t, vfs.WriteSealed(c, "tmp", dest(i), content(i)))
			}
		}
	}
}

// TestCrashSweepReplace: after a crash at any point of a Replace, the file
// holds the old or the new content, never anything else.
func TestCrashSweepReplace(t *testing.T) {
	setup := func() *vfs.MemFS {
		m := vfs.NewMem()
		must(t, m.MkdirAll("state", 0o755))
		must(t, m.SyncDir("."))
		must(t, vfs.Replace(m, "tmp", "state/head", []byte("old content\n")))
		return m
	}
	m := setup()
	start := m.Ops()
	must(t, vfs.Replace(m, "tmp", "state/head", []byte("new content\n")))
	total := m.Ops() - start
	for every := 1; every <= total+1; every++ {
		m := setup()
		m.InjectErrors(every)
		err := vfs.Replace(m, "tmp", "state/head", []byte("new content\n"))
		b, _ := read(t, m.Crash(), "state/head")
		if s := string(b); s != "old content\n" && s != "new content\n" || err == nil && s != "new content\n" {
			t.Fatalf("every=%d: after crash head = %q (Replace returned %v)", every, b, err)
		}
	}
}
