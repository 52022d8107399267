package agentproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// AppendFrame validates m and appends its frame to dst.
func AppendFrame(dst []byte, m Message) ([]byte, error) {
	m, err := value(m)
	if err != nil {
		return dst, err
	}
	if err := Validate(m); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, m.Type())
	dst = appendPayload(dst, m)
	n := len(dst) - start - 4
	if n > MaxFrame {
		return dst[:start], violation("%T frame of %d bytes, more than %d", m, n, MaxFrame)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(n))
	return dst, nil
}

// Write writes m as one frame with one call to w.Write.
func Write(w io.Writer, m Message) error {
	b, err := AppendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// AppendDataHeader appends the frame of a DATA message for chunk index of
// segment of file up to its n chunk bytes, which the caller writes next: a
// chunk then goes out from where it is, without being copied into a frame.
func AppendDataHeader(dst []byte, file, segment, index uint64, n int) ([]byte, error) {
	if n < 1 || n > MaxDataChunk {
		return dst, violation("DATA of %d bytes, want 1..%d", n, MaxDataChunk)
	}
	u := binary.AppendUvarint
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, TypeData)
	dst = u(u(u(u(dst, file), segment), index), uint64(n))
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start-4+n))
	return dst, nil
}

// appendPayload appends the payload of m, a message value that Validate
// accepted.
func appendPayload(b []byte, m Message) []byte {
	u := binary.AppendUvarint
	str := func(b []byte, s string) []byte { return append(u(b, uint64(len(s))), s...) }
	switch m := m.(type) {
	case Hello:
		b = append(b, Magic...)
		b = u(b, Version)
		b = u(u(u(b, uint64(m.Min)), uint64(m.Avg)), uint64(m.Max))
		b = u(b, uint64(len(m.Roots)))
		for _, r := range m.Roots {
			b = str(b, r)
		}
	case Read:
		b = u(b, m.File)
	case Skip:
		b = u(b, m.File)
	case Want:
		b = u(u(b, m.File), m.Segment)
		b = append(u(b, uint64(len(m.Bitmap))), m.Bitmap...)
	case Welcome:
		b = append(b, Magic...)
		b = str(str(u(b, Version), m.Agent), m.Host)
	case Entry:
		b = appendEntry(b, &m)
	case DirEnd:
		b = u(b, m.ID)
	case Hashes:
		b = u(u(b, m.File), m.Segment)
		last := byte(0)
		if m.Last {
			last = 1
		}
		b = u(append(b, last), uint64(len(m.Chunks)))
		for _, c := range m.Chunks {
			b = u(append(b, c.Hash[:]...), uint64(c.Length))
		}
	case Data:
		b = u(u(u(b, m.File), m.Segment), m.Index)
		b = append(u(b, uint64(len(m.Bytes))), m.Bytes...)
	case SegDone:
		b = u(u(b, m.File), m.Segment)
	case FileErr:
		b = str(u(b, m.File), m.Message)
	case Warn:
		b = str(str(b, m.Path), m.Message)
	}
	// Bye and End have no payload.
	return b
}

func appendEntry(b []byte, e *Entry) []byte {
	u := binary.AppendUvarint
	str := func(b []byte, s string) []byte { return append(u(b, uint64(len(s))), s...) }
	b = str(u(b, e.ID), e.Path)
	b = append(b, e.Kind)
	b = u(u(u(b, uint64(e.Mode)), uint64(e.UID)), uint64(e.GID))
	b = str(str(b, e.User), e.Group)
	b = u(binary.AppendVarint(b, e.MtimeSec), uint64(e.MtimeNsec))
	b = u(u(u(u(b, e.Size), e.Dev), e.Ino), e.Nlink)
	b = u(binary.AppendVarint(b, e.CtimeSec), uint64(e.CtimeNsec))
	b = str(b, e.Target)
	b = u(u(b, uint64(e.Major)), uint64(e.Minor))
	b = u(b, uint64(len(e.Xattrs)))
	for _, x := range e.Xattrs {
		b = str(b, x.Name)
		b = append(u(b, uint64(len(x.Value))), x.Value...)
	}
	return b
}

// Reader reads frames from a stream.
type Reader struct {
	r    *bufio.Reader
	buf  []byte // the current frame; reused, so messages copy what they keep
	data func(n int) ([]byte, error)
}

