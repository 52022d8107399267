package tree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the committed fuzz seed corpora under testdata/fuzz")

func id(s string) (i ID) {
	copy(i[:], s)
	return i
}

// sample holds one entry of every kind, with names that are not UTF-8 or hold
// spaces and newlines.
func sample() *Tree {
	return &Tree{Entries: []Entry{
		{Name: " lead space", Kind: File, Mode: 0o644, UID: 1000, GID: 1000, User: "alice", Group: "staff",
			MtimeSec: 1_700_000_000, MtimeNsec: 123_456_789, Size: 5,
			Chunks: []ChunkRef{{ID: id("c1"), Length: 2}, {ID: id("c2"), Length: 3}}},
		{Name: "bdev", Kind: BlockDev, Mode: 0o660, Major: 8, Minor: 1},
		{Name: "big", Kind: File, Mode: 0o4755, Size: 1 << 40, Layout: LayoutIndirect,
			Lists: []ID{id("l1"), id("l2")}},
		{Name: "cdev", Kind: CharDev, Mode: 0o666, Major: 1, Minor: 3},
		{Name: "dir", Kind: Dir, Mode: 0o1777, MtimeSec: -1, MtimeNsec: 999_999_999, Subtree: id("t1"),
			Xattrs: []Xattr{{Name: "user.a", Value: []byte("1")}, {Name: "user.b"}}},
		{Name: "empty", Kind: File, Mode: 0o600},
		{Name: "fifo", Kind: FIFO, Mode: 0o600},
		{Name: "link", Kind: Hardlink, Target: "dir/sub/ file"},
		{Name: "new\nline", Kind: Symlink, Mode: 0o777, Target: "../../etc/passwd"},
		{Name: "sock", Kind: Socket, Mode: 0o755, UID: 0xffffffff, GID: 0xfffffffe},
		{Name: "\xff\xfe not utf-8", Kind: Symlink, Mode: 0o777, Target: "/abs/\xff"},
	}}
}

func TestRoundTrip(t *testing.T) {
	big := &Tree{Entries: []Entry{{
		Name: strings.Repeat("n", MaxNameLen), Kind: File, Size: MaxChunkLength,
		Chunks: []ChunkRef{{ID: id("z"), Length: MaxChunkLength}},
		Xattrs: []Xattr{{Name: strings.Repeat("x", MaxNameLen), Value: bytes.Repeat([]byte{7}, MaxXattrValue)}},
	}}}
	tests := map[string]*Tree{
		"empty":  {},
		"sample": sample(),
		"limits": big,
	}
	for _, e := range sample().Entries {
		tests["only "+e.Kind.String()+" "+e.Name] = &Tree{Entries: []Entry{e}}
	}
	for name, tr := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := tr.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.Entries) == 0 {
				tr.Entries = []Entry{}
			}
			if !reflect.DeepEqual(got, tr) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tr)
			}
			b2, err := got.Encode()
			if err != nil || !bytes.Equal(b, b2) {
				t.Fatalf("re-encoding differs (err %v)", err)
			}
		})
	}
}

