package pack

import (
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// MaxWindow caps the zstd window a reader accepts.
const MaxWindow = 8 << 20

// Compressor compresses blobs for one goroutine.
type Compressor struct {
	enc *zstd.Encoder
	buf []byte
}

// NewCompressor makes a zstd encoder tuned for speed: ingest is CPU bound
// and chunks are small.
func NewCompressor() (*Compressor, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(1<<20),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	return &Compressor{enc: enc}, nil
}

// Compress returns the compressed form of plain and true, or plain and
// false when compression would not save at least 1/32 of the size. The
// result is valid until the next call.
func (c *Compressor) Compress(plain []byte) ([]byte, bool) {
	if len(plain) < 64 {
		return plain, false
	}
	c.buf = c.enc.EncodeAll(plain, c.buf[:0])
	if len(c.buf) >= len(plain)-len(plain)/32 {
		return plain, false
	}
	return c.buf, true
}

// Decompressor decompresses blobs with memory and window caps.
type Decompressor struct {
	dec *zstd.Decoder
	out []byte // the last output, reused by the next Decompress
}

// NewDecompressor makes a capped zstd decoder.
func NewDecompressor() (*Decompressor, error) {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(MaxWindow),
		zstd.WithDecoderMaxMemory(MaxRaw))
	if err != nil {
		return nil, err
	}
	return &Decompressor{dec: dec}, nil
}

var errTooLong = errors.New("decompressed data longer than recorded")

// KeepBuffer is the largest buffer a reader of blobs (a Decompressor, the
// store's reader) keeps from one blob for the next: chunks are far
// smaller, and a rare large blob should not pin its buffer.
const KeepBuffer = 4 << 20

// Decompress inflates src, which must yield exactly raw bytes. The result
// is valid until the next call: the Decompressor reuses its buffer.
func (d *Decompressor) Decompress(src []byte, raw int) ([]byte, error) {
	if raw > MaxRaw {
		return nil, errTooLong
	}
	buf := d.out[:0]
	if cap(buf) < raw {
		buf = make([]byte, 0, raw)
	}
	out, err := d.dec.DecodeAll(src, buf)
	if cap(out) <= KeepBuffer {
		d.out = out[:0]
	}
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if len(out) != raw {
		return nil, fmt.Errorf("decompressed to %d bytes, want %d", len(out), raw)
	}
	return out, nil
}
