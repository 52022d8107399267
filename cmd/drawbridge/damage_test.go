//go:build linux

package main

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"drawbridge/vault/fixture"
)

// packRecord is one blob record of a pack file, read from the plain fields
// format.md §5 describes.
type packRecord struct {
	off, len int64
	typ      byte
	id       string
}

const blobHeaderLen = 68 // 'B' type flags 0 raw stored id[32] nonce[24]

func parsePack(t testing.TB, b []byte) []packRecord {
	t.Helper()
	if len(b) < 12 || string(b[:8]) != "DBPACK01" {
		t.Fatal("not a pack")
	}
	off := int64(8 + 4 + binary.LittleEndian.Uint32(b[8:]) + 8)
	var out []packRecord
	for off < int64(len(b)) && b[off] == 'B' {
		stored := int64(binary.LittleEndian.Uint32(b[off+8:]))
		n := blobHeaderLen + stored + 8
		out = append(out, packRecord{off: off, len: n, typ: b[off+1], id: hex.EncodeToString(b[off+12 : off+44])})
		off += n
	}
	if off >= int64(len(b)) || b[off] != 'E' {
		t.Fatalf("pack: no trailer after %d records", len(out))
	}
	return out
}

// chunkIDKey reads the store's id key from keys.json: a chunk's id is the
// BLAKE3 of its plaintext keyed with it.
func chunkIDKey(t testing.TB, store string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(store, "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		IDKey []byte `json:"id_key"`
	}
	if err := json.Unmarshal(b, &k); err != nil || len(k.IDKey) != 32 {
		t.Fatalf("keys.json id_key: %v", err)
	}
	return k.IDKey
}

