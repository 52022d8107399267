package tree

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
)

const (
	treeMagic = "DBTREE01"
	listMagic = "DBLIST01"

	// The smallest encodings, used to refuse a count before allocating for
	// it: an entry is at least 12 bytes (a fifo with a 1-byte name and every
	// other field a 1-byte zero), a chunk ref 33 and an xattr 2.
	minEntrySize = 12
	minRefSize   = 33
	minXattrSize = 2
)

// Encode validates t against §6 and returns its tree blob plaintext.
func (t *Tree) Encode() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 64*len(t.Entries)+16)
	b = append(b, treeMagic...)
	b = binary.AppendUvarint(b, uint64(len(t.Entries)))
	for i := range t.Entries {
		b = appendEntry(b, &t.Entries[i])
		if len(b) > MaxTreeSize {
			return nil, invalid("tree blob larger than %d bytes", MaxTreeSize)
		}
	}
	return b, nil
}

func appendBytes(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendRef(b []byte, r ChunkRef) []byte {
	b = append(b, r.ID[:]...)
	return binary.AppendUvarint(b, r.Length)
}

func appendEntry(b []byte, e *Entry) []byte {
	b = appendBytes(b, e.Name)
	b = append(b, byte(e.Kind))
	b = binary.AppendUvarint(b, uint64(e.Mode))
	b = binary.AppendUvarint(b, uint64(e.UID))
	b = binary.AppendUvarint(b, uint64(e.GID))
	b = appendBytes(b, e.User)
	b = appendBytes(b, e.Group)
	b = binary.AppendVarint(b, e.MtimeSec)
	b = binary.AppendUvarint(b, uint64(e.MtimeNsec))
	b = binary.AppendUvarint(b, e.Size)
	switch e.Kind {
	case Dir:
		b = append(b, e.Subtree[:]...)
	case File:
		b = append(b, e.Layout)
		if e.Layout == LayoutInline {
			b = binary.AppendUvarint(b, uint64(len(e.Chunks)))
			for _, c := range e.Chunks {
				b = appendRef(b, c)
			}
		} else {
			b = binary.AppendUvarint(b, uint64(len(e.Lists)))
			for _, id := range e.Lists {
				b = append(b, id[:]...)
			}
		}
	case Symlink, Hardlink:
		b = appendBytes(b, e.Target)
	case CharDev, BlockDev:
		b = binary.AppendUvarint(b, uint64(e.Major))
		b = binary.AppendUvarint(b, uint64(e.Minor))
	}
	b = binary.AppendUvarint(b, uint64(len(e.Xattrs)))
	for _, x := range e.Xattrs {
		b = appendBytes(b, x.Name)
		b = binary.AppendUvarint(b, uint64(len(x.Value)))
		b = append(b, x.Value...)
	}
	return b
}

// Decode parses a tree blob plaintext. It refuses anything Encode would not
// have written, including non-minimal varints and trailing bytes.
func Decode(b []byte) (*Tree, error) {
	if len(b) > MaxTreeSize {
		return nil, invalid("tree blob of %d bytes, more than %d", len(b), MaxTreeSize)
	}
	d := decoder{b: b}
	d.magic(treeMagic)
	n := d.count(MaxEntries, minEntrySize, "entries")
	t := &Tree{Entries: make([]Entry, 0, n)}
	for i := 0; i < n && d.err == nil; i++ {
		t.Entries = append(t.Entries, d.entry())
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// EncodeList returns the list blob plaintext holding refs (1..MaxListRefs).
func EncodeList(refs []ChunkRef) ([]byte, error) {
	if err := validateList(refs); err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(listMagic)+binary.MaxVarintLen64+len(refs)*(minRefSize+4))
	b = append(b, listMagic...)
	b = binary.AppendUvarint(b, uint64(len(refs)))
	for _, r := range refs {
		b = appendRef(b, r)
	}
	return b, nil
}

// DecodeList parses a list blob plaintext.
func DecodeList(b []byte) ([]ChunkRef, error) {
	d := decoder{b: b}
	d.magic(listMagic)
	n := d.count(MaxListRefs, minRefSize, "chunk refs")
	refs := make([]ChunkRef, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		refs = append(refs, d.ref())
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	if err := validateList(refs); err != nil {
		return nil, err
	}
	return refs, nil
}

func validateList(refs []ChunkRef) error {
	if len(refs) == 0 || len(refs) > MaxListRefs {
		return invalid("list of %d chunk refs, want 1..%d", len(refs), MaxListRefs)
	}
	for i, r := range refs {
		if r.Length == 0 || r.Length > MaxChunkLength {
			return invalid("list ref %d: chunk length %d", i, r.Length)
		}
	}
	return nil
}

// decoder reads from b; the first error sticks and every later read returns
// zero values, so callers check err once at the end of a record.
type decoder struct {
	b   []byte
	pos int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = invalid("at byte %d: %s", d.pos, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) rest() int { return len(d.b) - d.pos }

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > d.rest() {
		d.fail("truncated")
		return nil
	}
	p := d.b[d.pos : d.pos+n : d.pos+n]
	d.pos += n
	return p
}

func (d *decoder) magic(m string) {
	if p := d.take(len(m)); d.err == nil && string(p) != m {
		d.fail("bad magic %q", p)
	}
}

func (d *decoder) end() {
	if d.err == nil && d.rest() != 0 {
		d.fail("%d trailing bytes", d.rest())
	}
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) id() (id ID) {
	copy(id[:], d.take(len(id)))
	return id
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.pos:])
	switch {
	case n == 0:
		d.fail("truncated")
		return 0
	case n < 0:
		d.fail("varint overflows 64 bits")
		return 0
	case n != uvarintLen(v):
		d.fail("non-minimal varint")
		return 0
	}
	d.pos += n
	return v
}

func (d *decoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1) // zig-zag, as encoding/binary.Varint
}