// dataHeadMax is the most bytes a DATA frame takes before its chunk: the
// type and four varints.
const dataHeadMax = 1 + 4*binary.MaxVarintLen64

// SetDataBuffers makes Next read the chunk of every DATA frame straight into
// the buffer get returns for its n bytes (n ≤ MaxDataChunk, checked against
// the frame's length before get is called), which must have a capacity of
// at least n: the message's Bytes is that buffer, owned by the caller, and
// the chunk is not copied on the way. An error from get is returned by Next.
func (r *Reader) SetDataBuffers(get func(n int) ([]byte, error)) {
	r.data = get
}

// NewReader returns a Reader of r. It reads ahead: r belongs to it.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next reads and decodes one frame. It returns io.EOF when the stream ends
// cleanly between frames, an error wrapping ErrProtocol for anything that is
// not exactly a valid frame (a stream that ends inside one included), and
// other read errors wrapped.
func (r *Reader) Next() (Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, readErr(err)
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n < 1 || n > MaxFrame {
		return nil, violation("frame length %d, want 1..%d", n, MaxFrame)
	}
	if r.data != nil {
		if t, err := r.r.Peek(1); err == nil && t[0] == TypeData {
			return r.nextData(int(n))
		}
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the length came, its payload did not
		}
		return nil, readErr(err)
	}
	return Decode(r.buf)
}

// nextData reads a DATA frame of n bytes into a buffer from r.data. It
// accepts exactly what Decode accepts.
func (r *Reader) nextData(n int) (Message, error) {
	head, err := r.r.Peek(min(n, dataHeadMax))
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, readErr(err)
	}
	d := decoder{b: head[1:]}
	m := Data{File: d.uvarint(), Segment: d.uvarint(), Index: d.uvarint()}
	l := d.lenCapped(MaxDataChunk)
	used := len(head) - len(d.b) // the type and the varints
	switch {
	case d.err != nil:
	case l > uint64(n-used):
		d.fail("length %d beyond the %d bytes left", l, n-used)
	case l < uint64(n-used):
		d.fail("%d trailing bytes", uint64(n-used)-l)
	case l == 0:
		d.fail("DATA of 0 bytes, want 1..%d", MaxDataChunk)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrProtocol, TypeName(TypeData), d.err)
	}
	if _, err := r.r.Discard(used); err != nil {
		return nil, readErr(err)
	}
	buf, err := r.data(int(l))
	if err != nil {
		return nil, err
	}
	m.Bytes = buf[:l]
	if _, err := io.ReadFull(r.r, m.Bytes); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, readErr(err)
	}
	return m, nil
}

func readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated frame: %w", ErrProtocol, err)
	}
	return fmt.Errorf("read agent protocol frame: %w", err)
}

// Decode decodes one frame's type byte and payload (the n bytes after its
// length) into a message that shares no memory with b.
func Decode(b []byte) (Message, error) {
	if len(b) == 0 {
		return nil, violation("empty frame")
	}
	d := decoder{b: b[1:]}
	var m Message
	switch b[0] {
	case TypeHello:
		m = d.hello()
	case TypeRead:
		m = Read{File: d.uvarint()}
	case TypeSkip:
		m = Skip{File: d.uvarint()}
	case TypeWant:
		m = Want{File: d.uvarint(), Segment: d.uvarint(), Bitmap: d.bytes(MaxBitmap)}
	case TypeBye:
		m = Bye{}
	case TypeWelcome:
		d.magic()
		m = Welcome{Agent: d.str(MaxName), Host: d.str(MaxName)}
	case TypeEntry:
		m = d.entry()
	case TypeDirEnd:
		m = DirEnd{ID: d.uvarint()}
	case TypeHashes:
		m = d.hashes()
	case TypeData:
		m = Data{File: d.uvarint(), Segment: d.uvarint(), Index: d.uvarint(), Bytes: d.bytes(MaxDataChunk)}
	case TypeSegDone:
		m = SegDone{File: d.uvarint(), Segment: d.uvarint()}
	case TypeFileErr:
		m = FileErr{File: d.uvarint(), Message: d.str(MaxMessage)}
	case TypeWarn:
		m = Warn{Path: d.str(MaxPath), Message: d.str(MaxMessage)}
	case TypeEnd:
		m = End{}
	default:
		return nil, violation("unknown message type %#02x", b[0])
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrProtocol, TypeName(b[0]), d.err)
	}
	if err := Validate(m); err != nil {
		return nil, err
	}
	return m, nil
}

