package agentproto

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the committed fuzz seed corpus")

// samples holds one or more valid messages of every type.
func samples() []Message {
	var hash [32]byte
	for i := range hash {
		hash[i] = byte(i * 7)
	}
	return []Message{
		Hello{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10, Roots: []string{"/etc", "/home/a", "/home/b", "/srv"}},
		Hello{Min: 64, Avg: 128, Max: MaxDataChunk, Roots: []string{"/"}},
		Read{File: 1},
		Skip{File: 1 << 40},
		Want{File: 3, Segment: 2, Bitmap: []byte{0x05, 0x80}},
		Want{File: 3, Segment: 0},
		Bye{},
		Welcome{Agent: "1.0", Host: "db1.example"},
		Entry{ID: 1, Path: "/", Kind: 1, Mode: 0o755, MtimeSec: -5, MtimeNsec: 999999999, Dev: 2049, Ino: 2, Nlink: 20, CtimeSec: 1 << 40, CtimeNsec: 1},
		Entry{ID: 2, Path: "/etc/passwd", Kind: 2, Mode: 0o4644, UID: 1 << 31, GID: 7, User: "root", Group: "wheel",
			MtimeSec: 1700000000, MtimeNsec: 5, Size: 1 << 50, Dev: 1, Ino: 1 << 63, Nlink: 2, CtimeSec: 1, CtimeNsec: 2,
			Xattrs: []Xattr{{Name: "security.selinux", Value: []byte("system_u:object_r:etc_t:s0\x00")}, {Name: "user.empty"}}},
		Entry{ID: 3, Path: "/with space/and\nnewline/\xff\xfe", Kind: 3, Mode: 0o777, Target: "../target"},
		Entry{ID: 4, Path: "/dev/null", Kind: 6, Mode: 0o666, Major: 1, Minor: 3},
		Entry{ID: 5, Path: "/dev/loop0", Kind: 7, Major: 7, Minor: 1 << 20},
		Entry{ID: 6, Path: "/run/fifo", Kind: 5},
		Entry{ID: 7, Path: "/run/sock", Kind: 8},
		DirEnd{ID: 1},
		Hashes{File: 2, Segment: 0, Last: true},
		Hashes{File: 2, Segment: 7, Chunks: []ChunkHash{{Hash: hash, Length: 1}, {Hash: HashChunk([]byte("x")), Length: MaxChunk}}},
		Data{File: 2, Segment: 7, Index: 1023, Bytes: []byte("chunk bytes")},
		Data{File: 1, Bytes: bytes.Repeat([]byte{0xaa}, MaxDataChunk)},
		SegDone{File: 2, Segment: 7},
		FileErr{File: 2, Message: "read: input/output error"},
		Warn{Path: "/home/x", Message: "open: permission denied"},
		End{},
	}
}