func TestEncodeRejects(t *testing.T) {
	file := func(name string) Entry { return Entry{Name: name, Kind: File} }
	tests := map[string][]Entry{
		"unsorted":          {file("b"), file("a")},
		"duplicate":         {file("a"), file("a")},
		"dotdot":            {file("..")},
		"dot":               {file(".")},
		"empty name":        {file("")},
		"slash":             {file("a/b")},
		"absolute":          {file("/etc")},
		"nul":               {file("a\x00b")},
		"too long":          {file(strings.Repeat("a", MaxNameLen+1))},
		"kind 0":            {{Name: "a"}},
		"kind 9":            {{Name: "a", Kind: 9}},
		"mode type bits":    {{Name: "a", Kind: File, Mode: 0o100644}},
		"nsec":              {{Name: "a", Kind: File, MtimeNsec: 1e9}},
		"long user":         {{Name: "a", Kind: File, User: strings.Repeat("u", 256)}},
		"size on dir":       {{Name: "a", Kind: Dir, Size: 1}},
		"chunks on symlink": {{Name: "a", Kind: Symlink, Target: "x", Chunks: []ChunkRef{{Length: 1}}}},
		"subtree on file":   {{Name: "a", Kind: File, Subtree: id("t")}},
		"target on file":    {{Name: "a", Kind: File, Target: "x"}},
		"major on fifo":     {{Name: "a", Kind: FIFO, Major: 1}},
		"chunk sum":         {{Name: "a", Kind: File, Size: 3, Chunks: []ChunkRef{{Length: 2}}}},
		"zero chunk":        {{Name: "a", Kind: File, Chunks: []ChunkRef{{Length: 0}}}},
		"huge chunk":        {{Name: "a", Kind: File, Size: MaxChunkLength + 1, Chunks: []ChunkRef{{Length: MaxChunkLength + 1}}}},
		"layout 2":          {{Name: "a", Kind: File, Layout: 2}},
		"no lists":          {{Name: "a", Kind: File, Layout: LayoutIndirect}},
		"lists inline":      {{Name: "a", Kind: File, Lists: []ID{id("l")}}},
		"empty symlink":     {{Name: "a", Kind: Symlink}},
		"nul symlink":       {{Name: "a", Kind: Symlink, Target: "a\x00"}},
		"long symlink":      {{Name: "a", Kind: Symlink, Target: strings.Repeat("a", MaxTargetLen+1)}},
		"hardlink abs":      {{Name: "a", Kind: Hardlink, Target: "/etc/passwd"}},
		"hardlink dotdot":   {{Name: "a", Kind: Hardlink, Target: "../x"}},
		"hardlink inner ..": {{Name: "a", Kind: Hardlink, Target: "d/../x"}},
		"hardlink empty":    {{Name: "a", Kind: Hardlink}},
		"hardlink //":       {{Name: "a", Kind: Hardlink, Target: "d//x"}},
		"hardlink trailing": {{Name: "a", Kind: Hardlink, Target: "d/"}},
		"xattr unsorted":    {{Name: "a", Kind: Dir, Xattrs: []Xattr{{Name: "user.b"}, {Name: "user.a"}}}},
		"xattr duplicate":   {{Name: "a", Kind: Dir, Xattrs: []Xattr{{Name: "user.a"}, {Name: "user.a"}}}},
		"xattr empty name":  {{Name: "a", Kind: Dir, Xattrs: []Xattr{{Name: ""}}}},
		"xattr value":       {{Name: "a", Kind: Dir, Xattrs: []Xattr{{Name: "user.a", Value: make([]byte, MaxXattrValue+1)}}}},
		"too many xattrs":   {{Name: "a", Kind: Dir, Xattrs: manyXattrs(MaxXattrs + 1)}},
	}
	for name, entries := range tests {
		t.Run(name, func(t *testing.T) {
			tr := &Tree{Entries: entries}
			if _, err := tr.Encode(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Encode: got %v, want ErrInvalid", err)
			}
			// The same tree written without validation must not decode,
			// unless the fault is a field that the encoding does not carry.
			if strayField[name] {
				return
			}
			if _, err := Decode(encodeRaw(entries)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode of raw encoding: got %v, want ErrInvalid", err)
			}
		})
	}
}

// strayField lists the cases whose fault is a field of another kind, which
// the encoding has no place for.
var strayField = map[string]bool{
	"chunks on symlink": true, "subtree on file": true, "target on file": true,
	"major on fifo": true, "lists inline": true,
}

func manyXattrs(n int) []Xattr {
	xs := make([]Xattr, n)
	for i := range xs {
		xs[i].Name = fmt.Sprintf("user.%05d", i)
	}
	return xs
}