func (d *decoder) u32(what string) uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail("%s %d does not fit 32 bits", what, v)
		return 0
	}
	return uint32(v)
}

// count reads a count and refuses it when it is above max or when the input
// left could not hold that many items of at least minSize bytes.
func (d *decoder) count(max, minSize int, what string) int {
	v := d.uvarint()
	if d.err != nil {
		return 0
	}
	if v > uint64(max) {
		d.fail("%d %s, more than %d", v, what, max)
		return 0
	}
	if v > uint64(d.rest()/minSize) {
		d.fail("%d %s cannot fit in the %d bytes left", v, what, d.rest())
		return 0
	}
	return int(v)
}

// bytes reads a length-prefixed byte string of at most max bytes.
func (d *decoder) bytes(max int, what string) []byte {
	v := d.uvarint()
	if d.err != nil {
		return nil
	}
	if v > uint64(max) {
		d.fail("%s of %d bytes, more than %d", what, v, max)
		return nil
	}
	return d.take(int(v))
}

func (d *decoder) str(max int, what string) string { return string(d.bytes(max, what)) }

func (d *decoder) ref() ChunkRef {
	return ChunkRef{ID: d.id(), Length: d.uvarint()}
}

func (d *decoder) entry() Entry {
	var e Entry
	e.Name = d.str(MaxNameLen, "name")
	e.Kind = Kind(d.u8())
	e.Mode = d.u32("mode")
	e.UID = d.u32("uid")
	e.GID = d.u32("gid")
	e.User = d.str(MaxNameLen, "user name")
	e.Group = d.str(MaxNameLen, "group name")
	e.MtimeSec = d.varint()
	e.MtimeNsec = d.u32("mtime nanoseconds")
	e.Size = d.uvarint()
	switch e.Kind {
	case Dir:
		e.Subtree = d.id()
	case File:
		e.Layout = d.u8()
		switch e.Layout {
		case LayoutInline:
			if n := d.count(math.MaxInt32, minRefSize, "chunk refs"); n > 0 {
				e.Chunks = make([]ChunkRef, 0, n)
				for i := 0; i < n && d.err == nil; i++ {
					e.Chunks = append(e.Chunks, d.ref())
				}
			}
		case LayoutIndirect:
			if n := d.count(math.MaxInt32, len(ID{}), "list ids"); n > 0 {
				e.Lists = make([]ID, 0, n)
				for i := 0; i < n && d.err == nil; i++ {
					e.Lists = append(e.Lists, d.id())
				}
			}
		default:
			d.fail("entry %q: file layout %d", e.Name, e.Layout)
		}
	case Symlink, Hardlink:
		e.Target = d.str(MaxTargetLen, "link target")
	case CharDev, BlockDev:
		e.Major = d.u32("major")
		e.Minor = d.u32("minor")
	case FIFO, Socket:
	default:
		d.fail("entry %q: unknown kind %d", e.Name, e.Kind)
	}
	if n := d.count(MaxXattrs, minXattrSize, "xattrs"); n > 0 {
		e.Xattrs = make([]Xattr, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			x := Xattr{Name: d.str(MaxNameLen, "xattr name")}
			if v := d.bytes(MaxXattrValue, "xattr value"); len(v) > 0 {
				x.Value = append([]byte(nil), v...)
			}
			e.Xattrs = append(e.Xattrs, x)
		}
	}
	return e
}
