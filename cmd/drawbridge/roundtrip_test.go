//go:build linux

package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"drawbridge/vault/fixture"
)

// TestRoundTrip backs up the nasty tree and random trees and restores them
// identical: content, kinds, modes, owners, times, xattrs, hard links.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	src := t.TempDir()
	nasty := filepath.Join(src, "nasty")
	fixture.Nasty(nasty)
	var randoms []string
	for seed := uint64(1); seed <= 20; seed++ {
		d := filepath.Join(src, fmt.Sprintf("random-%02d", seed))
		fixture.Random(d, seed)
		randoms = append(randoms, d)
	}
	v.backup("nasty", nasty)
	v.backup("random", randoms...)
	// One snapshot per random tree as well, each restored on its own.
	for i, d := range randoms[:3] {
		v.backup(fmt.Sprintf("r%d", i), d)
	}

	v.restoreCompare("nasty/latest", nasty)
	v.restoreCompare("random/latest", randoms...)
	for i, d := range randoms[:3] {
		v.restoreCompare(fmt.Sprintf("r%d/latest", i), d)
	}
	// latest is the newest snapshot of any source.
	v.restoreCompare("latest", randoms[2])

	// A subdirectory: its content lands directly in the target, whose own
	// metadata restore leaves alone.
	sub := filepath.Join(nasty, "a")
	t2 := filepath.Join(t.TempDir(), "sub")
	v.mustRun("restore", "nasty/latest:"+sub, "--target", t2)
	if diffs := compareContents(sub, t2); len(diffs) > 0 {
		t.Errorf("restore of %s differs:\n%s", sub, strings.Join(diffs, "\n"))
	}

	// Flags before the snapshot, and --target=DIR.
	t3 := filepath.Join(t.TempDir(), "flags-first")
	v.mustRun("restore", "--target", t3, "nasty/latest")
	if diffs := fixture.Compare(nasty, filepath.Join(t3, nasty)); len(diffs) > 0 {
		t.Errorf("restore --target T SNAP differs:\n%s", strings.Join(diffs, "\n"))
	}
	t4 := filepath.Join(t.TempDir(), "flags-eq")
	v.mustRun("restore", "--target="+t4, "nasty/latest:"+sub, "--store="+v.dir)
	if diffs := compareContents(sub, t4); len(diffs) > 0 {
		t.Errorf("restore --target=T SNAP:PATH differs:\n%s", strings.Join(diffs, "\n"))
	}

	// The target must be missing or empty.
	if r := v.run("restore", "nasty/latest", "--target", t3); r.code != 1 {
		t.Errorf("restore into a non-empty target: want exit 1:\n%s", r)
	}
	v.verifyOK()
}

// TestDedup backs up the same content twice, under another source (so no
// file cache helps): the store grows by less than 1%.
func TestDedup(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	src := t.TempDir()
	tree := filepath.Join(src, "tree")
	dataTree(t, tree, 11, 24<<20, 3<<20)
	fixture.Nasty(filepath.Join(tree, "nasty"))
	for seed := uint64(30); seed < 35; seed++ {
		fixture.Random(filepath.Join(tree, fmt.Sprintf("random-%d", seed)), seed)
	}
	v.backup("first", tree)
	before := storeSize(t, v.dir)
	second := v.backup("second", tree)
	after := storeSize(t, v.dir)
	grew := after - before
	t.Logf("store %d bytes after the first backup; the second added %d bytes (%.3f%%), stored_bytes %d",
		before, grew, 100*float64(grew)/float64(before), second.StoredBytes)
	if grew*100 >= before {
		t.Errorf("the same tree again grew the store by %d of %d bytes (>= 1%%)", grew, before)
	}
	// The same content at another path, in a third source.
	moved := filepath.Join(src, "moved")
	if err := os.Rename(tree, moved); err != nil {
		t.Fatal(err)
	}
	v.backup("third", moved)
	grew = storeSize(t, v.dir) - after
	if grew*100 >= before {
		t.Errorf("the same tree at another path grew the store by %d of %d bytes (>= 1%%)", grew, before)
	}
	v.restoreCompare("third/latest", moved)
}

// Disk image for TestDedupImage: regions of 1 to 16 MiB of random bytes,
// zeros or text.
const (
	imageSize  = 1 << 30
	imageBlock = 64 << 10
)