// encodeRaw writes entries in the tree format without validating them, as a
// hostile or broken writer would.
func encodeRaw(entries []Entry) []byte {
	b := binary.AppendUvarint([]byte(treeMagic), uint64(len(entries)))
	for i := range entries {
		b = appendEntry(b, &entries[i])
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	valid, err := sample().Encode()
	if err != nil {
		t.Fatal(err)
	}
	hugeCount := binary.AppendUvarint([]byte(treeMagic), 1<<40)
	nonMinimal := append([]byte(treeMagic), 0x80, 0x00) // 0 written in two bytes
	tests := map[string][]byte{
		"nil":             nil,
		"bad magic":       append([]byte("DBTREE02"), valid[8:]...),
		"list magic":      append([]byte(listMagic), valid[8:]...),
		"trailing byte":   append(append([]byte(nil), valid...), 0),
		"huge count":      hugeCount,
		"count too big":   binary.AppendUvarint([]byte(treeMagic), MaxEntries+1),
		"count vs rest":   append(binary.AppendUvarint([]byte(treeMagic), 2), bytes.Repeat([]byte{0}, 23)...),
		"varint overflow": append([]byte(treeMagic), bytes.Repeat([]byte{0xff}, 11)...),
		"non-minimal":     nonMinimal,
		"oversized blob":  make([]byte, MaxTreeSize+1),
		"huge chunk count": rawEntry(func(b []byte) []byte {
			b = append(b, byte(File))
			b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, LayoutInline) // mode uid gid user group sec nsec size layout
			return binary.AppendUvarint(b, 1<<40)
		}),
		"huge name": rawEntry(func(b []byte) []byte { return b[:0] }, binary.AppendUvarint(nil, 1<<40)...),
		"huge xattr count": rawEntry(func(b []byte) []byte {
			b = append(b, byte(FIFO), 0, 0, 0, 0, 0, 0, 0, 0)
			return binary.AppendUvarint(b, 1<<40)
		}),
		"uid over 32 bits": rawEntry(func(b []byte) []byte {
			b = append(b, byte(FIFO), 0)
			b = binary.AppendUvarint(b, 1<<32)
			return append(b, 0, 0, 0, 0, 0, 0, 0)
		}),
	}
	for i := range valid {
		tests[fmt.Sprintf("truncated at %d", i)] = valid[:i]
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode(b); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

// rawEntry builds a one-entry tree blob: name "a" (or prefix instead of the
// name field when given), then whatever rest appends.
func rawEntry(rest func([]byte) []byte, prefix ...byte) []byte {
	b := binary.AppendUvarint([]byte(treeMagic), 1)
	if prefix != nil {
		return append(append(b, prefix...), bytes.Repeat([]byte{0}, 32)...)
	}
	b = append(b, 1, 'a')
	return append(rest(b), bytes.Repeat([]byte{0}, 64)...)
}

// A count of 2^40 must be refused by looking at it, not by trying to allocate.
func TestHugeCountsFailWithoutAllocating(t *testing.T) {
	inputs := [][]byte{
		binary.AppendUvarint([]byte(treeMagic), 1<<40),
		binary.AppendUvarint([]byte(treeMagic), MaxEntries),
		rawEntry(func(b []byte) []byte {
			b = append(b, byte(File), 0, 0, 0, 0, 0, 0, 0, 0, LayoutIndirect)
			return binary.AppendUvarint(b, 1<<40)
		}),
		binary.AppendUvarint([]byte(listMagic), 1<<40),
		binary.AppendUvarint([]byte(listMagic), MaxListRefs),
	}
	for i, b := range inputs {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err1 := Decode(b)
		_, err2 := DecodeList(b)
		runtime.ReadMemStats(&after)
		if err1 == nil || err2 == nil {
			t.Fatalf("input %d: accepted", i)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
			t.Errorf("input %d: allocated %d bytes to refuse %d bytes of input", i, n, len(b))
		}
	}
}

func TestValidName(t *testing.T) {
	good := []string{"a", "...", ".a", "a b", "new\nline", "\xff", strings.Repeat("x", 255), "-", "\\"}
	bad := []string{"", ".", "..", "a/b", "/", "/etc", "a\x00", strings.Repeat("x", 256)}
	for _, n := range good {
		if err := ValidName(n); err != nil {
			t.Errorf("ValidName(%q) = %v", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidName(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidName(%q) = %v, want ErrInvalid", n, err)
		}
	}
}

func sampleList(n int) []ChunkRef {
	refs := make([]ChunkRef, n)
	for i := range refs {
		refs[i] = ChunkRef{ID: id(fmt.Sprint(i)), Length: uint64(i%MaxChunkLength + 1)}
	}
	return refs
}

func TestListRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 1000, MaxListRefs} {
		refs := sampleList(n)
		b, err := EncodeList(refs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeList(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, refs) {
			t.Fatalf("%d refs: round trip differs", n)
		}
	}
}

func TestListRejects(t *testing.T) {
	for name, refs := range map[string][]ChunkRef{
		"empty":      nil,
		"too many":   sampleList(MaxListRefs + 1),
		"zero":       {{Length: 0}},
		"huge chunk": {{Length: MaxChunkLength + 1}},
	} {
		if _, err := EncodeList(refs); !errors.Is(err, ErrInvalid) {
			t.Errorf("EncodeList %s: got %v", name, err)
		}
	}
	valid, _ := EncodeList(sampleList(3))
	tests := map[string][]byte{
		"tree magic": append([]byte(treeMagic), valid[8:]...),
		"trailing":   append(append([]byte(nil), valid...), 1),
		"count":      binary.AppendUvarint([]byte(listMagic), MaxListRefs+1),
		"zero count": binary.AppendUvarint([]byte(listMagic), 0),
	}
	for i := range valid {
		tests[fmt.Sprintf("truncated at %d", i)] = valid[:i]
	}
	for name, b := range tests {
		if _, err := DecodeList(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeList %s: got %v, want ErrInvalid", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, b := range treeSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		// Decode accepts only canonical encodings.
		b2, err := tr.Encode()
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, b2)
		}
	})
}

func FuzzDecodeList(f *testing.F) {
	for _, b := range listSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		refs, err := DecodeList(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		b2, err := EncodeList(refs)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs (err %v)", err)
		}
	})
}