func frame(m Message) []byte {
	b, err := AppendFrame(nil, m)
	if err != nil {
		panic(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	var stream bytes.Buffer
	for _, m := range samples() {
		if err := Write(&stream, m); err != nil {
			t.Fatalf("Write %T: %v", m, err)
		}
	}
	// Pointers encode like values.
	for _, m := range samples()[:3] {
		p := reflect.New(reflect.TypeOf(m))
		p.Elem().Set(reflect.ValueOf(m))
		if b := frame(p.Interface().(Message)); !bytes.Equal(b, frame(m)) {
			t.Errorf("%T: pointer encodes differently", m)
		}
	}
	// One byte at a time, to exercise short reads.
	r := NewReader(iotest.OneByteReader(bytes.NewReader(stream.Bytes())))
	for _, want := range samples() {
		got, err := r.Next()
		if err != nil {
			t.Fatalf("Next, want %T: %v", want, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip:\n got %#v\nwant %#v", got, want)
		}
		if b := frame(got); !bytes.Equal(b, frame(want)) {
			t.Errorf("%T: re-encoding differs", want)
		}
	}
	if m, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, %v; want io.EOF", m, err)
	}
}

func TestWireFormat(t *testing.T) {
	// Spelled out from docs/agent-protocol.md, independently of the encoder.
	for _, c := range []struct {
		m   Message
		hex string
	}{
		{Read{File: 300}, "03000000" + "02" + "ac02"},
		{Bye{}, "01000000" + "05"},
		{End{}, "01000000" + "89"},
		{Want{File: 1, Segment: 2, Bitmap: []byte{0x81}}, "05000000" + "04" + "01" + "02" + "01" + "81"},
		{Hello{Min: 64, Avg: 128, Max: 256, Roots: []string{"/a"}}, "13000000" + "01" + hex.EncodeToString([]byte("DBAGENT1")) + "02" + "40" + "8001" + "8002" + "01" + "02" + "2f61"},
		{Welcome{Agent: "v", Host: "h"}, "0e000000" + "81" + hex.EncodeToString([]byte("DBAGENT1")) + "02" + "0176" + "0168"},
		{Hashes{File: 1, Segment: 0, Last: true, Chunks: []ChunkHash{{Length: 5}}}, "26000000" + "84" + "01" + "00" + "01" + "01" + strings.Repeat("00", 32) + "05"},
		{Data{File: 1, Segment: 0, Index: 2, Bytes: []byte("ab")}, "07000000" + "85" + "01" + "00" + "02" + "02" + "6162"},
		{Entry{ID: 1, Path: "/", Kind: 1, MtimeSec: -1, CtimeSec: 1}, "16000000" + "82" + "01" + "012f" + "01" + "000000" + "00" + "00" + "01" + "00" + "00000000" + "02" + "00" + "00" + "0000" + "00"},
	} {
		if got := hex.EncodeToString(frame(c.m)); got != c.hex {
			t.Errorf("%T:\n got %s\nwant %s", c.m, got, c.hex)
		}
	}
}

// raw builds a frame around a payload without validating anything.
func raw(typ byte, payload ...[]byte) []byte {
	p := append([]byte{typ}, bytes.Join(payload, nil)...)
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(p))), p...)
}

func uv(v uint64) []byte     { return binary.AppendUvarint(nil, v) }
func sv(s string) []byte     { return append(uv(uint64(len(s))), s...) }
func cat(b ...[]byte) []byte { return bytes.Join(b, nil) }

// entryPayload is a valid ENTRY payload (a 5-byte file) with the fields
// named in over (name, bytes, name, bytes…) replaced.
func entryPayload(over ...any) []byte {
	fields := []struct {
		name string
		b    []byte
	}{
		{"id", uv(1)}, {"path", sv("/a")}, {"kind", []byte{2}}, {"mode", uv(0o644)}, {"uid", uv(0)}, {"gid", uv(0)},
		{"user", sv("")}, {"group", sv("")}, {"mtime", uv(0)}, {"mtimensec", uv(0)}, {"size", uv(5)},
		{"dev", uv(0)}, {"ino", uv(0)}, {"nlink", uv(1)}, {"ctime", uv(0)}, {"ctimensec", uv(0)},
		{"target", sv("")}, {"major", uv(0)}, {"minor", uv(0)}, {"xattrs", uv(0)},
	}
	var out []byte
	replaced := 0
	for _, f := range fields {
		b := f.b
		for i := 0; i < len(over); i += 2 {
			if over[i].(string) == f.name {
				b = over[i+1].([]byte)
				replaced++
			}
		}
		out = append(out, b...)
	}
	if replaced != len(over)/2 {
		panic(fmt.Sprintf("unknown field in %v", over))
	}
	return out
}