func writeImage(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pick := rand.New(rand.NewPCG(2026, 11))
	r := seeded(2026, 11)
	buf := make([]byte, 16<<20)
	for off := int64(0); off < imageSize; {
		n := int64(1+pick.IntN(256)) * imageBlock
		n = min(n, imageSize-off)
		p := buf[:n]
		switch k := pick.IntN(10); {
		case k < 4:
			r.Read(p)
		case k < 7:
			clear(p)
		default:
			fillText(r, p)
		}
		if _, err := f.Write(p); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDedupImage changes 2% of a 1 GiB disk image in scattered 64 KiB spots
// and inserts 1 MiB near its start: the second backup stores at most three
// times the changed bytes.
func TestDedupImage(t *testing.T) {
	if testing.Short() {
		t.Skip("the 1 GiB image test does not run with -short")
	}
	v := newVault(t)
	src := t.TempDir()
	img := filepath.Join(src, "disk.img")
	writeImage(t, img)
	first := v.backup("image", img)
	if first.Bytes != imageSize {
		t.Fatalf("first backup read %d bytes, want %d", first.Bytes, imageSize)
	}

	// The changed copy: the first 4 MiB, 1 MiB of new bytes, the rest;
	// then 2% of the original rewritten in 64 KiB spots, 4 KiB aligned,
	// that neither overlap nor touch the insertion.
	const insertAt, insertLen = 4 << 20, 1 << 20
	spots := (imageSize/50 + imageBlock - 1) / imageBlock // 2%, rounded up
	changed := int64(spots*imageBlock + insertLen)
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	next := img + ".new"
	out, err := os.Create(next)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	r := seeded(2026, 12)
	ins := make([]byte, insertLen)
	r.Read(ins)
	if _, err := io.CopyN(out, in, insertAt); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write(ins); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	pick := rand.New(rand.NewPCG(2026, 13))
	slots := imageSize / imageBlock / 2 // even 64 KiB slots, spots up to 60 KiB past their start
	spot := make([]byte, imageBlock)
	for _, s := range pick.Perm(slots) {
		if spots == 0 {
			break
		}
		off := int64(2*s)*imageBlock + int64(pick.IntN(16))*4096
		if off+imageBlock > insertAt-imageBlock && off < insertAt+imageBlock || off+imageBlock > imageSize {
			continue
		}
		if off >= insertAt {
			off += insertLen
		}
		r.Read(spot)
		if _, err := out.WriteAt(spot, off); err != nil {
			t.Fatal(err)
		}
		spots--
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, img); err != nil {
		t.Fatal(err)
	}
	second := v.backup("image", img)
	if second.Bytes != imageSize+insertLen {
		t.Fatalf("second backup read %d bytes, want %d", second.Bytes, imageSize+insertLen)
	}
	ratio := float64(second.StoredBytes) / float64(changed)
	t.Logf("changed %d bytes; second backup: new_bytes %d, stored_bytes %d: %.2fx the changed bytes (%.2f%% of the image); first stored %d",
		changed, second.NewBytes, second.StoredBytes, ratio, 100*float64(second.StoredBytes)/imageSize, first.StoredBytes)
	if second.StoredBytes > 3*changed {
		t.Errorf("second backup stored %d bytes, more than 3x the %d changed bytes (%.2fx)", second.StoredBytes, changed, ratio)
	}
}

// TestIndexIsCache deletes the index: rebuilt from the packs alone, the
// store restores and verifies deeply.
func TestIndexIsCache(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	src := t.TempDir()
	nasty := filepath.Join(src, "nasty")
	fixture.Nasty(nasty)
	data := filepath.Join(src, "data")
	dataTree(t, data, 21, 20<<20, 2<<20)
	v.backup("a", nasty)
	v.backup("b", data)

	if err := os.RemoveAll(filepath.Join(v.dir, "index")); err != nil {
		t.Fatal(err)
	}
	r := v.runNoPass("index", "rebuild")
	if r.code != 0 {
		t.Fatalf("index rebuild:\n%s", r)
	}
	if n := len(packs(t, v.dir)); !strings.Contains(r.stdout, fmt.Sprint(n)) {
		t.Errorf("index rebuild should report the %d packs:\n%s", n, r)
	}
	v.restoreCompare("a/latest", nasty)
	v.restoreCompare("b/latest", data)
	if r := v.run("verify", "--deep"); r.code != 0 {
		t.Fatalf("verify --deep after index rebuild:\n%s", r)
	}

	// Deleted again, any command that opens the store recovers it.
	if err := os.RemoveAll(filepath.Join(v.dir, "index")); err != nil {
		t.Fatal(err)
	}
	v.restoreCompare("b/latest", data)
	if r := v.run("verify", "--deep"); r.code != 0 {
		t.Fatalf("verify --deep without an index:\n%s", r)
	}
	// A backup after the rebuild still deduplicates against the old packs.
	b := v.backup("c", data)
	if b.NewBytes*100 > b.Bytes {
		t.Errorf("backup after index rebuild stored %d new bytes of %d", b.NewBytes, b.Bytes)
	}
}
