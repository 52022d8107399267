package pack

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"drawbridge/vault/seal"
	"drawbridge/vault/vfs"
)

func testKeys(t testing.TB) (*seal.Keys, *seal.Opener) {
	k, err := seal.NewKeys([]byte("p"), seal.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	o, err := k.Unlock([]byte("p"))
	if err != nil {
		t.Fatal(err)
	}
	return k, o
}

type blob struct {
	typ   Type
	plain []byte
}

func writePack(t testing.TB, fsys vfs.FS, k *seal.Keys, blobs []blob) (ID, []Entry) {
	t.Helper()
	for _, d := range []string{"tmp", "packs"} {
		fsys.MkdirAll(d, 0o700)
	}
	w, err := NewWriter(fsys, "tmp", k.Recipient)
	if err != nil {
		t.Fatal(err)
	}
	fsys.MkdirAll("packs/"+w.ID().String()[:2], 0o700)
	comp, _ := NewCompressor()
	for _, b := range blobs {
		data, c := comp.Compress(b.plain)
		if _, err := w.Add(b.typ, k.IDKey.Sum(b.plain), len(b.plain), data, c); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return w.ID(), entries
}

func sampleBlobs() []blob {
	r := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 70000)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	return []blob{
		{Data, bytes.Repeat([]byte("compressible text "), 4000)},
		{Data, random},
		{Tree, []byte("t")},
		{List, nil},
	}
}

func readAll(t testing.TB, fsys vfs.FS, name string) []byte {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	fsys := vfs.NewMem()
	k, o := testKeys(t)
	blobs := sampleBlobs()
	id, entries := writePack(t, fsys, k, blobs)
	b := readAll(t, fsys, id.Path())
	res := Scan(id, b)
	if res.Damaged() || len(res.Entries) != len(blobs) {
		t.Fatalf("scan of a good pack: damaged=%v entries=%d", res.Damaged(), len(res.Entries))
	}
	key, err := o.Unwrap(res.Header.Wrapped)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := NewDecompressor()
	ids := k.IDKey.Hasher()
	for i, e := range entries {
		if res.Entries[i] != e {
			t.Fatalf("entry %d: scan %+v, writer %+v", i, res.Entries[i], e)
		}
		rec, err := ReadRecord(bytes.NewReader(b), e)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := Open(rec, key, ids, dec, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(plain, blobs[i].plain) {
			t.Fatalf("blob %d differs", i)
		}
	}
	if !bytes.Contains(b, []byte("age-encryption.org/v1")) {
		t.Fatal("header does not hold an age-wrapped key")
	}
	if bytes.Contains(b, []byte("compressible text")) {
		t.Fatal("plaintext in pack")
	}
}

func TestScanFindsDamage(t *testing.T) {
	fsys := vfs.NewMem()
	k, _ := testKeys(t)
	id, entries := writePack(t, fsys, k, sampleBlobs())
	good := readAll(t, fsys, id.Path())
	cases := map[string]func([]byte) []byte{
		"flip in blob 1": func(b []byte) []byte { b[entries[1].Offset+100] ^= 1; return b },
		"zero range":     func(b []byte) []byte { copy(b[entries[0].Offset+10:], make([]byte, 500)); return b },
		"truncate":       func(b []byte) []byte { return b[:entries[2].Offset+5] },
		"flip header":    func(b []byte) []byte { b[20] ^= 0x80; return b },
		"flip trailer":   func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
	}
	for name, mutate := range cases {
		b := mutate(bytes.Clone(good))
		res := Scan(id, b)
		if !res.Damaged() {
			t.Errorf("%s: not reported", name)
		}
	}
	// One bad blob costs one blob: the others are still found.
	b := bytes.Clone(good)
	b[entries[1].Offset+100] ^= 1
	res := Scan(id, b)
	if len(res.Entries) != len(entries)-1 || len(res.Damage) != 1 {
		t.Fatalf("resync: %d entries, %d damage ranges", len(res.Entries), len(res.Damage))
	}
	if _, err := ReadRecord(bytes.NewReader(b), entries[1]); !errors.Is(err, ErrDamaged) {
		t.Fatalf("ReadRecord of a damaged blob: %v", err)
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	fsys := vfs.NewMem()
	k, o := testKeys(t)
	id, entries := writePack(t, fsys, k, sampleBlobs())
	b := readAll(t, fsys, id.Path())
	h, _ := ParseHeader(b)
	key, _ := o.Unwrap(h.Wrapped)
	dec, _ := NewDecompressor()
	rec, _ := ReadRecord(bytes.NewReader(b), entries[0])
	rec.Sealed = bytes.Clone(rec.Sealed)
	rec.Sealed[3] ^= 1
	if _, err := Open(rec, key, k.IDKey.Hasher(), dec, nil); !errors.Is(err, ErrDamaged) {
		t.Fatalf("tampered blob opened: %v", err)
	}
}

func TestDecompressCaps(t *testing.T) {
	comp, _ := NewCompressor()
	dec, _ := NewDecompressor()
	big := make([]byte, 1<<20)
	c, ok := comp.Compress(big)
	if !ok {
		t.Fatal("zeros did not compress")
	}
	if _, err := dec.Decompress(c, 1000); err == nil {
		t.Fatal("output longer than recorded accepted")
	}
	if _, err := dec.Decompress(c, MaxRaw+1); err == nil {
		t.Fatal("raw above cap accepted")
	}
	out, err := dec.Decompress(c, len(big))
	if err != nil || len(out) != len(big) {
		t.Fatal(err)
	}
}

func FuzzScan(f *testing.F) {
	fsys := vfs.NewMem()
	k, _ := testKeys(f)
	id, _ := writePack(f, fsys, k, sampleBlobs()[2:])
	f.Add(readAll(f, fsys, id.Path()))
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		res := Scan(ID{}, b)
		for _, e := range res.Entries {
			if e.Offset+uint64(e.Length) > uint64(len(b)) {
				t.Fatal("entry past the end")
			}
		}
		ParseRecord(b)
		ParseHeader(b)
	})
}
