package pack

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"

	"drawbridge/vault/seal"
	"drawbridge/vault/vfs"
)

// Writer appends sealed blobs to one new pack. It is used by one goroutine.
type Writer struct {
	id      ID
	p       *vfs.Pending
	key     *seal.DataKey
	sum     *xxhash.Digest
	off     uint64
	entries []Entry
	buf     []byte
}

// NewWriter starts a pack under tmpDir with a fresh data key wrapped to rcpt.
func NewWriter(fsys vfs.FS, tmpDir string, rcpt *seal.Recipient) (*Writer, error) {
	id, err := NewID()
	if err != nil {
		return nil, err
	}
	key, err := seal.NewDataKey()
	if err != nil {
		return nil, err
	}
	wrapped, err := rcpt.Wrap(key)
	if err != nil {
		return nil, err
	}
	if len(wrapped) > MaxWrapped {
		return nil, fmt.Errorf("wrapped key of %d bytes is too long", len(wrapped))
	}
	p, err := vfs.Create(fsys, tmpDir)
	if err != nil {
		return nil, fmt.Errorf("create pack %s: %w", id, err)
	}
	w := &Writer{id: id, p: p, key: key, sum: xxhash.New()}
	hdr := make([]byte, 0, HeaderFixed+len(wrapped)+ChecksumSize)
	hdr = append(hdr, Magic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(wrapped)))
	hdr = append(hdr, wrapped...)
	hdr = binary.LittleEndian.AppendUint64(hdr, xxhash.Sum64(hdr))
	if err := w.write(hdr); err != nil {
		p.Abort()
		return nil, err
	}
	return w, nil
}

// ID is the pack's id.
func (w *Writer) ID() ID { return w.id }

// Size is the number of bytes written so far.
func (w *Writer) Size() uint64 { return w.off }

// Count is the number of blobs added so far.
func (w *Writer) Count() int { return len(w.entries) }

func (w *Writer) write(b []byte) error {
	if _, err := w.p.Write(b); err != nil {
		return fmt.Errorf("write pack %s: %w", w.id, err)
	}
	w.sum.Write(b)
	w.off += uint64(len(b))
	return nil
}

// Add seals one blob into the pack. data is the plaintext, or its zstd
// compression when compressed is set; raw is the plaintext length.
func (w *Writer) Add(typ Type, id [32]byte, raw int, data []byte, compressed bool) (Entry, error) {
	if raw > MaxRaw {
		return Entry{}, fmt.Errorf("blob of %d bytes is larger than %d", raw, MaxRaw)
	}
	var flags byte
	if compressed {
		flags = flagZstd
	}
	stored := len(data) + seal.Overhead
	b := w.buf[:0]
	b = append(b, 'B', byte(typ), flags, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(raw))
	b = binary.LittleEndian.AppendUint32(b, uint32(stored))
	b = append(b, id[:]...)
	ad := b[:BlobHeader]
	b = append(b, make([]byte, seal.NonceSize)...)
	nonce := b[BlobHeader:RecordFixed]
	b, err := w.key.Seal(b, nonce, data, ad)
	if err != nil {
		return Entry{}, fmt.Errorf("seal blob: %w", err)
	}
	b = binary.LittleEndian.AppendUint64(b, xxhash.Sum64(b))
	w.buf = b
	e := Entry{Pack: w.id, Offset: w.off, Length: uint32(len(b)), Type: typ, Raw: uint32(raw), ID: id}
	if err := w.write(b); err != nil {
		return Entry{}, err
	}
	w.entries = append(w.entries, e)
	return e, nil
}

// Finish writes the trailer and commits the pack durably and sealed under
// its final name. It returns the entries of every blob in it.
func (w *Writer) Finish() ([]Entry, error) {
	t := make([]byte, 0, TrailerSize)
	t = append(t, 'E')
	t = binary.LittleEndian.AppendUint32(t, uint32(len(w.entries)))
	w.sum.Write(t)
	t = binary.LittleEndian.AppendUint64(t, w.sum.Sum64())
	if _, err := w.p.Write(t); err != nil {
		w.p.Abort()
		return nil, fmt.Errorf("write pack %s: %w", w.id, err)
	}
	if err := w.p.Commit(w.id.Path()); err != nil {
		return nil, fmt.Errorf("commit pack %s: %w", w.id, err)
	}
	return w.entries, nil
}

// Abort discards the unfinished pack.
func (w *Writer) Abort() { w.p.Abort() }
