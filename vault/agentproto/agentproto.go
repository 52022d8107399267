// Package agentproto owns the wire format of the agent protocol
// (docs/agent-protocol.md): its frames, its messages, and the rules each
// message must keep on its own. The agent (vault/agent) and the vault's agent
// source both speak it through this package and nothing else.
//
// Invariants: Write never sends a message that Reader.Next would refuse, and
// Next accepts exactly the frames Write produces (varints are minimal, a
// payload is consumed exactly), so decoding and encoding again gives the
// same bytes. Next caps every length and count before it allocates and never
// panics; every refusal wraps ErrProtocol. Rules that need the conversation's
// state (ids increasing, paths under the directory being listed, DATA only
// for wanted chunks) are the caller's.
package agentproto

import (
	"errors"
	"fmt"
	"strings"

	"github.com/zeebo/blake3"

	"drawbridge/vault/chunk"
	"drawbridge/vault/tree"
)

// Protocol constants.
const (
	Magic = "DBAGENT1" // opens HELLO and WELCOME
	// Version is the one version this package speaks. Version 2 pipelines
	// the content: the agent announces segments without waiting for their
	// WANTs. A version 1 agent refuses a version 2 HELLO and exits.
	Version = 2

	// MaxFrame is the largest n of a frame: its type byte and payload.
	MaxFrame = 4<<20 + 64
	// SegmentChunks is the most chunks one HASHES announces.
	SegmentChunks = 1024
	// MaxPending is the most regular files the agent has listed and not yet
	// finished (waiting for READ or SKIP, or read and not yet sent).
	MaxPending = 1024
	// MaxOpenSegments is the most segments the agent has announced (HASHES)
	// and not yet finished (SEGDONE).
	MaxOpenSegments = 256
	// MaxDataChunk is the largest chunk a DATA frame carries (a DATA header
	// takes at most 35 of the 64 bytes MaxFrame leaves), so it caps the
	// chunker's max in HELLO.
	MaxDataChunk = 4 << 20
)

// Caps on what a message may hold.
const (
	MaxRoots      = 64
	MaxPath       = tree.MaxTargetLen  // bytes of a path or symlink target
	MaxName       = tree.MaxNameLen    // bytes of a user, group, xattr name, host name, agent version
	MaxXattrs     = tree.MaxXattrs     // xattrs of one entry
	MaxXattrValue = tree.MaxXattrValue // bytes of one xattr value
	MaxChunk      = chunk.MaxSize      // bytes of a chunk announced in HASHES
	MaxMessage    = 4096               // bytes of a FILEERR or WARN message
	MaxBitmap     = SegmentChunks / 8  // bytes of a WANT bitmap
)

// Message types.
const (
	TypeHello   byte = 0x01
	TypeRead    byte = 0x02
	TypeSkip    byte = 0x03
	TypeWant    byte = 0x04
	TypeBye     byte = 0x05
	TypeWelcome byte = 0x81
	TypeEntry   byte = 0x82
	TypeDirEnd  byte = 0x83
	TypeHashes  byte = 0x84
	TypeData    byte = 0x85
	TypeSegDone byte = 0x86
	TypeFileErr byte = 0x87
	TypeWarn    byte = 0x88
	TypeEnd     byte = 0x89
)

// TypeName is the name docs/agent-protocol.md gives message type t.
func TypeName(t byte) string {
	switch t {
	case TypeHello:
		return "HELLO"
	case TypeRead:
		return "READ"
	case TypeSkip:
		return "SKIP"
	case TypeWant:
		return "WANT"
	case TypeBye:
		return "BYE"
	case TypeWelcome:
		return "WELCOME"
	case TypeEntry:
		return "ENTRY"
	case TypeDirEnd:
		return "DIREND"
	case TypeHashes:
		return "HASHES"
	case TypeData:
		return "DATA"
	case TypeSegDone:
		return "SEGDONE"
	case TypeFileErr:
		return "FILEERR"
	case TypeWarn:
		return "WARN"
	case TypeEnd:
		return "END"
	}
	return fmt.Sprintf("type %#02x", t)
}