func treeSeeds() map[string][]byte {
	seeds := map[string][]byte{}
	add := func(name string, tr *Tree) {
		b, err := tr.Encode()
		if err != nil {
			panic(err)
		}
		seeds[name] = b
	}
	add("valid-empty", &Tree{})
	add("valid-sample", sample())
	for i, e := range sample().Entries {
		add(fmt.Sprintf("valid-%02d-%s", i, strings.ReplaceAll(e.Kind.String(), " ", "-")), &Tree{Entries: []Entry{e}})
	}
	seeds["invalid-dotdot"] = encodeRaw([]Entry{{Name: "..", Kind: File}})
	seeds["invalid-unsorted"] = encodeRaw([]Entry{{Name: "b", Kind: FIFO}, {Name: "a", Kind: FIFO}})
	seeds["invalid-huge-count"] = binary.AppendUvarint([]byte(treeMagic), 1<<40)
	return seeds
}

func listSeeds() map[string][]byte {
	seeds := map[string][]byte{}
	for _, n := range []int{1, 3} {
		b, err := EncodeList(sampleList(n))
		if err != nil {
			panic(err)
		}
		seeds[fmt.Sprintf("valid-%d", n)] = b
	}
	seeds["invalid-huge-count"] = binary.AppendUvarint([]byte(listMagic), 1<<40)
	seeds["invalid-zero-length"] = append(binary.AppendUvarint([]byte(listMagic), 1), make([]byte, 33)...)
	return seeds
}

// The committed seed corpora hold the encodings above; go test -run
// TestFuzzCorpus -update-corpus rewrites them after a format change.
func TestFuzzCorpus(t *testing.T) {
	for target, seeds := range map[string]map[string][]byte{
		"FuzzDecode":     treeSeeds(),
		"FuzzDecodeList": listSeeds(),
	} {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, b := range seeds {
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			path := filepath.Join(dir, name)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("%s is missing or stale; run go test -run TestFuzzCorpus -update-corpus", path)
			}
		}
	}
}
