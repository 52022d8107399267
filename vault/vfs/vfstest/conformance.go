package vfstest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"testing"

	"drawbridge/vault/vfs"
)

// Conformance checks that an FS behaves as the store expects: os semantics
// for every method, confinement of names, sealing, and the durable-write
// helper built on top. newFS returns an empty FS.
func Conformance(t *testing.T, newFS func(t *testing.T) vfs.FS) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, vfs.FS)
	}{
		{"Files", testFiles},
		{"Names", testNames},
		{"Dirs", testDirs},
		{"Rename", testRename},
		{"Remove", testRemove},
		{"SyncDir", testSyncDir},
		{"Seal", testSeal},
		{"Commit", testCommit},
		{"CommitRefusesExisting", testCommitRefusesExisting},
		{"Abort", testAbort},
		{"CommitFailures", testCommitFailures},
		{"WriteSealed", testWriteSealed},
		{"Replace", testReplace},
		{"Concurrent", testConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newFS(t)) })
	}
}

func readAll(t *testing.T, fsys vfs.FS, name string) []byte {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

func writeFile(t *testing.T, fsys vfs.FS, name string, data []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", name, err)
	}
}

func mustExist(t *testing.T, fsys vfs.FS, name string, want []byte) {
	t.Helper()
	if got := readAll(t, fsys, name); !bytes.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", name, got, want)
	}
}

func mustNotExist(t *testing.T, fsys vfs.FS, name string) {
	t.Helper()
	if _, err := fsys.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat %s: got %v, want ErrNotExist", name, err)
	}
}

