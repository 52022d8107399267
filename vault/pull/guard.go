package pull

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"

	"drawbridge/vault/tree"
)

// ErrHostileSource is wrapped by the error of an SFTP pull whose server
// answered outside what any real filesystem can hold: a file name that is
// not one path component, a directory listing beyond the caps.
var ErrHostileSource = errors.New("the source sent what no filesystem holds")

// Caps on one directory listing. The client library collects a whole
// listing before returning it, so the caps are enforced on the wire, as the
// replies arrive. Variables so that tests can lower them.
var (
	maxListEntries = tree.MaxEntries      // names in one directory
	maxListBytes   = 2 * tree.MaxTreeSize // reply bytes of one directory listing
)

// SFTP protocol (draft-ietf-secsh-filexfer-02) values the guard reads.
const (
	fxpName        = 104
	attrSize       = 0x00000001
	attrUIDGID     = 0x00000002
	attrPerms      = 0x00000004
	attrACModTime  = 0x00000008
	attrExtended   = 0x80000000
	maxSFTPPacket  = 256 << 10 // what github.com/pkg/sftp accepts, too
	sftpHeaderSize = 5         // uint32 length, byte type
)

// sftpGuard sits between the SSH channel and the SFTP client and reads
// the replies as they pass. While a listing is under way (the walker lists
// one directory at a time and sends no other request whose reply is a
// NAME packet meanwhile) it checks every name the server sends and counts
// names and bytes. A reply that breaks a rule is not delivered: the guard
// fails the channel instead, so the client never sees it.
type sftpGuard struct {
	r io.Reader

	listing atomic.Bool  // a directory listing is under way
	entries atomic.Int64 // names of the current listing
	bytes   atomic.Int64 // NAME reply bytes of the current listing

	mu  sync.Mutex
	err error

	// Framing, touched only by the goroutine that calls Read.
	hdr  [sftpHeaderSize]byte
	hn   int    // bytes of hdr filled
	left int    // bytes of the current packet's body still to come
	keep bool   // the current packet is a NAME reply of a listing
	body []byte // its body, collected
}

// startListing resets the counts for a new directory listing.
func (g *sftpGuard) startListing() {
	g.entries.Store(0)
	g.bytes.Store(0)
	g.listing.Store(true)
}

func (g *sftpGuard) endListing() { g.listing.Store(false) }

// failure is the guard's verdict, or nil.
func (g *sftpGuard) failure() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

func (g *sftpGuard) Read(p []byte) (int, error) {
	if err := g.failure(); err != nil {
		return 0, err
	}
	n, err := g.r.Read(p)
	if verr := g.scan(p[:n]); verr != nil {
		g.mu.Lock()
		if g.err == nil {
			g.err = verr
		}
		g.mu.Unlock()
		return 0, verr
	}
	return n, err
}

// scan follows the packet framing through b.
func (g *sftpGuard) scan(b []byte) error {
	for len(b) > 0 {
		if g.hn < sftpHeaderSize {
			k := copy(g.hdr[g.hn:], b)
			g.hn += k
			b = b[k:]
			if g.hn < sftpHeaderSize {
				return nil
			}
			length := binary.BigEndian.Uint32(g.hdr[:4])
			if length < 1 || length > maxSFTPPacket {
				return fmt.Errorf("%w: an SFTP reply of %d bytes", ErrHostileSource, length)
			}
			g.left = int(length) - 1
			g.keep = g.hdr[4] == fxpName && g.listing.Load()
			g.body = g.body[:0]
		}
		k := min(len(b), g.left)
		if g.keep {
			g.body = append(g.body, b[:k]...)
		}
		g.left -= k
		b = b[k:]
		if g.left > 0 {
			return nil
		}
		g.hn = 0
		if g.keep {
			g.keep = false
			if err := g.checkNames(g.body); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkNames checks one NAME reply of a listing (after its type byte): every
// name must be a valid tree entry name, apart from the "." and ".." that
// real servers list and the client drops.
func (g *sftpGuard) checkNames(body []byte) error {
	bytes := g.bytes.Add(int64(len(body)) + sftpHeaderSize)
	if bytes > int64(maxListBytes) {
		return fmt.Errorf("%w: a directory listing of more than %d bytes", ErrHostileSource, maxListBytes)
	}
	_, err := parseNames(body, func(name string) error {
		if name == "." || name == ".." {
			return nil
		}
		if err := tree.ValidName(name); err != nil {
			return fmt.Errorf("%w: a file name %s in a directory listing", ErrHostileSource, strconv.Quote(name))
		}
		if g.entries.Add(1) > int64(maxListEntries) {
			return fmt.Errorf("%w: a directory of more than %d entries", ErrHostileSource, maxListEntries)
		}
		return nil
	})
	return err
}

// parseNames reads a NAME reply body (id, count, count × (filename,
// longname, attrs)), calls fn with each filename, and returns the count.
func parseNames(b []byte, fn func(string) error) (int, error) {
	bad := fmt.Errorf("%w: a malformed directory listing", ErrHostileSource)
	u32 := func() (uint32, bool) {
		if len(b) < 4 {
			return 0, false
		}
		v := binary.BigEndian.Uint32(b)
		b = b[4:]
		return v, true
	}
	str := func() (string, bool) {
		n, ok := u32()
		if !ok || uint64(n) > uint64(len(b)) {
			return "", false
		}
		s := string(b[:n])
		b = b[n:]
		return s, true
	}
	skip := func(n int) bool {
		if len(b) < n {
			return false
		}
		b = b[n:]
		return true
	}
	if _, ok := u32(); !ok { // request id
		return 0, bad
	}
	count, ok := u32()
	// Every name takes at least 12 bytes (two empty strings, flags).
	if !ok || uint64(count) > uint64(len(b))/12 {
		return 0, bad
	}
	for i := uint32(0); i < count; i++ {
		name, ok := str()
		if !ok {
			return 0, bad
		}
		if _, ok := str(); !ok { // longname, for people
			return 0, bad
		}
		flags, ok := u32()
		if !ok {
			return 0, bad
		}
		fixed := 0
		if flags&attrSize != 0 {
			fixed += 8
		}
		if flags&attrUIDGID != 0 {
			fixed += 8
		}
		if flags&attrPerms != 0 {
			fixed += 4
		}
		if flags&attrACModTime != 0 {
			fixed += 8
		}
		if !skip(fixed) {
			return 0, bad
		}
		if flags&attrExtended != 0 {
			n, ok := u32()
			if !ok || uint64(n) > uint64(len(b))/8 {
				return 0, bad
			}
			for j := uint32(0); j < n; j++ {
				if _, ok := str(); !ok {
					return 0, bad
				}
				if _, ok := str(); !ok {
					return 0, bad
				}
			}
		}
		if err := fn(name); err != nil {
			return 0, err
		}
	}
	if len(b) != 0 {
		return 0, bad
	}
	return int(count), nil
}