// ErrProtocol is wrapped by every refusal of a frame or message.
var ErrProtocol = errors.New("agent protocol violation")

func violation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// Message is one of the messages below; Next returns them as values, Write
// takes values or pointers.
type Message interface{ Type() byte }

// Hello opens the conversation (vault to agent). Version is implicit: Next
// refuses any other than Version.
type Hello struct {
	Min, Avg, Max int // chunker parameters: valid chunk.Params, Max ≤ MaxDataChunk
	// Roots to pull: 1..MaxRoots absolute clean paths, strictly increasing
	// as strings (sort.Strings order), none inside another.
	Roots []string
}

// Welcome answers Hello (agent to vault).
type Welcome struct {
	Agent string // the agent's version
	Host  string // the source's host name
}

// Read asks for a listed regular file's chunk hashes.
type Read struct{ File uint64 }

// Skip says a listed regular file is unchanged: the agent does not open it.
type Skip struct{ File uint64 }

// Want names the chunks of a segment to send: bit i (LSB first) of
// Bitmap[i/8] set asks for chunk i. Missing bytes are zero.
type Want struct {
	File, Segment uint64
	Bitmap        []byte // at most MaxBitmap bytes
}

// Has reports whether chunk i is wanted.
func (w Want) Has(i int) bool {
	return i >= 0 && i/8 < len(w.Bitmap) && w.Bitmap[i/8]&(1<<(i%8)) != 0
}

// Bye ends the conversation (vault to agent).
type Bye struct{}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string // 1..MaxName bytes, no NUL
	Value []byte // at most MaxXattrValue bytes
}

// Entry lists one object under the roots, with what lstat said of it. Only
// the fields of its Kind are set: Size for files, Target for symlinks,
// Major and Minor for devices; Next refuses stray ones.
type Entry struct {
	ID          uint64 // 1, 2, … in the order entries are sent
	Path        string // absolute, slash-separated, every component a valid name (docs/format.md §6)
	Kind        uint8  // tree.Dir, File, Symlink, FIFO, CharDev, BlockDev or Socket
	Mode        uint32 // permission bits, & 07777
	UID, GID    uint32
	User, Group string // names of UID and GID on the source; empty when unknown
	MtimeSec    int64
	MtimeNsec   uint32 // < 1e9
	Size        uint64
	Dev, Ino    uint64
	Nlink       uint64
	CtimeSec    int64
	CtimeNsec   uint32 // < 1e9
	Target      string // symlink target, 1..MaxPath bytes, no NUL
	Major       uint32
	Minor       uint32
	Xattrs      []Xattr // sorted by name, unique
}

// DirEnd says every entry of directory ID has been sent.
type DirEnd struct{ ID uint64 }

// ChunkHash announces one chunk.
type ChunkHash struct {
	Hash   [32]byte // HashChunk of its bytes
	Length uint32   // 1..MaxChunk
}

// Hashes announces the chunks of one segment of a file being read.
type Hashes struct {
	File, Segment uint64
	Last          bool        // this is the file's final segment
	Chunks        []ChunkHash // at most SegmentChunks
}

// Data carries one wanted chunk.
type Data struct {
	File, Segment, Index uint64
	Bytes                []byte // 1..MaxDataChunk bytes
}

// SegDone says every wanted chunk of a segment has been sent.
type SegDone struct{ File, Segment uint64 }

// FileErr says a file being read is left out, and why.
type FileErr struct {
	File    uint64
	Message string // at most MaxMessage bytes
}

// Warn reports something under the roots that could not be read.
type Warn struct {
	Path    string // absolute, at most MaxPath bytes, no NUL
	Message string // at most MaxMessage bytes
}

// End says every ENTRY and DIREND has been sent.
type End struct{}

