package restore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/restore"
	"drawbridge/vault/tree"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32() | 1) // never all-zero
	}
	return b
}

// at sets an entry's mtime.
func at(e tree.Entry, sec int64, nsec uint32) tree.Entry {
	e.MtimeSec, e.MtimeNsec = sec, nsec
	return e
}

const (
	chunk     = 256 << 10
	sparseLen = 12 * chunk
)

// nasty builds a tree with every kind of entry and awkward names, modes,
// times and contents. Devices are in it only when running as root.
func nasty(t *testing.T, s *fakeSource) tree.ID {
	isRoot := os.Geteuid() == 0
	// sparse: data, 8 zero chunks, data, 2 zero chunks.
	sparse := make([]byte, sparseLen)
	copy(sparse, randBytes(1, chunk))
	copy(sparse[9*chunk:], randBytes(2, chunk))

	withX := func(e tree.Entry, xs ...tree.Xattr) tree.Entry { e.Xattrs = xs; return e }

	c := s.dir(t,
		at(s.file(t, "leaf", 0o640, []byte("leaf\n"), 3, 0), 1_500_000_000, 1),
		tree.Entry{Name: "link-up", Kind: tree.Hardlink, Target: " space name"},
		tree.Entry{Name: "link-up2", Kind: tree.Hardlink, Target: " space name"},
		tree.Entry{Name: "link-leaf", Kind: tree.Hardlink, Target: "a/b/c/leaf"},
	)
	b := s.dir(t, at(dirEntry("c", 0o750, c), 1_500_000_001, 2))
	a := s.dir(t, at(dirEntry("b", 0o755, b), 1_500_000_002, 3))
	bin := s.dir(t,
		at(s.file(t, "sg", 0o2755, []byte("setgid"), 4, 0), 1_600_000_000, 999_999_999),
		at(s.file(t, "su", 0o4755, []byte("#!/bin/sh\necho suid\n"), 5, 0), 1_600_000_001, 0),
		at(s.file(t, "sticky-file", 0o1644, []byte("t"), 1, 0), 4_000_000_000, 5),
	)
	ro := s.dir(t, at(s.file(t, "f", 0o444, []byte("read only"), 100, 0), 1_600_000_002, 6))
	var devs []tree.Entry
	if isRoot {
		devs = []tree.Entry{
			at(tree.Entry{Name: "null", Kind: tree.CharDev, Mode: 0o666, Major: 1, Minor: 3}, 1_600_000_003, 7),
			at(tree.Entry{Name: "loop9", Kind: tree.BlockDev, Mode: 0o660, Major: 7, Minor: 9}, 1_600_000_004, 8),
		}
	}
	dev := s.dir(t, devs...)
	sticky := s.dir(t, at(s.file(t, "x", 0o666, []byte("x"), 1, 0), 1_600_000_005, 9))

	return s.dir(t,
		at(withX(s.file(t, " space name", 0o644, []byte("space\n"), 2, 0),
			tree.Xattr{Name: "user.empty"}, tree.Xattr{Name: "user.note", Value: []byte("hello\x00world")}), 1_700_000_000, 123_456_789),
		at(s.file(t, "\xff\xfe latin-1 \xe9", 0o600, []byte("not utf-8"), 4, 0), 1_700_000_001, 1),
		at(dirEntry("a", 0o755, a), 1_700_000_002, 2),
		at(s.file(t, "allzero", 0o644, make([]byte, 4*chunk), chunk, 0), 1_700_000_003, 3),
		at(dirEntry("bin", 0o755, bin), 1_700_000_004, 4),
		at(dirEntry("dev", 0o755, dev), -86400, 5),
		at(tree.Entry{Name: "empty", Kind: tree.File, Mode: 0o600}, 0, 0),
		at(tree.Entry{Name: "fifo", Kind: tree.FIFO, Mode: 0o640}, 1_700_000_005, 6),
		at(s.file(t, "indirect", 0o644, randBytes(3, 5000), 1000, 2), 1_700_000_006, 7),
		at(tree.Entry{Name: "line\nbreak", Kind: tree.Symlink, Mode: 0o777, Target: "target with\nnewline"}, 1_700_000_007, 8),
		at(dirEntry("ro", 0o555, ro), 1_700_000_008, 9),
		at(tree.Entry{Name: "sock", Kind: tree.Socket, Mode: 0o755}, 1_700_000_009, 10),
		at(s.file(t, "sparse", 0o644, sparse, chunk, 0), 1_700_000_010, 11),
		at(withX(dirEntry("sticky", 0o1777, sticky), tree.Xattr{Name: "user.dir", Value: []byte("d")}), 1_700_000_011, 12),
		at(tree.Entry{Name: "sym-abs", Kind: tree.Symlink, Mode: 0o777, Target: "/etc/passwd"}, 1_700_000_012, 13),
		tree.Entry{Name: "z-link-ro", Kind: tree.Hardlink, Target: "ro/f"},
		tree.Entry{Name: "z-link-su", Kind: tree.Hardlink, Target: "bin/su"},
	)
}