func rejects() map[string][]byte {
	helloHead := cat([]byte(Magic), uv(Version), uv(64), uv(128), uv(256))
	long := func(n int) string { return "/" + strings.Repeat("a", n-1) }
	deepPath := strings.Repeat("/abcdefg", 513) // 4104 bytes of valid names
	return map[string][]byte{
		"empty frame":             {0, 0, 0, 0},
		"huge length":             {0xff, 0xff, 0xff, 0xff, 0x01},
		"length just over max":    binary.LittleEndian.AppendUint32(nil, MaxFrame+1),
		"truncated length":        {5, 0},
		"truncated payload":       {5, 0, 0, 0, TypeRead, 1},
		"length without payload":  {5, 0, 0, 0},
		"unknown type 0x00":       raw(0x00),
		"unknown type 0x06":       raw(0x06),
		"unknown type 0x80":       raw(0x80),
		"unknown type 0x8a":       raw(0x8a),
		"unknown type 0xff":       raw(0xff),
		"trailing byte on BYE":    raw(TypeBye, []byte{0}),
		"trailing byte on END":    raw(TypeEnd, []byte{0}),
		"trailing byte on READ":   raw(TypeRead, uv(1), []byte{0}),
		"READ without id":         raw(TypeRead),
		"non-minimal varint":      raw(TypeRead, []byte{0x81, 0x00}),
		"varint over 64 bits":     raw(TypeSkip, bytes.Repeat([]byte{0xff}, 10), []byte{0x01}),
		"varint 11 bytes":         raw(TypeSkip, bytes.Repeat([]byte{0x80}, 10), []byte{0x01}),
		"HELLO bad magic":         raw(TypeHello, []byte("DBAGENT2"), uv(1), uv(64), uv(128), uv(256), uv(1), sv("/")),
		"HELLO version 1":         raw(TypeHello, []byte(Magic), uv(1), uv(64), uv(128), uv(256), uv(1), sv("/")),
		"HELLO version 3":         raw(TypeHello, []byte(Magic), uv(3), uv(64), uv(128), uv(256), uv(1), sv("/")),
		"HELLO version 0":         raw(TypeHello, []byte(Magic), uv(0), uv(64), uv(128), uv(256), uv(1), sv("/")),
		"HELLO truncated magic":   raw(TypeHello, []byte("DBAG")),
		"HELLO no roots":          raw(TypeHello, helloHead, uv(0)),
		"HELLO 65 roots":          raw(TypeHello, helloHead, uv(65), bytes.Repeat(sv("/"), 65)),
		"HELLO huge root count":   raw(TypeHello, helloHead, uv(1<<40)),
		"HELLO relative root":     raw(TypeHello, helloHead, uv(1), sv("etc")),
		"HELLO unclean root":      raw(TypeHello, helloHead, uv(1), sv("/etc/")),
		"HELLO dotdot root":       raw(TypeHello, helloHead, uv(1), sv("/etc/../root")),
		"HELLO double slash":      raw(TypeHello, helloHead, uv(1), sv("//etc")),
		"HELLO NUL in root":       raw(TypeHello, helloHead, uv(1), sv("/e\x00tc")),
		"HELLO unsorted roots":    raw(TypeHello, helloHead, uv(2), sv("/b"), sv("/a")),
		"HELLO duplicate roots":   raw(TypeHello, helloHead, uv(2), sv("/a"), sv("/a")),
		"HELLO nested roots":      raw(TypeHello, helloHead, uv(2), sv("/a"), sv("/a/b")),
		"HELLO slash and more":    raw(TypeHello, helloHead, uv(2), sv("/"), sv("/a")),
		"HELLO root too long":     raw(TypeHello, helloHead, uv(1), sv(deepPath)),
		"HELLO root length lies":  raw(TypeHello, helloHead, uv(1), uv(1<<40)),
		"HELLO min below 64":      raw(TypeHello, []byte(Magic), uv(Version), uv(63), uv(128), uv(256), uv(1), sv("/")),
		"HELLO avg not power":     raw(TypeHello, []byte(Magic), uv(Version), uv(64), uv(100), uv(256), uv(1), sv("/")),
		"HELLO max above data":    raw(TypeHello, []byte(Magic), uv(Version), uv(64), uv(128), uv(MaxDataChunk+1), uv(1), sv("/")),
		"HELLO max 2^63":          raw(TypeHello, []byte(Magic), uv(Version), uv(64), uv(128), uv(1<<63), uv(1), sv("/")),
		"WANT bitmap too long":    raw(TypeWant, uv(1), uv(0), sv(strings.Repeat("\xff", MaxBitmap+1))),
		"WANT bitmap length lies": raw(TypeWant, uv(1), uv(0), uv(100)),
		"WELCOME bad magic":       raw(TypeWelcome, []byte("XXAGENT1"), uv(1), sv("v"), sv("h")),
		"WELCOME version 1":       raw(TypeWelcome, []byte(Magic), uv(1), sv("v"), sv("h")),
		"WELCOME long host":       raw(TypeWelcome, []byte(Magic), uv(1), sv("v"), sv(strings.Repeat("h", 256))),
		"ENTRY truncated":         raw(TypeEntry, entryPayload()[:10]),
		"ENTRY trailing":          raw(TypeEntry, entryPayload(), []byte{0}),
		"ENTRY relative path":     raw(TypeEntry, entryPayload("path", sv("a"))),
		"ENTRY empty path":        raw(TypeEntry, entryPayload("path", sv(""))),
		"ENTRY dot path":          raw(TypeEntry, entryPayload("path", sv("/a/./b"))),
		"ENTRY name too long":     raw(TypeEntry, entryPayload("path", sv(long(257)))),
		"ENTRY path too long":     raw(TypeEntry, entryPayload("path", sv(deepPath))),
		"ENTRY kind 0":            raw(TypeEntry, entryPayload("kind", []byte{0})),
		"ENTRY kind hardlink":     raw(TypeEntry, entryPayload("kind", []byte{4})),
		"ENTRY kind 9":            raw(TypeEntry, entryPayload("kind", []byte{9})),
		"ENTRY mode 010000":       raw(TypeEntry, entryPayload("mode", uv(0o10000))),
		"ENTRY uid 2^32":          raw(TypeEntry, entryPayload("uid", uv(1<<32))),
		"ENTRY gid 2^40":          raw(TypeEntry, entryPayload("gid", uv(1<<40))),
		"ENTRY user 256 bytes":    raw(TypeEntry, entryPayload("user", sv(strings.Repeat("u", 256)))),
		"ENTRY mtime nsec 1e9":    raw(TypeEntry, entryPayload("mtimensec", uv(1e9))),
		"ENTRY ctime nsec 2^33":   raw(TypeEntry, entryPayload("ctimensec", uv(1<<33))),
		"ENTRY target on file":    raw(TypeEntry, entryPayload("target", sv("x"))),
		"ENTRY device on file":    raw(TypeEntry, entryPayload("major", uv(1))),
		"ENTRY major 2^32":        raw(TypeEntry, entryPayload("major", uv(1<<32))),
		"ENTRY xattr count lies":  raw(TypeEntry, entryPayload("xattrs", uv(1<<40))),
		"ENTRY 1025 xattrs":       raw(TypeEntry, entryPayload("xattrs", cat(uv(1025), bytes.Repeat(cat(sv("n"), sv("")), 1025)))),
		"ENTRY xattr empty name":  raw(TypeEntry, entryPayload("xattrs", cat(uv(1), sv(""), sv("v")))),
		"ENTRY xattr NUL name":    raw(TypeEntry, entryPayload("xattrs", cat(uv(1), sv("a\x00"), sv("v")))),
		"ENTRY xattr big value":   raw(TypeEntry, entryPayload("xattrs", cat(uv(1), sv("a"), sv(strings.Repeat("v", MaxXattrValue+1))))),
		"ENTRY xattrs unsorted":   raw(TypeEntry, entryPayload("xattrs", cat(uv(2), sv("b"), sv(""), sv("a"), sv("")))),
		"ENTRY xattrs duplicate":  raw(TypeEntry, entryPayload("xattrs", cat(uv(2), sv("a"), sv(""), sv("a"), sv("")))),
		"ENTRY symlink no target": raw(TypeEntry, entryPayload("kind", []byte{3}, "size", uv(0))),
		"ENTRY size on a dir":     raw(TypeEntry, entryPayload("kind", []byte{1})),
		"ENTRY device on fifo":    raw(TypeEntry, entryPayload("kind", []byte{5}, "size", uv(0), "minor", uv(1))),
		"HASHES last flag 2":      raw(TypeHashes, uv(1), uv(0), []byte{2}, uv(0)),
		"HASHES 1025 chunks":      raw(TypeHashes, uv(1), uv(0), []byte{0}, uv(1025), bytes.Repeat(cat(make([]byte, 32), uv(1)), 1025)),
		"HASHES count lies":       raw(TypeHashes, uv(1), uv(0), []byte{0}, uv(3), make([]byte, 33)),
		"HASHES zero length":      raw(TypeHashes, uv(1), uv(0), []byte{1}, uv(1), make([]byte, 32), uv(0)),
		"HASHES length over max":  raw(TypeHashes, uv(1), uv(0), []byte{1}, uv(1), make([]byte, 32), uv(MaxChunk+1)),
		"HASHES length 2^32":      raw(TypeHashes, uv(1), uv(0), []byte{1}, uv(1), make([]byte, 32), uv(1<<32)),
		"DATA empty":              raw(TypeData, uv(1), uv(0), uv(0), uv(0)),
		"DATA length lies":        raw(TypeData, uv(1), uv(0), uv(0), uv(64<<20)),
		"DATA length 2^40":        raw(TypeData, uv(1), uv(0), uv(0), uv(1<<40), []byte("x")),
		"SEGDONE truncated":       raw(TypeSegDone, uv(1)),
		"FILEERR long message":    raw(TypeFileErr, uv(1), sv(strings.Repeat("m", MaxMessage+1))),
		"WARN relative path":      raw(TypeWarn, sv("a"), sv("m")),
		"WARN long path":          raw(TypeWarn, sv(long(MaxPath+1)), sv("m")),
	}
}