func names(t *testing.T, fsys vfs.FS, dir string) []string {
	t.Helper()
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func mustBeEmpty(t *testing.T, fsys vfs.FS, dir string) {
	t.Helper()
	if n := names(t, fsys, dir); len(n) != 0 {
		t.Fatalf("%s should be empty, holds %q", dir, n)
	}
}

func testFiles(t *testing.T, fsys vfs.FS) {
	f, err := fsys.OpenFile("a", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.Write([]byte("hello world")); n != 11 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if off, err := f.Seek(6, io.SeekStart); off != 6 || err != nil {
		t.Fatalf("seek: %d, %v", off, err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(f, buf); err != nil || string(buf) != "world" {
		t.Fatalf("read after seek: %q, %v", buf, err)
	}
	if _, err := f.Read(buf); err != io.EOF {
		t.Fatalf("read at end: %v, want io.EOF", err)
	}
	if n, err := f.ReadAt(buf[:4], 2); n != 4 || err != nil || string(buf[:4]) != "llo " {
		t.Fatalf("readat: %d %q %v", n, buf[:4], err)
	}
	if n, err := f.ReadAt(buf, 8); n != 3 || err != io.EOF {
		t.Fatalf("readat past end: %d %v, want 3 io.EOF", n, err)
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() != 11 || fi.IsDir() || fi.Name() != "a" {
		t.Fatalf("file stat: %v %v", fi, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err = fsys.Stat("a")
	if err != nil || fi.Size() != 11 || fi.Mode().Perm() != 0o600 || !fi.Mode().IsRegular() {
		t.Fatalf("stat: %v %v", fi, err)
	}

	if _, err := fsys.OpenFile("a", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on existing file: %v, want ErrExist", err)
	}
	if _, err := fsys.OpenFile("missing", os.O_RDONLY, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open missing: %v, want ErrNotExist", err)
	}
	if _, err := fsys.OpenFile("nodir/x", os.O_WRONLY|os.O_CREATE, 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("create in missing dir: %v, want ErrNotExist", err)
	}

	f, err = fsys.OpenFile("a", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("!"))
	f.Close()
	mustExist(t, fsys, "a", []byte("hello world!"))

	writeFile(t, fsys, "a", []byte("new"))
	mustExist(t, fsys, "a", []byte("new"))

	f, err = fsys.OpenFile("a", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("write to a file opened read-only succeeded")
	}
	f.Close()
}

func testNames(t *testing.T, fsys vfs.FS) {
	if err := fsys.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, fsys, "d/f", []byte("x"))
	for _, bad := range []string{"", "/etc/passwd", "../x", "d/../d/f", "d//f", "d/", "./d", ".."} {
		check := func(what string, err error) {
			t.Helper()
			if err == nil {
				t.Errorf("%s(%q) succeeded", what, bad)
			}
		}
		_, err := fsys.OpenFile(bad, os.O_RDONLY, 0)
		check("OpenFile", err)
		_, err = fsys.OpenFile(bad, os.O_WRONLY|os.O_CREATE, 0o600)
		check("OpenFile(create)", err)
		check("Rename from", fsys.Rename(bad, "y"))
		check("Rename to", fsys.Rename("d/f", bad))
		check("Remove", fsys.Remove(bad))
		if bad != "" && bad != "d/" && bad != "./d" {
			check("MkdirAll", fsys.MkdirAll(bad, 0o755))
		}
		_, err = fsys.ReadDir(bad)
		check("ReadDir", err)
		_, err = fsys.Stat(bad)
		check("Stat", err)
		check("SyncDir", fsys.SyncDir(bad))
		check("Seal", fsys.Seal(bad))
		check("WriteSealed", vfs.WriteSealed(fsys, "tmp", bad, []byte("x")))
		check("Replace", vfs.Replace(fsys, "tmp", bad, []byte("x")))
	}
	mustExist(t, fsys, "d/f", []byte("x"))
}

func testDirs(t *testing.T, fsys vfs.FS) {
	if err := fsys.MkdirAll("a/b/c", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fsys.MkdirAll("a/b/c", 0o755); err != nil {
		t.Fatalf("MkdirAll on an existing tree: %v", err)
	}
	if err := fsys.MkdirAll(".", 0o755); err != nil {
		t.Fatalf("MkdirAll(.): %v", err)
	}
	for _, n := range []string{"a/z", "a/m", "a/b2"} {
		writeFile(t, fsys, n, []byte(n))
	}
	got := fmt.Sprint(names(t, fsys, "a"))
	if got != "[b b2 m z]" {
		t.Fatalf("ReadDir(a) = %s, want sorted [b b2 m z]", got)
	}
	ents, _ := fsys.ReadDir("a")
	if !ents[0].IsDir() || ents[1].IsDir() {
		t.Fatal("ReadDir: wrong IsDir")
	}
	if fi, err := ents[1].Info(); err != nil || fi.Size() != 4 {
		t.Fatalf("DirEntry.Info: %v %v", fi, err)
	}
	if got := fmt.Sprint(names(t, fsys, ".")); got != "[a]" {
		t.Fatalf("ReadDir(.) = %s", got)
	}
	fi, err := fsys.Stat("a/b")
	if err != nil || !fi.IsDir() {
		t.Fatalf("Stat dir: %v %v", fi, err)
	}
	if err := fsys.MkdirAll("a/z/q", 0o755); err == nil {
		t.Fatal("MkdirAll through a file succeeded")
	}
	if _, err := fsys.ReadDir("nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadDir missing: %v", err)
	}
	if _, err := fsys.ReadDir("a/z"); err == nil {
		t.Fatal("ReadDir of a file succeeded")
	}
	if _, err := fsys.OpenFile("a/b", os.O_WRONLY, 0); err == nil {
		t.Fatal("opening a directory for writing succeeded")
	}
}

func testRename(t *testing.T, fsys vfs.FS) {
	fsys.MkdirAll("d", 0o755)
	writeFile(t, fsys, "a", []byte("A"))
	writeFile(t, fsys, "b", []byte("B"))
	if err := fsys.Rename("a", "d/a"); err != nil {
		t.Fatal(err)
	}
	mustNotExist(t, fsys, "a")
	mustExist(t, fsys, "d/a", []byte("A"))
	if err := fsys.Rename("d/a", "b"); err != nil {
		t.Fatalf("Rename over an existing file: %v", err)
	}
	mustExist(t, fsys, "b", []byte("A"))
	mustNotExist(t, fsys, "d/a")
	if err := fsys.Rename("missing", "c"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Rename missing: %v, want ErrNotExist", err)
	}
	if err := fsys.Rename("b", "nodir/b"); err == nil {
		t.Fatal("Rename into a missing directory succeeded")
	}
	if err := fsys.Rename("d", "e"); err != nil {
		t.Fatalf("Rename dir: %v", err)
	}
	if fi, err := fsys.Stat("e"); err != nil || !fi.IsDir() {
		t.Fatalf("renamed dir: %v %v", fi, err)
	}
}

func testRemove(t *testing.T, fsys vfs.FS) {
	fsys.MkdirAll("d/e", 0o755)
	writeFile(t, fsys, "d/f", []byte("x"))
	if err := fsys.Remove("d"); err == nil {
		t.Fatal("Remove of a non-empty directory succeeded")
	}
	if err := fsys.Remove("d/f"); err != nil {
		t.Fatal(err)
	}
	mustNotExist(t, fsys, "d/f")
	if err := fsys.Remove("d/e"); err != nil {
		t.Fatalf("Remove empty dir: %v", err)
	}
	if err := fsys.Remove("d/f"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Remove missing: %v, want ErrNotExist", err)
	}
}

func testSyncDir(t *testing.T, fsys vfs.FS) {
	fsys.MkdirAll("d", 0o755)
	writeFile(t, fsys, "d/f", []byte("x"))
	for _, d := range []string{".", "d"} {
		if err := fsys.SyncDir(d); err != nil {
			t.Fatalf("SyncDir(%s): %v", d, err)
		}
	}
	if err := fsys.SyncDir("missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("SyncDir missing: %v, want ErrNotExist", err)
	}
}

// checkSealed asserts a file is read-only and, where the FS reports the
// immutable flag, that it can be neither written, renamed nor removed.
func checkSealed(t *testing.T, fsys vfs.FS, name string, content []byte) {
	t.Helper()
	fi, err := fsys.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Fatalf("%s: mode %v after seal, want 0444", name, fi.Mode().Perm())
	}
	imm, err := vfs.IsImmutable(fsys, name)
	if err != nil {
		t.Fatalf("IsImmutable(%s): %v", name, err)
	}
	if imm {
		if _, err := fsys.OpenFile(name, os.O_WRONLY, 0); !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("open sealed %s for writing: %v, want ErrPermission", name, err)
		}
		if err := fsys.Remove(name); !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("remove sealed %s: %v, want ErrPermission", name, err)
		}
		if err := fsys.Rename(name, name+".moved"); err == nil {
			t.Fatalf("rename of sealed %s succeeded", name)
		}
		writeFile(t, fsys, "other", []byte("other"))
		if err := fsys.Rename("other", name); err == nil {
			t.Fatalf("rename over sealed %s succeeded", name)
		}
		fsys.Remove("other")
	}
	mustExist(t, fsys, name, content)
}

func testSeal(t *testing.T, fsys vfs.FS) {
	writeFile(t, fsys, "f", []byte("sealed"))
	if imm, err := vfs.IsImmutable(fsys, "f"); err != nil || imm {
		t.Fatalf("IsImmutable before seal: %v %v", imm, err)
	}
	if err := fsys.Seal("f"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Seal("f"); err != nil {
		t.Fatalf("sealing twice: %v", err)
	}
	checkSealed(t, fsys, "f", []byte("sealed"))
	if err := fsys.Seal("missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Seal missing: %v, want ErrNotExist", err)
	}
	fsys.MkdirAll("d", 0o755)
	if err := fsys.Seal("d"); err == nil {
		t.Fatal("sealing a directory succeeded")
	}
}

func testCommit(t *testing.T, fsys vfs.FS) {
	fsys.MkdirAll("packs/ab", 0o755)
	p, err := vfs.Create(fsys, "tmp")
	if err != nil {
		t.Fatal(err)
	}
	if len(names(t, fsys, "tmp")) != 1 {
		t.Fatal("Create made no file in tmp")
	}
	for _, s := range []string{"one ", "two ", "three"} {
		if _, err := p.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Commit("packs/ab/ab01.pack"); err != nil {
		t.Fatal(err)
	}
	checkSealed(t, fsys, "packs/ab/ab01.pack", []byte("one two three"))
	mustBeEmpty(t, fsys, "tmp")
	if _, err := p.Write([]byte("x")); err == nil {
		t.Fatal("Write after Commit succeeded")
	}
	if err := p.Commit("packs/ab/ab02.pack"); err == nil {
		t.Fatal("second Commit succeeded")
	}
	p.Abort() // a no-op after Commit
	mustExist(t, fsys, "packs/ab/ab01.pack", []byte("one two three"))
}

func testCommitRefusesExisting(t *testing.T, fsys vfs.FS) {
	if err := vfs.WriteSealed(fsys, "tmp", "keys.json", []byte("first")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, fsys, "plain", []byte("plain"))
	for _, dest := range []string{"keys.json", "plain"} {
		p, err := vfs.Create(fsys, "tmp")
		if err != nil {
			t.Fatal(err)
		}
		p.Write([]byte("second"))
		if err := p.Commit(dest); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("Commit over existing %s: %v, want ErrExist", dest, err)
		}
		mustBeEmpty(t, fsys, "tmp")
	}
	mustExist(t, fsys, "keys.json", []byte("first"))
	mustExist(t, fsys, "plain", []byte("plain"))
	if err := vfs.WriteSealed(fsys, "tmp", "keys.json", []byte("third")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("WriteSealed over existing: %v, want ErrExist", err)
	}
	mustExist(t, fsys, "keys.json", []byte("first"))
}

func testAbort(t *testing.T, fsys vfs.FS) {
	p, err := vfs.Create(fsys, "tmp")
	if err != nil {
		t.Fatal(err)
	}
	p.Write([]byte("garbage"))
	p.Abort()
	p.Abort()
	mustBeEmpty(t, fsys, "tmp")
	if got := fmt.Sprint(names(t, fsys, ".")); got != "[tmp]" {
		t.Fatalf("after Abort the root holds %s, want [tmp]", got)
	}
	if err := p.Commit("x"); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	mustNotExist(t, fsys, "x")
}

func testCommitFailures(t *testing.T, fsys vfs.FS) {
	p, err := vfs.Create(fsys, "tmp")
	if err != nil {
		t.Fatal(err)
	}
	p.Write([]byte("x"))
	if err := p.Commit("nodir/x"); err == nil {
		t.Fatal("Commit into a missing directory succeeded")
	}
	mustBeEmpty(t, fsys, "tmp")
	p, err = vfs.Create(fsys, "tmp")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Commit("."); err == nil {
		t.Fatal("Commit to . succeeded")
	}
	mustBeEmpty(t, fsys, "tmp")
}

func testWriteSealed(t *testing.T, fsys vfs.FS) {
	if err := fsys.MkdirAll("journal", 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("journal/%016d", i)
		if err := vfs.WriteSealed(fsys, "tmp", name, []byte(name)); err != nil {
			t.Fatal(err)
		}
		checkSealed(t, fsys, name, []byte(name))
	}
	if err := vfs.WriteSealed(fsys, "tmp", "journal/empty", nil); err != nil {
		t.Fatal(err)
	}
	mustExist(t, fsys, "journal/empty", nil)
	mustBeEmpty(t, fsys, "tmp")
}

func testReplace(t *testing.T, fsys vfs.FS) {
	fsys.MkdirAll("state", 0o755)
	for _, s := range []string{"1 aa\n", "2 bb\n", "3 cc\n"} {
		if err := vfs.Replace(fsys, "tmp", "state/journal-head", []byte(s)); err != nil {
			t.Fatal(err)
		}
		mustExist(t, fsys, "state/journal-head", []byte(s))
	}
	if imm, err := vfs.IsImmutable(fsys, "state/journal-head"); err != nil || imm {
		t.Fatalf("replaced file is immutable: %v %v", imm, err)
	}
	fi, _ := fsys.Stat("state/journal-head")
	if fi.Mode().Perm()&0o200 == 0 {
		t.Fatalf("replaced file mode %v, want writable by owner", fi.Mode())
	}
	mustBeEmpty(t, fsys, "tmp")
	if err := vfs.Replace(fsys, "tmp", "nodir/head", []byte("x")); err == nil {
		t.Fatal("Replace into a missing directory succeeded")
	}
	mustBeEmpty(t, fsys, "tmp")
}

func testConcurrent(t *testing.T, fsys vfs.FS) {
	fsys.MkdirAll("packs", 0o755)
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("packs/%02d", i)
			errs[i] = vfs.WriteSealed(fsys, "tmp", name, bytes.Repeat([]byte{byte(i)}, 1000+i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
		mustExist(t, fsys, fmt.Sprintf("packs/%02d", i), bytes.Repeat([]byte{byte(i)}, 1000+i))
	}
	mustBeEmpty(t, fsys, "tmp")
}