func TestRestoreNasty(t *testing.T) {
	parent := tempDir(t)
	needUserXattrs(t, parent)
	s := newSource()
	root := nasty(t, s)
	target := filepath.Join(parent, "target")
	var progress atomic.Int64
	rep, err := restore.Restore(context.Background(), s, root, "", target,
		restore.Options{Workers: 3, Progress: func(n int64) { progress.Add(n) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Damaged) != 0 {
		t.Fatalf("damage: %v", rep.Damaged)
	}
	newChecker(t, s, false).dir(root, "", target)

	devs := int64(0)
	if os.Geteuid() == 0 {
		devs = 2
	}
	want := restore.Report{Files: 17, Dirs: 7, Symlinks: 2, Other: 2 + devs,
		Bytes: int64(6 + 9 + 5 + 6 + 20 + 1 + 9 + 1 + 4*chunk + 5000 + sparseLen)}
	if rep.Files != want.Files || rep.Dirs != want.Dirs || rep.Symlinks != want.Symlinks || rep.Other != want.Other || rep.Bytes != want.Bytes {
		t.Errorf("report %+v, want %+v", *rep, want)
	}
	if progress.Load() != rep.Bytes {
		t.Errorf("progress reported %d bytes, report says %d", progress.Load(), rep.Bytes)
	}

	// All-zero chunks are holes.
	for name, data := range map[string]int64{"sparse": 2 * chunk, "allzero": 0} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(target, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks*512 > data+64<<10 || st.Blocks*512 >= st.Size {
			t.Errorf("%s: %d bytes allocated for %d bytes of data in %d: not sparse", name, st.Blocks*512, data, st.Size)
		}
	}
}

// A directory whose mode shuts its owner out gets that mode only at the end,
// so that a later hardlink can still reach into it, even without root.
func TestRestoreLockedDirectory(t *testing.T) {
	s := newSource()
	locked := s.dir(t, at(s.file(t, "f", 0o644, []byte("inside"), 6, 0), 1_600_000_000, 1))
	inner := s.dir(t, at(s.file(t, "g", 0o644, []byte("g"), 1, 0), 1_600_000_000, 2))
	root := s.dir(t,
		at(dirEntry("locked", 0o000, locked), 1_600_000_001, 3),
		at(dirEntry("nox", 0o600, s.dir(t, at(dirEntry("inner", 0o400, inner), 1_600_000_002, 4))), 1_600_000_003, 5),
		tree.Entry{Name: "z1", Kind: tree.Hardlink, Target: "locked/f"},
		tree.Entry{Name: "z2", Kind: tree.Hardlink, Target: "nox/inner/g"},
	)
	target := filepath.Join(tempDir(t), "target")
	rep, err := restore.Restore(context.Background(), s, root, "", target, restore.Options{})
	if err != nil || len(rep.Damaged) != 0 {
		t.Fatal(err, rep)
	}
	for p, want := range map[string]os.FileMode{"locked": 0, "nox": 0o600} {
		if fi, err := os.Lstat(filepath.Join(target, p)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %v", p, fi, err, want)
		}
		os.Chmod(filepath.Join(target, p), 0o700)
	}
	if fi, err := os.Lstat(filepath.Join(target, "nox/inner")); err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("nox/inner: %v %v", fi, err)
	}
	os.Chmod(filepath.Join(target, "nox/inner"), 0o700)
	if ino(t, filepath.Join(target, "z1")) != ino(t, filepath.Join(target, "locked/f")) ||
		ino(t, filepath.Join(target, "z2")) != ino(t, filepath.Join(target, "nox/inner/g")) {
		t.Error("hardlinks into locked directories do not share the inode")
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(target, "nox"), &st); err != nil || st.Mtim.Sec != 1_600_000_003 {
		t.Errorf("nox mtime %d: %v", st.Mtim.Sec, err)
	}
}

func TestRestoreSubpath(t *testing.T) {
	s := newSource()
	root := nasty(t, s)
	snap, err := s.Tree(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	entry := func(name string) *tree.Entry {
		for i := range snap.Entries {
			if snap.Entries[i].Name == name {
				return &snap.Entries[i]
			}
		}
		t.Fatalf("no %q", name)
		return nil
	}
	parent := tempDir(t)

	t.Run("dir", func(t *testing.T) {
		target := filepath.Join(parent, "bin")
		rep, err := restore.Restore(context.Background(), s, root, "/bin/", target, restore.Options{})
		if err != nil || len(rep.Damaged) != 0 {
			t.Fatal(err, rep)
		}
		newChecker(t, s, false).dir(entry("bin").Subtree, "bin", target)
	})

	t.Run("file", func(t *testing.T) {
		target := filepath.Join(parent, "su")
		if _, err := restore.Restore(context.Background(), s, root, "bin/su", target, restore.Options{}); err != nil {
			t.Fatal(err)
		}
		bin, _ := s.Tree(context.Background(), entry("bin").Subtree)
		names, _ := os.ReadDir(target)
		if len(names) != 1 {
			t.Fatalf("target holds %v", names)
		}
		su := slices.IndexFunc(bin.Entries, func(e tree.Entry) bool { return e.Name == "su" })
		newChecker(t, s, false).entry(&bin.Entries[su], "bin/su", filepath.Join(target, "su"))
	})

	t.Run("symlink", func(t *testing.T) {
		target := filepath.Join(parent, "sym")
		if _, err := restore.Restore(context.Background(), s, root, "line\nbreak", target, restore.Options{}); err != nil {
			t.Fatal(err)
		}
		newChecker(t, s, false).entry(entry("line\nbreak"), "line\nbreak", filepath.Join(target, "line\nbreak"))
	})

	// Hardlinks to files outside the subtree become a copy, then links to it.
	t.Run("hardlinks leaving the subtree", func(t *testing.T) {
		target := filepath.Join(parent, "ab")
		rep, err := restore.Restore(context.Background(), s, root, "a/b", target, restore.Options{})
		if err != nil || len(rep.Damaged) != 0 {
			t.Fatal(err, rep)
		}
		up, up2, leaf, linkLeaf := filepath.Join(target, "c/link-up"), filepath.Join(target, "c/link-up2"),
			filepath.Join(target, "c/leaf"), filepath.Join(target, "c/link-leaf")
		if b, err := os.ReadFile(up); err != nil || string(b) != "space\n" {
			t.Errorf("link-up: %q, %v", b, err)
		}
		if ino(t, up) != ino(t, up2) || ino(t, leaf) != ino(t, linkLeaf) || ino(t, up) == ino(t, leaf) {
			t.Errorf("inodes: link-up %d link-up2 %d leaf %d link-leaf %d", ino(t, up), ino(t, up2), ino(t, leaf), ino(t, linkLeaf))
		}
		if fi, _ := os.Lstat(up); fi.Mode().Perm() != 0o644 {
			t.Errorf("copy of the link target has mode %v", fi.Mode())
		}
	})

	t.Run("hardlink alone", func(t *testing.T) {
		target := filepath.Join(parent, "zsu")
		if _, err := restore.Restore(context.Background(), s, root, "z-link-su", target, restore.Options{}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(filepath.Join(target, "z-link-su"))
		if err != nil || fi.Mode() != 0o755|os.ModeSetuid || fi.Size() != 20 {
			t.Errorf("z-link-su: %v %v", fi, err)
		}
	})

	for _, bad := range []string{"missing", "bin/missing", "line\nbreak/x", "bin/su/x", "../etc", "a//b", "a/./b"} {
		t.Run("bad "+bad, func(t *testing.T) {
			target := filepath.Join(parent, "bad")
			if _, err := restore.Restore(context.Background(), s, root, bad, target, restore.Options{}); err == nil {
				t.Fatal("no error")
			}
			if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("target was created: %v", err)
			}
		})
	}
}

func ino(t *testing.T, p string) uint64 {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// A tree from a hostile writer: names that escape, a symlink out of the
// target followed by entries that would write through it, hardlinks to
// files outside. Nothing may appear outside the target, every bad entry is
// reported, and the good entries are restored.
func TestRestoreHostile(t *testing.T) {
	parent := tempDir(t)
	canary := filepath.Join(parent, "canary")
	if err := os.MkdirAll(filepath.Join(canary, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canary, "etc", "passwd"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshotDir(t, parent)

	s := newSource()
	pwned := s.file(t, "pwned", 0o644, []byte("pwned"), 5, 0)
	good := s.file(t, "good", 0o644, []byte("good"), 4, 0)
	inner := s.dir(t, pwned)
	// A hand-encoded tree blob with the name "..", which tree.Decode refuses.
	dotdot := binary.AppendUvarint([]byte("DBTREE01"), 1)
	dotdot = append(dotdot, 2, '.', '.', byte(tree.FIFO), 0, 0, 0, 0, 0, 0, 0, 0, 0)
	pwnedAt := func(name string) tree.Entry { e := pwned; e.Name = name; return e }
	escape := func(name, target string) tree.Entry {
		return tree.Entry{Name: name, Kind: tree.Symlink, Mode: 0o777, Target: target}
	}
	link := func(name, target string) tree.Entry {
		return tree.Entry{Name: name, Kind: tree.Hardlink, Target: target}
	}

	// A directory where "s" is both a symlink out of the target and a
	// directory: all entries of an ambiguous name are refused.
	dup := s.rawDir(escape("s", canary), dirEntry("s", 0o755, inner), pwnedAt("s"))
	root := s.rawDir(
		pwnedAt(".."), pwnedAt("."), pwnedAt(""), pwnedAt("a/b"), pwnedAt("/etc"), pwnedAt("x\x00y"),
		pwnedAt(strings.Repeat("n", 256)),
		dirEntry("../up", 0o755, inner),
		dirEntry("dup", 0o755, dup),
		dirEntry("handmade", 0o755, s.rawBlob(dotdot)),
		good,
		escape("esc-abs", canary),
		escape("esc-rel", "../canary"),
		escape("esc-root", "/"),
		escape("esc-up", "../.."),
		link("h1", "../canary/etc/passwd"),
		link("h2", canary+"/etc/passwd"),
		link("h3", "esc-rel/etc/passwd"),
		link("h4", "esc-abs/etc/passwd"),
		link("h5", "esc-rel"),
		link("h6", "zz-later"),
		link("h7", "dup"),
		link("h8", "missing"),
		link("h9", "good"),
		escape("nul-target", "a\x00b"),
		tree.Entry{Name: "weird-kind", Kind: 42},
		s.file(t, "zz-later", 0o644, []byte("later"), 5, 0),
	)
	target := filepath.Join(parent, "target")
	rep, err := restore.Restore(context.Background(), s, root, "", target, restore.Options{})
	if err != nil {
		t.Fatal(err)
	}

	if after := snapshotDir(t, parent); !sameOutside(before, after, target) {
		t.Errorf("something changed outside the target:\nbefore %q\nafter  %q", before, after)
	}
	damaged := map[string]bool{}
	for _, d := range rep.Damaged {
		damaged[d.Path] = true
	}
	wantDamaged := []string{"..", ".", "", "a/b", "/etc", "x\x00y", strings.Repeat("n", 256), "../up",
		"dup/s", "handmade", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "nul-target", "weird-kind"}
	for _, p := range wantDamaged {
		if !damaged[p] {
			t.Errorf("%q not reported as damaged", p)
		}
	}
	if len(rep.Damaged) != len(wantDamaged)+2 { // "dup/s" three times
		t.Errorf("damage: %v", rep.Damaged)
	}
	for _, d := range rep.Damaged {
		if d.Path != "handmade" && !errors.Is(d.Err, tree.ErrInvalid) {
			t.Errorf("%q: %v does not wrap tree.ErrInvalid", d.Path, d.Err)
		}
	}

	var got []string
	filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(target, p)
		got = append(got, rel)
		return nil
	})
	want := []string{".", "dup", "esc-abs", "esc-rel", "esc-root", "esc-up", "good", "h9", "handmade", "zz-later"}
	if !slices.Equal(got, want) {
		t.Errorf("target holds %q, want %q", got, want)
	}
	if ino(t, filepath.Join(target, "h9")) != ino(t, filepath.Join(target, "good")) {
		t.Error("h9 is not a hardlink to good")
	}
}

// sameOutside reports whether two snapshotDir results agree outside target.
func sameOutside(before, after map[string]string, target string) bool {
	for p := range after {
		if p == target || strings.HasPrefix(p, target+"/") {
			delete(after, p)
		}
	}
	delete(before, filepath.Dir(target)) // the parent's mtime changes when target is made
	delete(after, filepath.Dir(target))
	return len(before) == len(after) && func() bool {
		for p, d := range before {
			if after[p] != d {
				return false
			}
		}
		return true
	}()
}

// Source errors damage the files and directories they belong to; everything
// else is restored.
func TestRestoreDamagedSource(t *testing.T) {
	s := newSource()
	broken := errors.New("blob damaged")
	badChunk := s.file(t, "bad-chunk", 0o644, append(append(randBytes(4, 100), randBytes(5, 100)...), randBytes(6, 50)...), 100, 0)
	s.fail[badChunk.Chunks[1].ID] = broken
	badList := s.file(t, "bad-list", 0o644, randBytes(7, 400), 100, 1)
	s.fail[badList.Lists[2]] = broken
	short := s.chunk([]byte("only five"))
	badLen := tree.Entry{Name: "bad-len", Kind: tree.File, Mode: 0o644, Size: 20, Chunks: []tree.ChunkRef{{ID: short.ID, Length: 20}}}
	sum := s.file(t, "sum", 0o644, []byte("12345"), 5, 0)
	sum.Size = 8
	badDir := s.dir(t, s.file(t, "unreached", 0o644, []byte("x"), 1, 0))
	s.fail[badDir] = broken
	good1 := s.file(t, "good1", 0o644, randBytes(8, 1000), 300, 0)
	good2 := s.file(t, "good2", 0o644, randBytes(9, 1000), 300, 2)
	root := s.dir(t, good1, badChunk, badList, badLen, dirEntry("bad-dir", 0o700, badDir),
		dirEntry("raw", 0o755, s.rawDir(sum)), good2)

	target := filepath.Join(tempDir(t), "target")
	rep, err := restore.Restore(context.Background(), s, root, "", target, restore.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, d := range rep.Damaged {
		paths = append(paths, d.Path)
	}
	if want := []string{"bad-chunk", "bad-dir", "bad-len", "bad-list", "raw/sum"}; !slices.Equal(paths, want) {
		t.Errorf("damaged %q, want %q: %v", paths, want, rep.Damaged)
	}
	for _, d := range rep.Damaged {
		switch d.Path {
		case "bad-chunk", "bad-dir", "bad-list":
			if !errors.Is(d.Err, broken) {
				t.Errorf("%s: %v", d.Path, d.Err)
			}
		default:
			if !errors.Is(d.Err, restore.ErrMismatch) {
				t.Errorf("%s: %v", d.Path, d.Err)
			}
		}
	}
	c := newChecker(t, s, false)
	c.entry(&good1, "good1", filepath.Join(target, "good1"))
	c.entry(&good2, "good2", filepath.Join(target, "good2"))
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(target, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := s.content(t, &badChunk)
	want := append(append(bytes.Clone(full[:100]), make([]byte, 100)...), full[200:]...)
	if !bytes.Equal(read("bad-chunk"), want) {
		t.Error("bad-chunk: good chunks not at their offsets, or the bad one not zeros")
	}
	if got := read("bad-list"); len(got) != 400 || !bytes.Equal(got[:200], randBytes(7, 200)) || !allZeros(got[200:]) {
		t.Error("bad-list: content before the bad list not kept, or the rest not zeros")
	}
	if got := read("bad-len"); string(got) != "only five"+string(make([]byte, 11)) {
		t.Errorf("bad-len: %q", got)
	}
	if got := read("raw/sum"); string(got) != "12345\x00\x00\x00" {
		t.Errorf("raw/sum: %q", got)
	}
	if des, err := os.ReadDir(filepath.Join(target, "bad-dir")); err != nil || len(des) != 0 {
		t.Errorf("bad-dir: %v %v", des, err)
	}
}

func allZeros(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

func TestRestoreTargetMustBeEmpty(t *testing.T) {
	s := newSource()
	root := s.dir(t, s.file(t, "f", 0o644, []byte("new"), 3, 0))
	parent := tempDir(t)

	full := filepath.Join(parent, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "f"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(parent, "file")
	if err := os.WriteFile(file, []byte("a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{full, file} {
		if _, err := restore.Restore(context.Background(), s, root, "", target, restore.Options{}); !errors.Is(err, restore.ErrTargetNotEmpty) {
			t.Errorf("%s: got %v, want ErrTargetNotEmpty", target, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(full, "f")); string(b) != "old" {
		t.Errorf("non-empty target was written to: %q", b)
	}
	if _, err := restore.Restore(context.Background(), s, root, "", filepath.Join(parent, "no", "such"), restore.Options{}); err == nil {
		t.Error("restore under a missing parent succeeded")
	}

	empty := filepath.Join(parent, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := restore.Restore(context.Background(), s, root, "", empty, restore.Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(empty, "f")); string(b) != "new" {
		t.Errorf("empty target: %q", b)
	}
}

func TestRestoreCancel(t *testing.T) {
	s := newSource()
	var entries []tree.Entry
	for i := range 50 {
		entries = append(entries, s.file(t, "f"+string(rune('a'+i%26))+strings.Repeat("x", i), 0o644, randBytes(uint64(i), 10), 10, 0))
	}
	root := s.dir(t, entries...)
	s.blockChunks = true
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := restore.Restore(ctx, s, root, "", filepath.Join(tempDir(t), "target"), restore.Options{Workers: 4})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to stop", d)
	}

	// Already cancelled: nothing happens.
	target := filepath.Join(tempDir(t), "target")
	if _, err := restore.Restore(ctx, s, root, "", target, restore.Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestRestoreOwners(t *testing.T) {
	needRoot(t, "chown to other users")
	s := newSource()
	own := func(e tree.Entry, uid uint32) tree.Entry { e.UID, e.GID = uid, uid+1; return e }
	sub := s.dir(t, own(s.file(t, "f", 0o644, []byte("f"), 1, 0), 3000))
	root := s.dir(t,
		own(s.file(t, "setuid", 0o4755, []byte("x"), 1, 0), 1000),
		own(s.file(t, "setgid", 0o2711, []byte("y"), 1, 0), 1001),
		own(dirEntry("d", 0o2770, sub), 2000),
		own(tree.Entry{Name: "fifo", Kind: tree.FIFO, Mode: 0o600}, 2001),
		own(tree.Entry{Name: "sym", Kind: tree.Symlink, Mode: 0o777, Target: "setuid"}, 2002),
	)
	target := filepath.Join(tempDir(t), "target")
	rep, err := restore.Restore(context.Background(), s, root, "", target, restore.Options{Owners: true})
	if err != nil || len(rep.Damaged) != 0 {
		t.Fatal(err, rep)
	}
	newChecker(t, s, true).dir(root, "", target)
}

// Random trees, restored and compared with a walk of the result.
func TestRestoreRandomTrees(t *testing.T) {
	parent := tempDir(t)
	needUserXattrs(t, parent)
	isRoot := os.Geteuid() == 0
	for seed := range uint64(50) {
		s := newSource()
		g := &gen{r: rand.New(rand.NewPCG(seed, 2)), s: s, root: isRoot}
		root := g.dir(t, "", 0)
		target := filepath.Join(parent, fmt.Sprint(seed))
		rep, err := restore.Restore(context.Background(), s, root, "", target,
			restore.Options{Owners: isRoot, Workers: 1 + int(seed%4)})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(rep.Damaged) != 0 {
			t.Fatalf("seed %d: damage %v", seed, rep.Damaged)
		}
		newChecker(t, s, isRoot).dir(root, "", target)
		if t.Failed() {
			t.Fatalf("seed %d differs", seed)
		}
	}
}

type gen struct {
	r     *rand.Rand
	s     *fakeSource
	root  bool
	files []string // snapshot paths of files so far, in depth-first order
}

func (g *gen) name() string {
	const alphabet = "abcxyz.- \n\\\xff\xe9~"
	for {
		b := make([]byte, 1+g.r.IntN(12))
		for i := range b {
			b[i] = alphabet[g.r.IntN(len(alphabet))]
		}
		if n := string(b); tree.ValidName(n) == nil {
			return n
		}
	}
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func (g *gen) dir(t *testing.T, prefix string, depth int) tree.ID {
	names := map[string]bool{}
	for range g.r.IntN(9) {
		names[g.name()] = true
	}
	var entries []tree.Entry
	for _, name := range slices.Sorted(maps.Keys(names)) {
		path := join(prefix, name)
		var e tree.Entry
		switch k := g.r.IntN(100); {
		case k < 15 && depth < 3:
			e = dirEntry(name, pick(g.r, uint32(0o755), 0o700, 0o2755, 0o1777, 0o555, 0o500), tree.ID{})
			e.Subtree = g.dir(t, path, depth+1)
		case k < 25:
			e = tree.Entry{Name: name, Kind: tree.Symlink, Mode: 0o777,
				Target: pick(g.r, "/", "..", "../../etc", "/etc/passwd", "x y", "a/b/c", "\xff")}
		case k < 35 && len(g.files) > 0:
			entries = append(entries, tree.Entry{Name: name, Kind: tree.Hardlink, Target: pick(g.r, g.files...)})
			continue
		case k < 40:
			e = tree.Entry{Name: name, Kind: tree.FIFO, Mode: pick(g.r, uint32(0o600), 0o644, 0o1666)}
		case k < 43:
			e = tree.Entry{Name: name, Kind: tree.Socket, Mode: 0o755}
		case k < 46 && g.root:
			e = tree.Entry{Name: name, Kind: pick(g.r, tree.CharDev, tree.BlockDev), Mode: 0o600,
				Major: uint32(g.r.IntN(300)), Minor: uint32(g.r.IntN(1 << 20))}
		default:
			modes := []uint32{0o644, 0o600, 0o4755, 0o2755, 0o444, 0o1755, 0o640}
			if g.root {
				modes = append(modes, 0o000, 0o4000)
			}
			e = g.s.file(t, name, pick(g.r, modes...), g.content(), 1+g.r.IntN(4096), pick(g.r, 0, 0, 1, 3))
			g.files = append(g.files, path)
		}
		e.MtimeSec = g.r.Int64N(5_000_000_000) - 1_000_000_000
		e.MtimeNsec = uint32(g.r.IntN(1e9))
		if g.root {
			e.UID, e.GID = uint32(g.r.IntN(70000)), uint32(g.r.IntN(70000))
		}
		if (e.Kind == tree.File || e.Kind == tree.Dir) && g.r.IntN(4) == 0 {
			for i := range 1 + g.r.IntN(3) {
				x := tree.Xattr{Name: "user.x" + string(rune('0'+i))}
				if v := g.r.IntN(20); v > 0 {
					x.Value = randBytes(g.r.Uint64(), v)
				}
				e.Xattrs = append(e.Xattrs, x)
			}
		}
		entries = append(entries, e)
	}
	return g.s.dir(t, entries...)
}

// content is a file's data: empty, small or up to 40 KiB, with zero runs.
func (g *gen) content() []byte {
	n := pick(g.r, 0, 1+g.r.IntN(100), g.r.IntN(40<<10))
	b := randBytes(g.r.Uint64(), n)
	for range g.r.IntN(3) {
		if n > 0 {
			off := g.r.IntN(n)
			clear(b[off:min(n, off+g.r.IntN(8<<10))])
		}
	}
	return b
}

// BenchmarkRestore restores 64 files of 1 MiB in 64 KiB chunks.
func BenchmarkRestore(b *testing.B) {
	s := newSource()
	var entries []tree.Entry
	for i := range 64 {
		entries = append(entries, s.file(b, fmt.Sprintf("f%02d", i), 0o644, randBytes(uint64(i), 1<<20), 64<<10, 0))
	}
	root := s.dir(b, entries...)
	parent := b.TempDir()
	b.SetBytes(64 << 20)
	for i := 0; b.Loop(); i++ {
		target := filepath.Join(parent, fmt.Sprint(i))
		if _, err := restore.Restore(context.Background(), s, root, "", target, restore.Options{}); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(target)
	}
}

// TestRestoreWritten: Written gets the hash of every regular file restored
// intact, with zero chunks (holes) hashed as zeros, and none for a
// damaged file.
func TestRestoreWritten(t *testing.T) {
	s := newSource()
	broken := errors.New("blob damaged")
	holes := append(append(randBytes(1, 100), make([]byte, 100)...), randBytes(2, 30)...)
	withHoles := s.file(t, "holes", 0o644, holes, 100, 0)
	bad := s.file(t, "bad", 0o644, randBytes(3, 300), 100, 0)
	s.fail[bad.Chunks[1].ID] = broken
	listed := s.file(t, "listed", 0o644, randBytes(4, 1000), 100, 3)
	empty := s.file(t, "empty", 0o644, nil, 100, 0)
	root := s.dir(t, withHoles, bad, dirEntry("d", 0o755, s.dir(t, listed)), empty)

	var mu sync.Mutex
	got := map[string]string{}
	target := filepath.Join(tempDir(t), "target")
	_, err := restore.Restore(context.Background(), s, root, "", target, restore.Options{
		Workers: 2,
		Hash:    sha256.New,
		Written: func(rel string, size int64, sum []byte) {
			mu.Lock()
			got[rel] = fmt.Sprintf("%d %x", size, sum)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, rel := range []string{"holes", "d/listed", "empty"} {
		b, err := os.ReadFile(filepath.Join(target, rel))
		if err != nil {
			t.Fatal(err)
		}
		want[rel] = fmt.Sprintf("%d %x", len(b), sha256.Sum256(b))
	}
	if !maps.Equal(got, want) {
		t.Errorf("Written got\n%v\nwant\n%v", got, want)
	}
}
