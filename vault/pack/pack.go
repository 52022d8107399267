// Package pack owns the pack file format (docs/format.md §5): a header with
// the pack's wrapped data key, blob records each with its own outer checksum,
// and a trailer. It writes packs through the durable-write helper, reads
// single blobs for restore, and scans whole packs without the passphrase for
// verify and index rebuild.
//
// Invariant: a pack is only ever visible under its final name complete and
// sealed; every length read from a pack is capped before it is used.
package pack

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
)

// Magic starts every pack (version 1).
const Magic = "DBPACK01"

// Limits a reader enforces.
const (
	MaxPackSize  = 512 << 20
	MaxRaw       = 64 << 20
	MaxStored    = MaxRaw + 4096
	MaxWrapped   = 4096
	HeaderFixed  = 8 + 4           // magic and wrapped-key length
	BlobHeader   = 4 + 4 + 4 + 32  // marker, type, flags, reserved, raw, stored, id
	RecordFixed  = BlobHeader + 24 // plus the nonce
	ChecksumSize = 8
	TrailerSize  = 1 + 4 + 8
)

// ErrDamaged wraps every checksum, framing or authentication failure.
var ErrDamaged = errors.New("damaged")

// Type says what a blob holds.
type Type uint8

// Blob types.
const (
	Data Type = 1
	Tree Type = 2
	List Type = 3
)

func (t Type) String() string {
	switch t {
	case Data:
		return "data"
	case Tree:
		return "tree"
	case List:
		return "list"
	}
	return fmt.Sprintf("type%d", uint8(t))
}

// Flag bits of a blob record.
const flagZstd = 1

// ID names a pack: 16 random bytes.
type ID [16]byte

// NewID returns a fresh random pack id.
func NewID() (ID, error) {
	var id ID
	_, err := rand.Read(id[:])
	return id, err
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Path is the pack's name relative to the store root.
func (id ID) Path() string {
	s := id.String()
	return path.Join("packs", s[:2], s+".pack")
}

// ParseID reads a pack id from its hex form.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("bad pack id %q", s)
	}
	copy(id[:], b)
	return id, nil
}

// Entry locates one blob: what the index stores.
type Entry struct {
	Pack   ID
	Offset uint64 // start of the blob record in the pack
	Length uint32 // whole record, header to checksum
	Type   Type
	Raw    uint32 // plaintext length
	ID     [32]byte
}

// EntrySize is the encoded size of an Entry without its blob id.
const EntrySize = 16 + 8 + 4 + 1 + 4

// MarshalLocation encodes an entry's location (not its id) for the index.
func (e Entry) MarshalLocation() []byte {
	b := make([]byte, EntrySize)
	copy(b, e.Pack[:])
	binary.LittleEndian.PutUint64(b[16:], e.Offset)
	binary.LittleEndian.PutUint32(b[24:], e.Length)
	b[28] = byte(e.Type)
	binary.LittleEndian.PutUint32(b[29:], e.Raw)
	return b
}

// UnmarshalLocation decodes what MarshalLocation wrote.
func UnmarshalLocation(id [32]byte, b []byte) (Entry, error) {
	if len(b) != EntrySize {
		return Entry{}, fmt.Errorf("index entry of %d bytes, want %d", len(b), EntrySize)
	}
	var e Entry
	copy(e.Pack[:], b)
	e.Offset = binary.LittleEndian.Uint64(b[16:])
	e.Length = binary.LittleEndian.Uint32(b[24:])
	e.Type = Type(b[28])
	e.Raw = binary.LittleEndian.Uint32(b[29:])
	e.ID = id
	return e, nil
}