// decoder consumes a payload; after the first error every read returns zero
// values and the error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.fail("truncated varint")
		return 0
	case n < 0:
		d.fail("varint overflows 64 bits")
		return 0
	case n > 1 && d.b[n-1] == 0:
		d.fail("varint not minimal")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *decoder) u32(what string) uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail("%s %d does not fit 32 bits", what, v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) u8() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// raw returns the next n bytes without copying; n has been checked against
// what is left, so nothing is allocated for a lying length.
func (d *decoder) raw(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length %d beyond the %d bytes left", n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) lenCapped(limit int) uint64 {
	n := d.uvarint()
	if d.err == nil && n > uint64(limit) {
		d.fail("length %d, more than %d", n, limit)
		return 0
	}
	return n
}

func (d *decoder) bytes(limit int) []byte {
	v := d.raw(d.lenCapped(limit))
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (d *decoder) str(limit int) string {
	return string(d.raw(d.lenCapped(limit)))
}

func (d *decoder) magic() {
	if m := d.raw(uint64(len(Magic))); d.err == nil && string(m) != Magic {
		d.fail("bad magic %q", m)
	}
	if v := d.uvarint(); d.err == nil && v != Version {
		d.fail("version %d, this side speaks %d", v, Version)
	}
}

// count reads a count, capped by limit and by the bytes left at minSize
// bytes per item, so that no lying count allocates.
func (d *decoder) count(limit, minSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) || n > uint64(len(d.b)/minSize) {
		d.fail("count %d, more than %d or than the bytes left hold", n, limit)
		return 0
	}
	return int(n)
}

func (d *decoder) hello() Hello {
	d.magic()
	var h Hello
	h.Min, h.Avg, h.Max = d.param(), d.param(), d.param()
	n := d.count(MaxRoots, 1)
	if n > 0 {
		h.Roots = make([]string, n)
		for i := range h.Roots {
			h.Roots[i] = d.str(MaxPath)
		}
	}
	return h
}

func (d *decoder) param() int {
	v := d.uvarint()
	if v > MaxChunk {
		d.fail("chunker parameter %d, more than %d", v, MaxChunk)
		return 0
	}
	return int(v)
}

func (d *decoder) entry() Entry {
	var e Entry
	e.ID = d.uvarint()
	e.Path = d.str(MaxPath)
	e.Kind = d.u8()
	e.Mode = d.u32("mode")
	e.UID = d.u32("uid")
	e.GID = d.u32("gid")
	e.User = d.str(MaxName)
	e.Group = d.str(MaxName)
	e.MtimeSec = d.varint()
	e.MtimeNsec = d.u32("mtime nanoseconds")
	e.Size = d.uvarint()
	e.Dev = d.uvarint()
	e.Ino = d.uvarint()
	e.Nlink = d.uvarint()
	e.CtimeSec = d.varint()
	e.CtimeNsec = d.u32("ctime nanoseconds")
	e.Target = d.str(MaxPath)
	e.Major = d.u32("major")
	e.Minor = d.u32("minor")
	// An xattr takes at least 3 bytes: a name's length, a 1-byte name and a
	// value's length.
	n := d.count(MaxXattrs, 3)
	if n > 0 {
		e.Xattrs = make([]Xattr, n)
		for i := range e.Xattrs {
			e.Xattrs[i] = Xattr{Name: d.str(MaxName), Value: d.bytes(MaxXattrValue)}
		}
	}
	return e
}

func (d *decoder) hashes() Hashes {
	var h Hashes
	h.File = d.uvarint()
	h.Segment = d.uvarint()
	switch last := d.u8(); last {
	case 0:
	case 1:
		h.Last = true
	default:
		d.fail("last flag %d", last)
	}
	n := d.count(SegmentChunks, 33)
	if n > 0 {
		h.Chunks = make([]ChunkHash, n)
		for i := range h.Chunks {
			copy(h.Chunks[i].Hash[:], d.raw(32))
			h.Chunks[i].Length = d.u32("chunk length")
		}
	}
	return h
}
