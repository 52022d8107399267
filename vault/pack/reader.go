package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"

	"drawbridge/vault/seal"
)

// Header is what a pack's header says.
type Header struct {
	Wrapped []byte // the age-wrapped data key
	Size    int    // bytes the header takes
}

// ParseHeader checks and decodes the start of a pack.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderFixed || string(b[:8]) != Magic {
		return Header{}, fmt.Errorf("%w: not a pack (bad magic)", ErrDamaged)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if n == 0 || n > MaxWrapped {
		return Header{}, fmt.Errorf("%w: wrapped key length %d out of range", ErrDamaged, n)
	}
	end := HeaderFixed + int(n)
	if len(b) < end+ChecksumSize {
		return Header{}, fmt.Errorf("%w: header truncated", ErrDamaged)
	}
	if xxhash.Sum64(b[:end]) != binary.LittleEndian.Uint64(b[end:]) {
		return Header{}, fmt.Errorf("%w: header checksum mismatch", ErrDamaged)
	}
	return Header{Wrapped: bytes.Clone(b[HeaderFixed:end]), Size: end + ChecksumSize}, nil
}

// ReadHeader reads and checks the header of a pack.
func ReadHeader(r io.ReaderAt) (Header, error) {
	b := make([]byte, HeaderFixed+MaxWrapped+ChecksumSize)
	n, err := r.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Header{}, err
	}
	return ParseHeader(b[:n])
}

// Record is one parsed blob record.
type Record struct {
	Type       Type
	Compressed bool
	Raw        uint32
	ID         [32]byte
	Nonce      []byte
	Sealed     []byte
	ad         []byte
}

// ParseRecord checks one blob record at the start of b (outer checksum and
// framing only) and returns it with its total length.
func ParseRecord(b []byte) (Record, int, error) {
	if len(b) < RecordFixed+ChecksumSize {
		return Record{}, 0, fmt.Errorf("%w: blob record truncated", ErrDamaged)
	}
	if b[0] != 'B' || b[3] != 0 || b[2]&^flagZstd != 0 {
		return Record{}, 0, fmt.Errorf("%w: bad blob record marker", ErrDamaged)
	}
	raw := binary.LittleEndian.Uint32(b[4:])
	stored := binary.LittleEndian.Uint32(b[8:])
	if raw > MaxRaw || stored > MaxStored || stored < seal.Overhead {
		return Record{}, 0, fmt.Errorf("%w: blob lengths out of range", ErrDamaged)
	}
	end := RecordFixed + int(stored)
	if len(b) < end+ChecksumSize {
		return Record{}, 0, fmt.Errorf("%w: blob record truncated", ErrDamaged)
	}
	if xxhash.Sum64(b[:end]) != binary.LittleEndian.Uint64(b[end:]) {
		return Record{}, 0, fmt.Errorf("%w: blob checksum mismatch", ErrDamaged)
	}
	r := Record{
		Type:       Type(b[1]),
		Compressed: b[2]&flagZstd != 0,
		Raw:        raw,
		Nonce:      b[BlobHeader:RecordFixed],
		Sealed:     b[RecordFixed:end],
		ad:         b[:BlobHeader],
	}
	copy(r.ID[:], b[12:BlobHeader])
	return r, end + ChecksumSize, nil
}

// ReadRecord reads the record an index entry names and checks its outer
// checksum and that it holds the expected blob.
func ReadRecord(r io.ReaderAt, e Entry) (Record, error) { return ReadRecordBuf(r, e, nil) }

// ReadRecordBuf is ReadRecord reading into buf when it is large enough;
// the Record then points into buf.
func ReadRecordBuf(r io.ReaderAt, e Entry, buf []byte) (Record, error) {
	if e.Length > RecordFixed+MaxStored+ChecksumSize || e.Length < RecordFixed+ChecksumSize {
		return Record{}, fmt.Errorf("%w: index entry length %d out of range", ErrDamaged, e.Length)
	}
	b := buf[:0]
	if uint64(cap(b)) < uint64(e.Length) {
		b = make([]byte, e.Length)
	}
	b = b[:e.Length]
	if _, err := r.ReadAt(b, int64(e.Offset)); err != nil {
		if errors.Is(err, io.EOF) {
			return Record{}, fmt.Errorf("%w: pack %s truncated", ErrDamaged, e.Pack)
		}
		return Record{}, fmt.Errorf("read pack %s: %w", e.Pack, err)
	}
	rec, n, err := ParseRecord(b)
	if err != nil {
		return Record{}, fmt.Errorf("pack %s offset %d: %w", e.Pack, e.Offset, err)
	}
	if n != int(e.Length) || rec.ID != e.ID {
		return Record{}, fmt.Errorf("%w: pack %s offset %d does not hold blob %x", ErrDamaged, e.Pack, e.Offset, e.ID[:8])
	}
	return rec, nil
}

