// Package chunk cuts byte streams into content-defined chunks.
//
// It owns the chunking algorithm of the store format (docs/format.md §10): a
// normalized gear hash in the style of FastCDC. Its invariants: a boundary
// depends only on the 64 bytes before it and on its distance from the
// previous boundary, so the same data yields the same chunks wherever it
// sits in a stream; every chunk but the last of a stream is between Min and
// Max bytes; and Chunker, whatever its reader does, returns exactly the
// chunks Cut finds in the whole stream.
package chunk

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Params sets the chunk sizes in bytes. Avg is a power of two.
type Params struct {
	Min int `json:"min"`
	Avg int `json:"avg"`
	Max int `json:"max"`
}

// Default is the parameter set of new stores.
var Default = Params{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}

// Limits on Params. The window is the number of bytes the gear hash spans;
// MaxSize matches the largest plaintext a pack blob may hold.
const (
	Window  = 64
	MaxSize = 64 << 20
)

// Validate reports whether p can be used: Window ≤ Min < Avg < Max ≤ MaxSize
// and Avg a power of two.
func (p Params) Validate() error {
	switch {
	case p.Min < Window:
		return fmt.Errorf("chunk params %+v: min below %d", p, Window)
	case p.Avg <= p.Min || p.Max <= p.Avg:
		return fmt.Errorf("chunk params %+v: need min < avg < max", p)
	case p.Max > MaxSize:
		return fmt.Errorf("chunk params %+v: max above %d", p, MaxSize)
	case p.Avg&(p.Avg-1) != 0:
		return fmt.Errorf("chunk params %+v: avg not a power of two", p)
	}
	return nil
}

// masks returns the normalized masks (level 2): with Avg = 2^n, maskS has
// the top n+2 bits set and applies to chunk lengths up to Avg, maskL has the
// top n-2 bits set and applies beyond.
func (p Params) masks() (maskS, maskL uint64) {
	n := bits.TrailingZeros64(uint64(p.Avg))
	return ^uint64(0) << (64 - (n + 2)), ^uint64(0) << (64 - (n - 2))
}

// gear is the hash's byte table: the first 256 outputs of SplitMix64 started
// from state 0.
var gear = func() (g [256]uint64) {
	var s uint64
	for i := range g {
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		g[i] = z ^ z>>31
	}
	return g
}()

// Cut returns the length of the first chunk of data, given that data holds
// at least p.Max bytes or is the final tail of the stream (final=true).
// p must be valid.
//
// If neither holds, Cut returns the boundary when one lies within data (a
// boundary depends only on the bytes before it) and 0 when it needs more
// data. For final data Cut returns 0 only when data is empty.
func Cut(data []byte, p Params, final bool) int {
	n := len(data)
	if n < p.Min {
		if final {
			return n
		}
		return 0
	}
	limit := min(n, p.Max)
	maskS, maskL := p.masks()

	// The hash forgets a byte 64 updates after it, so starting at the first
	// candidate's 64-byte window gives the same hash as starting at 0.
	var h uint64
	for _, b := range data[p.Min-Window : p.Min-1] {
		h = h<<1 + gear[b]
	}
	i, h := scan(data[p.Min-1:min(p.Avg, limit)], h, maskS)
	if i >= 0 {
		return p.Min + i
	}
	if limit > p.Avg {
		i, _ = scan(data[p.Avg:limit], h, maskL)
		if i >= 0 {
			return p.Avg + 1 + i
		}
	}
	switch {
	case limit == p.Max:
		return p.Max
	case final:
		return n
	}
	return 0
}