func TestReject(t *testing.T) {
	for name, b := range rejects() {
		m, err := NewReader(bytes.NewReader(b)).Next()
		if err == nil || !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: got %#v, %v; want an ErrProtocol", name, m, err)
		}
	}
}

func TestRejectBeforeAllocating(t *testing.T) {
	// A 2^32-1 length fails at once, without waiting for the bytes.
	r, w := io.Pipe()
	defer w.Close()
	go w.Write([]byte{0xff, 0xff, 0xff, 0xff})
	done := make(chan error, 1)
	go func() { _, err := NewReader(r).Next(); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("huge length: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a huge frame length waits for its bytes")
	}
	// Lying counts inside a frame allocate nothing beyond the frame.
	for _, name := range []string{"HELLO huge root count", "ENTRY xattr count lies", "HASHES count lies", "DATA length 2^40"} {
		b := rejects()[name][4:]
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		Decode(b)
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
			t.Errorf("%s: %d bytes allocated", name, n)
		}
	}
}

func TestWriteRefuses(t *testing.T) {
	for _, m := range []Message{
		Hello{Min: 64, Avg: 128, Max: 256},
		Hello{Min: 64, Avg: 128, Max: 256, Roots: []string{"/a/"}},
		Entry{ID: 1, Path: "/a", Kind: 4},
		Entry{ID: 1, Path: "/a", Kind: 1, Size: 3},
		Hashes{Chunks: make([]ChunkHash, SegmentChunks+1)},
		Data{Bytes: make([]byte, MaxDataChunk+1)},
		Data{},
		Warn{Path: "rel"},
		(*Read)(nil),
	} {
		var buf bytes.Buffer
		if err := Write(&buf, m); !errors.Is(err, ErrProtocol) || buf.Len() != 0 {
			t.Errorf("Write(%T) = %v, wrote %d bytes", m, err, buf.Len())
		}
	}
}

