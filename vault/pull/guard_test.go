package pull

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// nameReply encodes an SFTP NAME reply listing names, each with size,
// permissions and times, and one extended attribute on the first.
func nameReply(id uint32, names ...string) []byte {
	var b []byte
	u32 := func(v uint32) { b = binary.BigEndian.AppendUint32(b, v) }
	str := func(s string) { u32(uint32(len(s))); b = append(b, s...) }
	b = append(b, fxpName)
	u32(id)
	u32(uint32(len(names)))
	for i, n := range names {
		str(n)
		str("-rw-r--r-- 1 root root 5 Jan 1 00:00 " + n)
		flags := uint32(attrSize | attrPerms | attrACModTime)
		if i == 0 {
			flags |= attrExtended | attrUIDGID
		}
		u32(flags)
		b = binary.BigEndian.AppendUint64(b, 5)
		if i == 0 {
			u32(0)
			u32(0)
		}
		u32(0o100644)
		u32(1)
		u32(2)
		if i == 0 {
			u32(1)
			str("name@example")
			str("value")
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// otherReply is a packet of another type (DATA) of n bytes.
func otherReply(n int) []byte {
	b := append(binary.BigEndian.AppendUint32(nil, uint32(n+1)), 103)
	return append(b, bytes.Repeat([]byte{'/'}, n)...)
}

// through reads stream through a guard, one byte at a time.
func through(listing bool, stream []byte) ([]byte, error) {
	g := &sftpGuard{r: iotest.OneByteReader(bytes.NewReader(stream))}
	if listing {
		g.startListing()
	}
	return io.ReadAll(g)
}

func TestGuard(t *testing.T) {
	good := bytes.Join([][]byte{otherReply(3), nameReply(1, ".", "..", "a", "b c", "\xff\n"), otherReply(0), nameReply(2)}, nil)
	for _, listing := range []bool{false, true} {
		out, err := through(listing, good)
		if err != nil || !bytes.Equal(out, good) {
			t.Fatalf("listing %v: good replies: %v", listing, err)
		}
	}
	for name, stream := range map[string][]byte{
		"slash":     nameReply(1, "a", "/"),
		"nul":       nameReply(1, "a\x00"),
		"empty":     nameReply(1, ""),
		"component": nameReply(1, "../x"),
		"long":      nameReply(1, string(bytes.Repeat([]byte{'x'}, 256))),
		"truncated": func() []byte { b := nameReply(1, "a"); b[3]--; return append(b[:len(b)-1], otherReply(0)...) }(),
		"trailing":  func() []byte { b := nameReply(1, "a"); b[3]++; return append(b, 0) }(),
		"count":     func() []byte { b := nameReply(1, "a"); b[12] = 2; return b }(),
		"packet":    otherReply(maxSFTPPacket),
		"zero":      {0, 0, 0, 0, 1},
	} {
		out, err := through(true, stream)
		if !errors.Is(err, ErrHostileSource) {
			t.Errorf("%s: got %v, want ErrHostileSource", name, err)
		}
		// The offending reply is never delivered whole.
		if len(out) >= len(stream) {
			t.Errorf("%s: the whole reply went through", name)
		}
	}
	// Outside a listing, names are not checked (a symlink target is a NAME
	// reply too), but framing is.
	if _, err := through(false, nameReply(1, "../x/y")); err != nil {
		t.Fatalf("readlink reply: %v", err)
	}
	if _, err := through(false, otherReply(maxSFTPPacket)); !errors.Is(err, ErrHostileSource) {
		t.Fatalf("oversized packet outside a listing: %v", err)
	}

	// Caps count across the replies of one listing and start again with
	// the next.
	defer func(e, b int) { maxListEntries, maxListBytes = e, b }(maxListEntries, maxListBytes)
	maxListEntries = 3
	g := &sftpGuard{r: bytes.NewReader(bytes.Join([][]byte{nameReply(1, ".", "a", "b"), nameReply(2, "c", "d")}, nil))}
	g.startListing()
	if _, err := io.ReadAll(g); !errors.Is(err, ErrHostileSource) {
		t.Fatalf("four entries with a cap of three: %v", err)
	}
	if _, err := g.Read(make([]byte, 1)); err == nil {
		t.Fatal("a failed guard reads on")
	}
	maxListEntries, maxListBytes = 100, len(nameReply(1, "a", "b"))+len(nameReply(2, "c"))-1
	g = &sftpGuard{r: bytes.NewReader(bytes.Join([][]byte{nameReply(1, "a", "b"), nameReply(2, "c")}, nil))}
	g.startListing()
	if _, err := io.ReadAll(g); !errors.Is(err, ErrHostileSource) {
		t.Fatalf("listing over the byte cap: %v", err)
	}
	two := bytes.Join([][]byte{nameReply(1, "a", "b"), nameReply(1, "a", "b")}, nil)
	r := bytes.NewReader(two)
	g = &sftpGuard{r: r}
	buf := make([]byte, len(two)/2)
	g.startListing()
	if _, err := io.ReadFull(g, buf); err != nil {
		t.Fatal(err)
	}
	g.endListing()
	g.startListing()
	if _, err := io.ReadFull(g, buf); err != nil {
		t.Fatalf("second listing: %v", err)
	}
}

// FuzzSFTPGuard: whatever a server sends, the guard does not panic and
// either passes every byte through unchanged or stops with
// ErrHostileSource after passing a prefix.
func FuzzSFTPGuard(f *testing.F) {
	f.Add(nameReply(1, "a", "..", "b"), true, uint8(1))
	f.Add(nameReply(7, "a/b"), true, uint8(3))
	f.Add(append(otherReply(10), nameReply(2, "x")...), false, uint8(0))
	f.Fuzz(func(t *testing.T, stream []byte, listing bool, split uint8) {
		var r io.Reader = bytes.NewReader(stream)
		if split%2 == 1 {
			r = iotest.OneByteReader(r)
		}
		g := &sftpGuard{r: r}
		if listing {
			g.startListing()
		}
		out, err := io.ReadAll(g)
		if !bytes.HasPrefix(stream, out) {
			t.Fatal("the guard changed the bytes")
		}
		if err == nil && len(out) != len(stream) {
			t.Fatal("the guard dropped bytes without an error")
		}
		if err != nil && !errors.Is(err, ErrHostileSource) {
			t.Fatalf("error %v", err)
		}
	})
}