func (Hello) Type() byte   { return TypeHello }
func (Read) Type() byte    { return TypeRead }
func (Skip) Type() byte    { return TypeSkip }
func (Want) Type() byte    { return TypeWant }
func (Bye) Type() byte     { return TypeBye }
func (Welcome) Type() byte { return TypeWelcome }
func (Entry) Type() byte   { return TypeEntry }
func (DirEnd) Type() byte  { return TypeDirEnd }
func (Hashes) Type() byte  { return TypeHashes }
func (Data) Type() byte    { return TypeData }
func (SegDone) Type() byte { return TypeSegDone }
func (FileErr) Type() byte { return TypeFileErr }
func (Warn) Type() byte    { return TypeWarn }
func (End) Type() byte     { return TypeEnd }

// HashChunk is the hash of a chunk's bytes: BLAKE3-256, unkeyed.
func HashChunk(b []byte) [32]byte {
	return blake3.Sum256(b)
}

// Params returns the chunker parameters of h.
func (h Hello) Params() chunk.Params {
	return chunk.Params{Min: h.Min, Avg: h.Avg, Max: h.Max}
}

// ValidPath reports whether p is a path a message may name: "/" or "/"
// followed by valid names (docs/format.md §6) joined by "/", at most MaxPath
// bytes. Such a path is absolute and clean.
func ValidPath(p string) error {
	if len(p) > MaxPath {
		return violation("path of %d bytes, more than %d", len(p), MaxPath)
	}
	if p == "/" {
		return nil
	}
	if !strings.HasPrefix(p, "/") {
		return violation("path %q is not absolute", p)
	}
	for name := range strings.SplitSeq(p[1:], "/") {
		if err := tree.ValidName(name); err != nil {
			return violation("path %q: %v", p, err)
		}
	}
	return nil
}

// Inside reports whether path p is dir or lies under it; both are valid paths.
func Inside(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir) && p[len(dir)] == '/'
}

// Validate checks the rules of m's own fields that Next enforces. m is one
// of this package's messages, as a value or a non-nil pointer.
func Validate(m Message) error {
	v, err := value(m)
	if err != nil {
		return err
	}
	if v, ok := v.(interface{ validate() error }); ok {
		return v.validate()
	}
	return nil
}

// value returns the message m points to, or m itself.
func value(m Message) (Message, error) {
	var v Message
	switch m := m.(type) {
	case Hello, Read, Skip, Want, Bye, Welcome, Entry, DirEnd, Hashes, Data, SegDone, FileErr, Warn, End:
		return m, nil
	case *Hello:
		v = deref(m)
	case *Read:
		v = deref(m)
	case *Skip:
		v = deref(m)
	case *Want:
		v = deref(m)
	case *Bye:
		v = deref(m)
	case *Welcome:
		v = deref(m)
	case *Entry:
		v = deref(m)
	case *DirEnd:
		v = deref(m)
	case *Hashes:
		v = deref(m)
	case *Data:
		v = deref(m)
	case *SegDone:
		v = deref(m)
	case *FileErr:
		v = deref(m)
	case *Warn:
		v = deref(m)
	case *End:
		v = deref(m)
	}
	if v == nil {
		return nil, violation("not a message: %T", m)
	}
	return v, nil
}

func deref[T Message](p *T) Message {
	if p == nil {
		return nil
	}
	return *p
}

func (h Hello) validate() error {
	p := h.Params()
	if err := p.Validate(); err != nil {
		return violation("HELLO: %v", err)
	}
	if p.Max > MaxDataChunk {
		return violation("HELLO: chunk max %d above %d, the largest chunk a DATA frame carries", p.Max, MaxDataChunk)
	}
	if len(h.Roots) == 0 || len(h.Roots) > MaxRoots {
		return violation("HELLO: %d roots, want 1..%d", len(h.Roots), MaxRoots)
	}
	for i, r := range h.Roots {
		if err := ValidPath(r); err != nil {
			return violation("HELLO: root: %v", err)
		}
		if i > 0 && h.Roots[i-1] >= r {
			return violation("HELLO: roots not sorted or not unique at %q", r)
		}
		for _, q := range h.Roots[:i] {
			if Inside(r, q) {
				return violation("HELLO: root %q inside root %q", r, q)
			}
		}
	}
	return nil
}