func TestReadErrors(t *testing.T) {
	boom := errors.New("boom")
	_, err := NewReader(iotest.ErrReader(boom)).Next()
	if !errors.Is(err, boom) || errors.Is(err, ErrProtocol) {
		t.Errorf("transport error: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(nil)).Next(); err != io.EOF {
		t.Errorf("empty stream: %v", err)
	}
}

func TestWantHas(t *testing.T) {
	w := Want{Bitmap: []byte{0b0000_0101, 0b1000_0000}}
	var got []int
	for i := -1; i < 40; i++ {
		if w.Has(i) {
			got = append(got, i)
		}
	}
	if !slices.Equal(got, []int{0, 2, 15}) {
		t.Errorf("Has: %v", got)
	}
}

func TestHashChunk(t *testing.T) {
	// BLAKE3-256 of the empty input, from the BLAKE3 test vectors.
	if got := fmt.Sprintf("%x", HashChunk(nil)); got != "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" {
		t.Errorf("HashChunk(nil) = %s", got)
	}
}

func TestInside(t *testing.T) {
	for _, c := range []struct {
		p, dir string
		want   bool
	}{
		{"/a", "/", true}, {"/", "/", true}, {"/a/b", "/a", true}, {"/a", "/a", true},
		{"/ab", "/a", false}, {"/a-b", "/a", false}, {"/", "/a", false}, {"/b/a", "/a", false},
	} {
		if got := Inside(c.p, c.dir); got != c.want {
			t.Errorf("Inside(%q, %q) = %v", c.p, c.dir, got)
		}
	}
}

func FuzzReader(f *testing.F) {
	for _, b := range seeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		var again bytes.Buffer
		for {
			m, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("error does not wrap ErrProtocol: %v", err)
				}
				return
			}
			if err := Write(&again, m); err != nil {
				t.Fatalf("accepted %#v does not encode: %v", m, err)
			}
		}
		// A stream read to its end without error is exactly its frames.
		if !bytes.Equal(again.Bytes(), b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, again.Bytes())
		}
	})
}