// Open decrypts a record's sealed bytes with the pack key and, when
// compressed, decompresses them with dec. It checks that the plaintext has
// the recorded length and id. dst is reused when large enough.
func Open(rec Record, key *seal.DataKey, ids *seal.IDHasher, dec *Decompressor, dst []byte) ([]byte, error) {
	opened, err := key.Open(dst[:0], rec.Nonce, rec.Sealed, rec.ad)
	if err != nil {
		return nil, fmt.Errorf("%w: blob %x fails authentication", ErrDamaged, rec.ID[:8])
	}
	plain := opened
	if rec.Compressed {
		plain, err = dec.Decompress(opened, int(rec.Raw))
		if err != nil {
			return nil, fmt.Errorf("%w: blob %x: %v", ErrDamaged, rec.ID[:8], err)
		}
	}
	if len(plain) != int(rec.Raw) {
		return nil, fmt.Errorf("%w: blob %x has %d bytes, want %d", ErrDamaged, rec.ID[:8], len(plain), rec.Raw)
	}
	if ids.Sum(plain) != rec.ID {
		return nil, fmt.Errorf("%w: blob %x does not match its id", ErrDamaged, rec.ID[:8])
	}
	return plain, nil
}

// Damage is a byte range of a pack that held no valid record.
type Damage struct {
	Offset, Length uint64
	Err            error
}

// ScanResult is what a full scan of a pack found.
type ScanResult struct {
	Header    Header
	Entries   []Entry  // every blob record with a good checksum
	Damage    []Damage // ranges that could not be read as records
	Truncated bool     // no valid trailer
	BadHeader error    // the header itself is damaged
}

// Damaged says whether the scan found anything wrong.
func (r *ScanResult) Damaged() bool {
	return len(r.Damage) > 0 || r.Truncated || r.BadHeader != nil
}

// Scan checks every outer checksum of a whole pack held in b. It never needs
// the passphrase. After a bad record it resynchronises at the next offset
// where a whole valid record starts.
func Scan(id ID, b []byte) *ScanResult {
	res := &ScanResult{}
	h, err := ParseHeader(b)
	off := 0
	if err != nil {
		res.BadHeader = err
		off = HeaderFixed // look for records anyway
		if off > len(b) {
			off = len(b)
		}
	} else {
		res.Header = h
		off = h.Size
	}
	damageStart := -1
	flush := func(end int, err error) {
		if damageStart >= 0 {
			res.Damage = append(res.Damage, Damage{Offset: uint64(damageStart), Length: uint64(end - damageStart), Err: err})
			damageStart = -1
		}
	}
	var lastErr error
	for off < len(b) {
		if b[off] == 'E' && len(b)-off == TrailerSize {
			count := binary.LittleEndian.Uint32(b[off+1:])
			if xxhash.Sum64(b[:off+5]) == binary.LittleEndian.Uint64(b[off+5:]) && damageStart < 0 && res.BadHeader == nil {
				if int(count) != len(res.Entries) {
					res.Damage = append(res.Damage, Damage{Offset: uint64(off), Length: TrailerSize,
						Err: fmt.Errorf("%w: trailer counts %d blobs, found %d", ErrDamaged, count, len(res.Entries))})
				}
				return res
			}
			if damageStart < 0 && len(res.Damage) > 0 {
				return res // the earlier damage explains the checksum
			}
			if damageStart < 0 && res.BadHeader == nil {
				// Every record checked out, so the bytes the trailer covers
				// are good: the trailer itself is damaged.
				res.Damage = append(res.Damage, Damage{Offset: uint64(off), Length: TrailerSize,
					Err: fmt.Errorf("%w: trailer checksum mismatch", ErrDamaged)})
				return res
			}
			flush(off, lastErr)
			return res
		}
		rec, n, err := ParseRecord(b[off:])
		if err != nil {
			if damageStart < 0 {
				damageStart = off
				lastErr = err
			}
			off++
			continue
		}
		flush(off, lastErr)
		res.Entries = append(res.Entries, Entry{Pack: id, Offset: uint64(off), Length: uint32(n), Type: rec.Type, Raw: rec.Raw, ID: rec.ID})
		off += n
	}
	flush(len(b), lastErr)
	res.Truncated = true
	return res
}