func chunkID(key, data []byte) string {
	h, _ := blake3.NewKeyed(key)
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// refsOf maps each pack id to the snapshots whose reference list names it.
func refsOf(t testing.TB, store string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	ents, err := os.ReadDir(filepath.Join(store, "refs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(store, "refs", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Fields(string(b)) {
			out[line] = append(out[line], e.Name())
		}
	}
	return out
}

// damagedPaths parses restore's "damaged: PATH: error" lines.
func damagedPaths(stderr string) []string {
	var out []string
	for _, line := range strings.Split(stderr, "\n") {
		rest, ok := strings.CutPrefix(line, "damaged: ")
		if !ok {
			continue
		}
		p, _, _ := strings.Cut(rest, ": ")
		out = append(out, p)
	}
	return out
}

// TestDamage damages one pack in four ways. verify, without the passphrase,
// names the pack and the snapshots that use it; a restore brings back every
// file the damage spares and names the others.
func TestDamage(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	src := t.TempDir()

	// Small files of unique random content: each is exactly one chunk, so
	// its chunk id is the keyed hash of the whole file.
	var info struct {
		Chunker struct{ Min int } `json:"chunker"`
	}
	sj, err := os.ReadFile(filepath.Join(v.dir, "store.json"))
	if err != nil || json.Unmarshal(sj, &info) != nil || info.Chunker.Min < 4096 {
		t.Fatalf("store.json: %v %s", err, sj)
	}
	orig, cp := filepath.Join(src, "orig"), filepath.Join(src, "copy")
	r := seeded(81, 0)
	contents := make([][]byte, 300)
	for i := range contents {
		contents[i] = make([]byte, 1+i*37%(info.Chunker.Min-1))
		r.Read(contents[i])
	}
	// The snapshot to damage holds the same content as the first under
	// other names and times: its data is all in the first backup's packs,
	// while its own trees are in packs of their own, so damage to a data
	// pack spares its directories.
	key := chunkIDKey(t, v.dir)
	fileOf := map[string]string{} // chunk id -> path in copy
	for _, dir := range []string{orig, filepath.Join(cp, "sub")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range contents {
		if err := os.WriteFile(filepath.Join(orig, fmt.Sprintf("o%03d", i)), c, 0o644); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(cp, fmt.Sprintf("c%03d", i))
		if i%3 == 2 {
			p = filepath.Join(cp, "sub", fmt.Sprintf("c%03d", i))
		}
		if err := os.WriteFile(p, c, 0o640); err != nil {
			t.Fatal(err)
		}
		when := time.Unix(1700000000+int64(i), 0)
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
		fileOf[chunkID(key, c)] = p
	}
	other := filepath.Join(src, "other")
	dataTree(t, other, 82, 1<<20, 200<<10)

	s0 := v.backup("orig", orig)
	dataPacks := packs(t, v.dir)
	s1 := v.backup("copy", cp)
	if s1.NewBytes >= s0.NewBytes/4 {
		t.Fatalf("the copy stored %d new bytes: its data should be in the first snapshot's packs", s1.NewBytes)
	}
	s2 := v.backup("other", other)
	v.verifyOK()

	// The data pack with the most of the copy's chunks.
	var pid string
	var recs []packRecord
	for id, p := range dataPacks {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rs := parsePack(t, b)
		n := 0
		for _, rec := range rs {
			if fileOf[rec.id] != "" {
				n++
			}
		}
		if n > 0 && (recs == nil || n > len(recs)) {
			pid, recs = id, nil
			for _, rec := range rs {
				if fileOf[rec.id] != "" && rec.typ == 1 {
					recs = append(recs, rec)
				}
			}
		}
	}
	if len(recs) < 4 {
		t.Fatalf("pack %s holds only %d of the copy's chunks", pid, len(recs))
	}
	affected := refsOf(t, v.dir)[pid]
	sort.Strings(affected)
	if !slices.Contains(affected, s0.ID) || !slices.Contains(affected, s1.ID) || slices.Contains(affected, s2.ID) {
		t.Fatalf("refs/ say pack %s is used by %v; want the first two snapshots only", pid, affected)
	}
	// Two neighbouring data records, as near the middle as there are.
	mid := -1
	for i := len(recs) / 2; i+1 < len(recs) && mid < 0; i++ {
		if recs[i].off+recs[i].len == recs[i+1].off {
			mid = i
		}
	}
	for i := 0; i+1 < len(recs) && mid < 0; i++ {
		if recs[i].off+recs[i].len == recs[i+1].off {
			mid = i
		}
	}
	if mid < 0 {
		t.Fatal("no two neighbouring data records")
	}
	a, b := recs[mid], recs[mid+1]
	filesFrom := func(recs []packRecord) []string {
		var out []string
		for _, rec := range recs {
			out = append(out, fileOf[rec.id])
		}
		return out
	}

	cases := []struct {
		name    string
		damage  func(t *testing.T, p string)
		damaged []string
	}{
		{"flipped bit", func(t *testing.T, p string) {
			buf := readFile(t, p)
			buf[a.off+blobHeaderLen+(a.len-blobHeaderLen-8)/2] ^= 0x10
			writeFile(t, p, buf)
		}, filesFrom(recs[mid : mid+1])},
		{"zeroed range", func(t *testing.T, p string) {
			buf := readFile(t, p)
			clear(buf[b.off-40 : b.off+40])
			writeFile(t, p, buf)
		}, filesFrom(recs[mid : mid+2])},
		{"truncated", func(t *testing.T, p string) {
			if err := os.Truncate(p, a.off+a.len/2); err != nil {
				t.Fatal(err)
			}
		}, filesFrom(recs[mid:])},
		{"deleted", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}, filesFrom(recs)},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "-"), func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "store")
			copyTree(t, v.dir, dir)
			dv := v.withStore(t, dir)
			p := filepath.Join(dir, "packs", pid[:2], pid+".pack")
			fixture.Unseal(p)
			c.damage(t, p)

			r := dv.runNoPass("verify")
			out := r.stdout + r.stderr
			if r.code != 1 {
				t.Errorf("verify of a store with a %s pack: want exit 1:\n%s", c.name, r)
			}
			if !strings.Contains(out, pid) {
				t.Errorf("verify does not name the damaged pack %s:\n%s", pid, r)
			}
			for _, id := range affected {
				if !strings.Contains(out, id[:12]) {
					t.Errorf("verify does not name snapshot %s, which uses pack %s:\n%s", id[:12], pid, r)
				}
			}
			if strings.Contains(out, s2.ID[:12]) {
				t.Errorf("verify names snapshot %s, which does not use pack %s:\n%s", s2.ID[:12], pid, r)
			}
			if r := dv.run("verify", "--deep"); r.code != 1 {
				t.Errorf("verify --deep: want exit 1:\n%s", r)
			}

			target := filepath.Join(t.TempDir(), "restore")
			r = dv.run("restore", s1.ID[:8], "--target", target)
			if r.code != 1 {
				t.Errorf("restore of the damaged snapshot: want exit 1:\n%s", r)
			}
			named := map[string]bool{}
			for _, p := range damagedPaths(r.stderr) {
				named[filepath.Base(p)] = true
			}
			want := map[string]bool{}
			for _, p := range c.damaged {
				want[filepath.Base(p)] = true
				if !named[filepath.Base(p)] {
					t.Errorf("restore does not name the damaged file %s", p)
				}
			}
			for n := range named {
				if !want[n] {
					t.Errorf("restore names %s as damaged; only %d files are", n, len(want))
				}
			}
			// Every other file is restored identical.
			var bad []string
			for _, d := range fixture.Compare(cp, filepath.Join(target, cp)) {
				var rel string
				if _, err := fmt.Sscanf(d, "%q", &rel); err == nil && want[filepath.Base(rel)] {
					continue
				}
				bad = append(bad, d)
			}
			if len(bad) > 0 {
				t.Errorf("restore of the undamaged files differs:\n%s\n%s", strings.Join(bad, "\n"), r)
			}
			// The unaffected snapshot restores in full.
			dv.restoreCompare(s2.ID[:8], other)
		})
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestJournalTamper changes the journal in the ways someone covering their
// tracks would: verify notices every one.
func TestJournalTamper(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	src := t.TempDir()
	tree := filepath.Join(src, "tree")
	fixture.Random(tree, 91)
	v.backup("one", tree)
	fixture.Random(filepath.Join(tree, "more"), 92)
	v.backup("one", tree)
	v.backup("two", tree)
	v.backup("three", tree)
	v.verifyOK()
	recs, err := filepath.Glob(filepath.Join(v.dir, "journal", "*"))
	if err != nil || len(recs) < 5 {
		t.Fatalf("journal: %d records (%v)", len(recs), err)
	}
	sort.Strings(recs)
	name := func(i int) string { return filepath.Base(recs[i]) }
	last := len(recs) - 1
	midRec := len(recs) / 2

	editByte := func(i int, at func(n int) int) func(t *testing.T, j string) {
		return func(t *testing.T, j string) {
			p := filepath.Join(j, name(i))
			b := readFile(t, p)
			b[at(len(b))] ^= 0x01
			writeFile(t, p, b)
		}
	}
	body := func(n int) int { return 12 + (n-12-64)/2 }
	sig := func(n int) int { return n - 10 }
	magic := func(int) int { return 3 }
	length := func(int) int { return 8 }
	remove := func(i int) func(t *testing.T, j string) {
		return func(t *testing.T, j string) {
			if err := os.Remove(filepath.Join(j, name(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, journalDir string)
	}{
		{"edit-body-first", editByte(0, body)},
		{"edit-body-middle", editByte(midRec, body)},
		{"edit-body-last", editByte(last, body)},
		{"edit-signature", editByte(midRec, sig)},
		{"edit-magic", editByte(midRec, magic)},
		{"edit-length", editByte(last, length)},
		{"delete-first", remove(0)},
		{"delete-middle", remove(midRec)},
		{"delete-last", remove(last)},
		{"swap", func(t *testing.T, j string) {
			a, b := filepath.Join(j, name(1)), filepath.Join(j, name(2))
			if err := os.Rename(a, a+".x"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(b, a); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(a+".x", b); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncate-last", func(t *testing.T, j string) {
			if err := os.Truncate(filepath.Join(j, name(last)), 40); err != nil {
				t.Fatal(err)
			}
		}},
		{"stray-file", func(t *testing.T, j string) {
			writeFile(t, filepath.Join(j, "notes"), []byte("x"))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "store")
			copyTree(t, v.dir, dir)
			jv := v.withStore(t, dir)
			j := filepath.Join(dir, "journal")
			fixture.Unseal(j)
			c.tamper(t, j)
			if r := jv.runNoPass("verify"); r.code != 1 {
				t.Errorf("verify after %s: want exit 1:\n%s", c.name, r)
			}
		})
	}
	// The untouched original still verifies.
	v.verifyOK()
}