// scan feeds b into the hash h and returns the index of the first byte after
// which h&mask == 0, or -1 and the hash after all of b.
//
// It steps two bytes at a time: the hash two bytes on is 4h + (2g0 + g1),
// whose second term does not depend on h, so the loop-carried chain is one
// shift-add per two bytes; the hash between them, 2h + g0, is checked aside.
func scan(b []byte, h, mask uint64) (int, uint64) {
	i := 0
	for ; len(b)-i >= 8; i += 8 {
		w := b[i : i+8 : i+8]
		g0, g1 := gear[w[0]], gear[w[1]]
		h0 := h<<1 + g0
		h = h<<2 + (g0<<1 + g1)
		if h0&mask == 0 {
			return i, h0
		}
		if h&mask == 0 {
			return i + 1, h
		}
		g0, g1 = gear[w[2]], gear[w[3]]
		h0 = h<<1 + g0
		h = h<<2 + (g0<<1 + g1)
		if h0&mask == 0 {
			return i + 2, h0
		}
		if h&mask == 0 {
			return i + 3, h
		}
		g0, g1 = gear[w[4]], gear[w[5]]
		h0 = h<<1 + g0
		h = h<<2 + (g0<<1 + g1)
		if h0&mask == 0 {
			return i + 4, h0
		}
		if h&mask == 0 {
			return i + 5, h
		}
		g0, g1 = gear[w[6]], gear[w[7]]
		h0 = h<<1 + g0
		h = h<<2 + (g0<<1 + g1)
		if h0&mask == 0 {
			return i + 6, h0
		}
		if h&mask == 0 {
			return i + 7, h
		}
	}
	for ; i < len(b); i++ {
		if h = h<<1 + gear[b[i]]; h&mask == 0 {
			return i, h
		}
	}
	return -1, h
}

// Chunker cuts a stream into chunks.
type Chunker struct {
	r          io.Reader
	p          Params
	buf        []byte // 2×Max: a whole chunk always fits after the unread bytes are moved to the front
	start, end int    // unread bytes are buf[start:end]
	eof        bool
	err        error // sticky read error
}

// New returns a Chunker reading r. p must be valid.
func New(r io.Reader, p Params) *Chunker {
	return &Chunker{r: r, p: p, buf: make([]byte, 2*p.Max)}
}

// Reset makes c read a new stream, keeping its buffer.
func (c *Chunker) Reset(r io.Reader) {
	c.r, c.start, c.end, c.eof, c.err = r, 0, 0, false, nil
}

// maxEmptyReads bounds how often a reader may return (0, nil) in a row.
const maxEmptyReads = 100

// Next returns the next chunk appended to dst[:0] (so the caller owns the
// memory and may pool it). It returns io.EOF (and no data) after the last
// chunk. An empty stream yields no chunks.
//
// A read error other than io.EOF is returned wrapped, and again by every
// later call; the chunks returned before it are the first chunks of the
// stream, exactly as Cut finds them.
func (c *Chunker) Next(dst []byte) ([]byte, error) {
	if c.err != nil {
		return dst[:0], c.err
	}
	if err := c.fill(); err != nil {
		c.err = err
		return dst[:0], err
	}
	if c.start == c.end {
		return dst[:0], io.EOF
	}
	n := Cut(c.buf[c.start:c.end], c.p, c.eof)
	dst = append(dst[:0], c.buf[c.start:c.start+n]...)
	c.start += n
	return dst, nil
}

// fill reads until at least Max bytes are buffered or the stream ends.
func (c *Chunker) fill() error {
	if c.eof || c.end-c.start >= c.p.Max {
		return nil
	}
	c.end = copy(c.buf, c.buf[c.start:c.end])
	c.start = 0
	empty := 0
	for c.end < c.p.Max {
		n, err := c.r.Read(c.buf[c.end:])
		if n < 0 || n > len(c.buf)-c.end {
			return fmt.Errorf("chunk: read stream: reader returned count %d", n)
		}
		c.end += n
		switch {
		case errors.Is(err, io.EOF):
			c.eof = true
			return nil
		case err != nil:
			return fmt.Errorf("chunk: read stream: %w", err)
		case n > 0:
			empty = 0
		default:
			if empty++; empty >= maxEmptyReads {
				return fmt.Errorf("chunk: read stream: %w", io.ErrNoProgress)
			}
		}
	}
	return nil
}
