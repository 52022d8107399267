// Package tree owns snapshot trees: the tree and chunk-list blob formats of
// docs/format.md §6, and the capture of one filesystem object's metadata into
// an Entry.
//
// Invariants: Encode never produces a blob that Decode rejects, and Decode
// accepts exactly the canonical encodings, so Encode(Decode(b)) == b for every
// b that Decode accepts. Decode never panics and bounds every allocation by
// the size of its input.
package tree

import (
	"errors"
	"fmt"
	"strings"
)

// ID names a blob: ID(plaintext) of §2.
type ID = [32]byte

// Kind is what an Entry is.
type Kind uint8

// The entry kinds of §6. Their values are part of the format.
const (
	Dir      Kind = 1
	File     Kind = 2
	Symlink  Kind = 3
	Hardlink Kind = 4
	FIFO     Kind = 5
	CharDev  Kind = 6
	BlockDev Kind = 7
	Socket   Kind = 8
)

func (k Kind) String() string {
	switch k {
	case Dir:
		return "dir"
	case File:
		return "file"
	case Symlink:
		return "symlink"
	case Hardlink:
		return "hardlink"
	case FIFO:
		return "fifo"
	case CharDev:
		return "char device"
	case BlockDev:
		return "block device"
	case Socket:
		return "socket"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// File layouts.
const (
	LayoutInline   = 0 // Entry.Chunks holds the chunk refs
	LayoutIndirect = 1 // Entry.Lists holds ids of list blobs of chunk refs
)

// Limits of §6 (and the blob limit of §5 for chunk lengths).
const (
	MaxTreeSize    = 64 << 20  // bytes of a tree blob's plaintext
	MaxEntries     = 1_000_000 // entries in one tree
	MaxNameLen     = 255       // bytes of an entry name, user/group name or xattr name
	MaxTargetLen   = 4096      // bytes of a symlink target or hardlink path
	MaxXattrs      = 1024      // xattrs of one entry
	MaxXattrValue  = 64 << 10  // bytes of one xattr value
	MaxChunkLength = 64 << 20  // plaintext bytes of one chunk
	MaxListRefs    = 65536     // chunk refs in one list blob
	MaxMode        = 0o7777    // permission bits incl. setuid, setgid, sticky
)

// ErrInvalid is wrapped by every decoding and validation error.
var ErrInvalid = errors.New("invalid tree data")

// ChunkRef names one chunk of a file's content.
type ChunkRef struct {
	ID     ID
	Length uint64 // plaintext length, 1..MaxChunkLength
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Entry is one name in a directory. Only the fields of its Kind are set; the
// others are zero (Encode refuses stray fields so that encoding is exact).
type Entry struct {
	Name        string // raw bytes; may be non-UTF-8, may contain spaces and newlines
	Kind        Kind
	Mode        uint32 // permission bits incl. setuid/setgid/sticky (& 07777)
	UID, GID    uint32
	User, Group string // names at capture time; empty when unknown
	MtimeSec    int64
	MtimeNsec   uint32
	Size        uint64     // File only
	Subtree     ID         // Dir: id of the subdirectory's tree blob
	Layout      uint8      // File: LayoutInline or LayoutIndirect
	Chunks      []ChunkRef // File, LayoutInline
	Lists       []ID       // File, LayoutIndirect: ids of list blobs
	Target      string     // Symlink: target; Hardlink: slash path from the snapshot root of an earlier File entry
	Major       uint32     // CharDev, BlockDev
	Minor       uint32     // CharDev, BlockDev
	Xattrs      []Xattr    // sorted by name, unique
}

// Tree is one directory: its entries sorted bytewise by name, names unique.
type Tree struct {
	Entries []Entry
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ValidName reports whether name is a single path component that a tree may
// hold: 1..255 bytes, no '/', no NUL, not "." or "..".
func ValidName(name string) error {
	switch {
	case name == "":
		return invalid("empty name")
	case len(name) > MaxNameLen:
		return invalid("name of %d bytes, more than %d", len(name), MaxNameLen)
	case name == "." || name == "..":
		return invalid("name %q", name)
	case strings.IndexByte(name, '/') >= 0:
		return invalid("name %q contains '/'", name)
	case strings.IndexByte(name, 0) >= 0:
		return invalid("name %q contains NUL", name)
	}
	return nil
}

// SplitLinkPath splits a hardlink target (a slash path relative to the
// snapshot root) into its components, each a ValidName.
func SplitLinkPath(p string) ([]string, error) {
	if p == "" || len(p) > MaxTargetLen {
		return nil, invalid("hardlink path of %d bytes", len(p))
	}
	parts := strings.Split(p, "/")
	for _, c := range parts {
		if err := ValidName(c); err != nil {
			return nil, invalid("hardlink path %q: not a relative path of valid names", p)
		}
	}
	return parts, nil
}

// Validate checks the rules of §6 for one entry on its own.
func (e *Entry) Validate() error {
	if err := ValidName(e.Name); err != nil {
		return err
	}
	fail := func(format string, args ...any) error {
		return invalid("entry %q (%v): %s", e.Name, e.Kind, fmt.Sprintf(format, args...))
	}
	if e.Kind < Dir || e.Kind > Socket {
		return fail("unknown kind")
	}
	if e.Mode > MaxMode {
		return fail("mode %#o has bits outside 07777", e.Mode)
	}
	if len(e.User) > MaxNameLen || len(e.Group) > MaxNameLen {
		return fail("user or group name longer than %d bytes", MaxNameLen)
	}
	if e.MtimeNsec >= 1e9 {
		return fail("mtime nanoseconds %d", e.MtimeNsec)
	}
	var zero ID
	if e.Kind != File && (e.Size != 0 || e.Layout != 0 || len(e.Chunks) != 0 || len(e.Lists) != 0) {
		return fail("size or content on a non-file")
	}
	if e.Kind != Dir && e.Subtree != zero {
		return fail("subtree on a non-directory")
	}
	if e.Kind != Symlink && e.Kind != Hardlink && e.Target != "" {
		return fail("target on a non-link")
	}
	if e.Kind != CharDev && e.Kind != BlockDev && (e.Major != 0 || e.Minor != 0) {
		return fail("device numbers on a non-device")
	}
	switch e.Kind {
	case File:
		if err := e.validateContent(); err != nil {
			return fail("%v", err)
		}
	case Symlink:
		if e.Target == "" || len(e.Target) > MaxTargetLen || strings.IndexByte(e.Target, 0) >= 0 {
			return fail("symlink target of %d bytes or with NUL", len(e.Target))
		}
	case Hardlink:
		if _, err := SplitLinkPath(e.Target); err != nil {
			return fail("%v", err)
		}
	}
	if len(e.Xattrs) > MaxXattrs {
		return fail("%d xattrs, more than %d", len(e.Xattrs), MaxXattrs)
	}
	for i, x := range e.Xattrs {
		if x.Name == "" || len(x.Name) > MaxNameLen || strings.IndexByte(x.Name, 0) >= 0 {
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

func (e *Entry) validateContent() error {
	switch e.Layout {
	case LayoutInline:
		if len(e.Lists) != 0 {
			return errors.New("lists on an inline file")
		}
		var sum uint64
		for _, c := range e.Chunks {
			if c.Length == 0 || c.Length > MaxChunkLength {
				return fmt.Errorf("chunk length %d", c.Length)
			}
			sum += c.Length // cannot wrap: that would take 2^38 chunks of ≤ 2^26 bytes
		}
		if sum != e.Size {
			return fmt.Errorf("chunk lengths add up to %d, size is %d", sum, e.Size)
		}
	case LayoutIndirect:
		if len(e.Chunks) != 0 {
			return errors.New("chunks on an indirect file")
		}
		if len(e.Lists) == 0 {
			return errors.New("indirect file without lists")
		}
	default:
		return fmt.Errorf("layout %d", e.Layout)
	}
	return nil
}

// Validate checks every entry and that names are sorted bytewise and unique.
func (t *Tree) Validate() error {
	if len(t.Entries) > MaxEntries {
		return invalid("%d entries, more than %d", len(t.Entries), MaxEntries)
	}
	for i := range t.Entries {
		e := &t.Entries[i]
		if err := e.Validate(); err != nil {
			return err
		}
		if i > 0 && t.Entries[i-1].Name >= e.Name {
			return invalid("entry %q: names not sorted or not unique", e.Name)
		}
	}
	return nil
}

// DropUnset removes entries whose Kind is zero: a walker's mark for an
// entry it listed but could not read.
func (t *Tree) DropUnset() {
	kept := t.Entries[:0]
	for _, e := range t.Entries {
		if e.Kind != 0 {
			kept = append(kept, e)
		}
	}
	t.Entries = kept
}