func (w Want) validate() error {
	if len(w.Bitmap) > MaxBitmap {
		return violation("WANT bitmap of %d bytes, more than %d", len(w.Bitmap), MaxBitmap)
	}
	return nil
}

func (w Welcome) validate() error {
	if len(w.Agent) > MaxName || len(w.Host) > MaxName {
		return violation("WELCOME: agent version or host name longer than %d bytes", MaxName)
	}
	return nil
}

func (e Entry) validate() error {
	fail := func(format string, args ...any) error {
		return violation("ENTRY %d %q: %s", e.ID, e.Path, fmt.Sprintf(format, args...))
	}
	if err := ValidPath(e.Path); err != nil {
		return fail("%v", err)
	}
	k := tree.Kind(e.Kind)
	switch k {
	case tree.Dir, tree.File, tree.Symlink, tree.FIFO, tree.CharDev, tree.BlockDev, tree.Socket:
	default:
		return fail("kind %d", e.Kind)
	}
	switch {
	case e.Mode > tree.MaxMode:
		return fail("mode %#o has bits outside 07777", e.Mode)
	case len(e.User) > MaxName || len(e.Group) > MaxName:
		return fail("user or group name longer than %d bytes", MaxName)
	case e.MtimeNsec >= 1e9 || e.CtimeNsec >= 1e9:
		return fail("nanoseconds out of range")
	case k != tree.File && e.Size != 0:
		return fail("size on a %v", k)
	case k != tree.Symlink && e.Target != "":
		return fail("target on a %v", k)
	case k == tree.Symlink && (e.Target == "" || len(e.Target) > MaxPath || strings.IndexByte(e.Target, 0) >= 0):
		return fail("symlink target of %d bytes or with NUL", len(e.Target))
	case k != tree.CharDev && k != tree.BlockDev && (e.Major != 0 || e.Minor != 0):
		return fail("device numbers on a %v", k)
	case len(e.Xattrs) > MaxXattrs:
		return fail("%d xattrs, more than %d", len(e.Xattrs), MaxXattrs)
	}
	for i, x := range e.Xattrs {
		if x.Name == "" || len(x.Name) > MaxName || strings.IndexByte(x.Name, 0) >= 0 {
			return fail("xattr name %q", x.Name)
		}
		if len(x.Value) > MaxXattrValue {
			return fail("xattr %q value of %d bytes", x.Name, len(x.Value))
		}
		if i > 0 && e.Xattrs[i-1].Name >= x.Name {
			return fail("xattrs not sorted or not unique at %q", x.Name)
		}
	}
	return nil
}

func (h Hashes) validate() error {
	if len(h.Chunks) > SegmentChunks {
		return violation("HASHES of %d chunks, more than %d", len(h.Chunks), SegmentChunks)
	}
	for i, c := range h.Chunks {
		if c.Length == 0 || c.Length > MaxChunk {
			return violation("HASHES file %d segment %d: chunk %d of %d bytes", h.File, h.Segment, i, c.Length)
		}
	}
	return nil
}

func (d Data) validate() error {
	if len(d.Bytes) == 0 || len(d.Bytes) > MaxDataChunk {
		return violation("DATA of %d bytes, want 1..%d", len(d.Bytes), MaxDataChunk)
	}
	return nil
}

func (f FileErr) validate() error {
	if len(f.Message) > MaxMessage {
		return violation("FILEERR message of %d bytes, more than %d", len(f.Message), MaxMessage)
	}
	return nil
}

func (w Warn) validate() error {
	switch {
	case !strings.HasPrefix(w.Path, "/") || len(w.Path) > MaxPath || strings.IndexByte(w.Path, 0) >= 0:
		return violation("WARN path of %d bytes, not absolute or with NUL", len(w.Path))
	case len(w.Message) > MaxMessage:
		return violation("WARN message of %d bytes, more than %d", len(w.Message), MaxMessage)
	}
	return nil
}