// A Reader reading DATA chunks into the caller's buffers accepts exactly
// the frames, and gives exactly the messages, of one that does not.
func FuzzDataBuffers(f *testing.F) {
	for _, b := range seeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, buffered := NewReader(bytes.NewReader(b)), NewReader(bytes.NewReader(b))
		var asked []int
		buffered.SetDataBuffers(func(n int) ([]byte, error) {
			if n < 1 || n > MaxDataChunk {
				t.Fatalf("asked for a buffer of %d bytes", n)
			}
			asked = append(asked, n)
			return make([]byte, 0, n), nil
		})
		for {
			m1, err1 := plain.Next()
			m2, err2 := buffered.Next()
			if (err1 == nil) != (err2 == nil) || err1 == io.EOF != (err2 == io.EOF) {
				t.Fatalf("errors differ: %v and %v", err1, err2)
			}
			if err1 != nil {
				if err1 != io.EOF && !errors.Is(err2, ErrProtocol) {
					t.Fatalf("error does not wrap ErrProtocol: %v", err2)
				}
				return
			}
			if !reflect.DeepEqual(m1, m2) {
				t.Fatalf("messages differ: %#v and %#v", m1, m2)
			}
			if d, ok := m2.(Data); ok && (len(asked) == 0 || asked[len(asked)-1] != len(d.Bytes)) {
				t.Fatalf("DATA of %d bytes not read into a buffer asked for", len(d.Bytes))
			}
		}
	})
}

func TestAppendDataHeader(t *testing.T) {
	d := Data{File: 300, Segment: 7, Index: 1023, Bytes: bytes.Repeat([]byte("x"), 70000)}
	b, err := AppendDataHeader(nil, d.File, d.Segment, d.Index, len(d.Bytes))
	if err != nil {
		t.Fatal(err)
	}
	if got := append(b, d.Bytes...); !bytes.Equal(got, frame(d)) {
		t.Errorf("header and chunk differ from the frame")
	}
	for _, n := range []int{0, MaxDataChunk + 1} {
		if _, err := AppendDataHeader(nil, 1, 0, 0, n); !errors.Is(err, ErrProtocol) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

func seeds() map[string][]byte {
	s := map[string][]byte{}
	var conversation []byte
	for i, m := range samples() {
		if d, ok := m.(Data); ok && len(d.Bytes) > 4096 {
			continue // the 4 MiB sample would bloat the corpus
		}
		b := frame(m)
		s[fmt.Sprintf("valid-%02d-%T", i, m)] = b
		conversation = append(conversation, b...)
	}
	s["valid-conversation"] = conversation
	for name, b := range rejects() {
		if len(b) > 8192 {
			continue
		}
		s["invalid-"+strings.NewReplacer(" ", "-", "^", "", "\n", "").Replace(name)] = b
	}
	return s
}

// The committed seed corpus holds the seeds above; go test -run
// TestFuzzCorpus -update-corpus rewrites it after a format change.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	for name, b := range seeds() {
		name = strings.ReplaceAll(name, "agentproto.", "")
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
