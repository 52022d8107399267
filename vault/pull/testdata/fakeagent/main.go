// Command fakeagent is a hostile drawbridge-agent for the vault's tests. It
// runs as a source's forced command and breaks the agent protocol
// (docs/agent-protocol.md) in the way named in the file given as its only
// argument, so that one source host serves every case.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/tree"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fakeagent MODE-FILE")
		os.Exit(2)
	}
	b, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	mode := strings.TrimSpace(string(b))
	if err := run(mode); err != nil {
		fmt.Fprintf(os.Stderr, "fakeagent %s: %v\n", mode, err)
		os.Exit(1)
	}
}

var out = bufio.NewWriter(os.Stdout)

// endless writes chunks of b until writing fails.
func endless(b []byte) error {
	for {
		if _, err := os.Stdout.Write(b); err != nil {
			return nil
		}
	}
}

// conv is a conversation that starts well.
type conv struct {
	r     *agentproto.Reader
	id    uint64
	root  string
	hello agentproto.Hello
}

func start() (*conv, error) {
	c := &conv{r: agentproto.NewReader(os.Stdin)}
	m, err := c.r.Next()
	if err != nil {
		return nil, fmt.Errorf("read HELLO: %w", err)
	}
	h, ok := m.(agentproto.Hello)
	if !ok {
		return nil, fmt.Errorf("got %T, want HELLO", m)
	}
	c.root, c.hello = h.Roots[0], h
	return c, c.send(agentproto.Welcome{Agent: "fake", Host: "fake"})
}

func (c *conv) send(m agentproto.Message) error {
	if err := agentproto.Write(out, m); err != nil {
		return err
	}
	return out.Flush()
}

// raw sends a frame as bytes, whatever they say.
func raw(b []byte) error {
	if _, err := out.Write(b); err != nil {
		return err
	}
	return out.Flush()
}

func (c *conv) entry(p string, kind tree.Kind, size uint64) (uint64, error) {
	return c.linked(p, kind, size, 0)
}

// linked lists an entry; a file with ino set is one of two links to it.
func (c *conv) linked(p string, kind tree.Kind, size, ino uint64) (uint64, error) {
	c.id++
	e := agentproto.Entry{ID: c.id, Path: p, Kind: uint8(kind), Mode: 0o644, MtimeSec: 1600000000,
		Size: size, Dev: 1, Ino: c.id, Nlink: 1, CtimeSec: 1600000000}
	if ino != 0 {
		e.Ino, e.Nlink = ino, 2
	}
	if kind == tree.Dir {
		e.Mode = 0o755
	}
	return c.id, c.send(e)
}

// top lists "/", the directories on the way to the first root and the root.
func (c *conv) top() error {
	if _, err := c.entry("/", tree.Dir, 0); err != nil {
		return err
	}
	parts := strings.Split(c.root[1:], "/")
	for i := range parts {
		if _, err := c.entry("/"+strings.Join(parts[:i+1], "/"), tree.Dir, 0); err != nil {
			return err
		}
	}
	return nil
}

// expect reads the vault's next message, which must be of type t.
func (c *conv) expect(t byte) (agentproto.Message, error) {
	m, err := c.r.Next()
	if err != nil {
		return nil, err
	}
	if m.Type() != t {
		return nil, fmt.Errorf("got %s, want %s", agentproto.TypeName(m.Type()), agentproto.TypeName(t))
	}
	return m, nil
}

// hang waits until the vault closes standard input.
func hang() error {
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// pattern is n bytes that differ with seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// file lists a file of the given chunks under the root, waits for READ and
// sends HASHES; it returns the WANT.
func (c *conv) file(chunks ...[]byte) (uint64, agentproto.Want, error) {
	var size uint64
	h := agentproto.Hashes{Last: true}
	for _, b := range chunks {
		size += uint64(len(b))
		h.Chunks = append(h.Chunks, agentproto.ChunkHash{Hash: agentproto.HashChunk(b), Length: uint32(len(b))})
	}
	id, err := c.entry(c.root+"/f", tree.File, size)
	if err != nil {
		return 0, agentproto.Want{}, err
	}
	if _, err := c.expect(agentproto.TypeRead); err != nil {
		return 0, agentproto.Want{}, err
	}
	h.File = id
	if err := c.send(h); err != nil {
		return 0, agentproto.Want{}, err
	}
	m, err := c.expect(agentproto.TypeWant)
	if err != nil {
		return 0, agentproto.Want{}, err
	}
	return id, m.(agentproto.Want), nil
}

func run(mode string) error {
	switch mode {
	case "zeros": // cat /dev/zero
		return endless(make([]byte, 64<<10))
	case "yes":
		return endless(bytes.Repeat([]byte("y\n"), 32<<10))
	case "garbage":
		b := make([]byte, 64<<10)
		rand.Read(b)
		return endless(b)
	case "exit":
		fmt.Fprintln(os.Stderr, "fakeagent: cannot speak this version")
		os.Exit(3)
	}

	c, err := start()
	if err != nil {
		return err
	}
	switch mode {
	case "stall":
		return hang()
	case "frame-4g": // a frame of 4 GiB - 1 bytes, then zeros
		if err := raw([]byte{0xff, 0xff, 0xff, 0xff, agentproto.TypeData}); err != nil {
			return err
		}
		return endless(make([]byte, 64<<10))
	case "frame-2^40": // a length of 2^40 written as 8 bytes
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], 1<<40)
		if err := raw(b[:]); err != nil {
			return err
		}
		return endless(make([]byte, 64<<10))
	case "field-2^40": // an ENTRY whose path claims 2^40 bytes
		p := binary.AppendUvarint([]byte{agentproto.TypeEntry, 1}, 1<<40)
		p = append(p, "/x"...)
		f := binary.LittleEndian.AppendUint32(nil, uint32(len(p)))
		return raw(append(f, p...))
	case "dotdot", "slash", "order", "gap", "outside", "noroot", "badhash", "unwanted",
		"oversize", "entries", "files", "dup-data", "early-end", "long", "fileerr",
		"open-segments", "segment-order", "fileerr-open":
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	if mode == "noroot" {
		_, err := c.entry(c.root, tree.Dir, 0)
		return errOr(err, hang)
	}
	if err := c.top(); err != nil {
		return err
	}
	switch mode {
	case "dotdot": // an ENTRY named "..": patched in after encoding
		e := agentproto.Entry{ID: c.id + 1, Path: c.root + "/ab", Kind: uint8(tree.FIFO), Mode: 0o644, Nlink: 1}
		b, err := agentproto.AppendFrame(nil, e)
		if err != nil {
			return err
		}
		i := bytes.LastIndex(b, []byte(c.root+"/ab"))
		copy(b[i+len(c.root)+1:], "..")
		return errOr(raw(b), hang)
	case "slash": // a name "a/b": an ENTRY two levels down
		_, err := c.entry(c.root+"/a/b", tree.FIFO, 0)
		return errOr(err, hang)
	case "order":
		if _, err := c.entry(c.root+"/b", tree.FIFO, 0); err != nil {
			return err
		}
		_, err := c.entry(c.root+"/a", tree.FIFO, 0)
		return errOr(err, hang)
	case "gap":
		c.id++
		_, err := c.entry(c.root+"/a", tree.FIFO, 0)
		return errOr(err, hang)
	case "outside": // an entry beside the root, not on the way to it
		if err := c.send(agentproto.DirEnd{ID: c.id}); err != nil {
			return err
		}
		_, err := c.entry(c.root+"-beside", tree.FIFO, 0)
		return errOr(err, hang)
	case "long": // a well-formed pull of one file of 70,000 equal chunks
		return c.long(70000)
	case "fileerr":
		return c.fileErr()
	case "early-end":
		return errOr(c.send(agentproto.End{}), hang)
	case "entries": // a directory without end
		for i := 0; ; i++ {
			if _, err := c.entry(fmt.Sprintf("%s/n%012d", c.root, i), tree.FIFO, 0); err != nil {
				return nil
			}
		}
	case "files": // files without end, never read
		for i := 0; ; i++ {
			if _, err := c.entry(fmt.Sprintf("%s/f%012d", c.root, i), tree.File, 1); err != nil {
				return nil
			}
		}
	case "badhash": // DATA that is not what HASHES announced
		id, _, err := c.file(pattern(20000, 1))
		if err != nil {
			return err
		}
		return errOr(c.send(agentproto.Data{File: id, Segment: 0, Index: 0, Bytes: pattern(20000, 2)}), hang)
	case "unwanted": // DATA for a chunk beyond the segment
		id, _, err := c.file(pattern(20000, 1))
		if err != nil {
			return err
		}
		return errOr(c.send(agentproto.Data{File: id, Segment: 0, Index: 1, Bytes: pattern(20000, 1)}), hang)
	case "dup-data": // the same chunk twice
		id, _, err := c.file(pattern(20000, 1))
		if err != nil {
			return err
		}
		d := agentproto.Data{File: id, Segment: 0, Index: 0, Bytes: pattern(20000, 1)}
		if err := c.send(d); err != nil {
			return err
		}
		return errOr(c.send(d), hang)
	case "open-segments": // segments announced without end, never sent
		// Full segments of distinct chunks, for the most memory.
		n := agentproto.MaxOpenSegments + 1
		id, err := c.entry(c.root+"/f", tree.File, uint64(n*agentproto.SegmentChunks*c.hello.Min))
		if err != nil {
			return err
		}
		if _, err := c.expect(agentproto.TypeRead); err != nil {
			return err
		}
		for seg := range n {
			h := agentproto.Hashes{File: id, Segment: uint64(seg), Last: seg == n-1}
			for i := range agentproto.SegmentChunks {
				var hash [32]byte
				binary.LittleEndian.PutUint64(hash[:], uint64(seg*agentproto.SegmentChunks+i))
				h.Chunks = append(h.Chunks, agentproto.ChunkHash{Hash: hash, Length: uint32(c.hello.Min)})
			}
			if err := c.send(h); err != nil {
				return nil
			}
		}
		return hang()
	case "segment-order": // DATA for the second segment open before the first is done
		a, b := pattern(c.hello.Min, 5), pattern(c.hello.Min, 6)
		id, err := c.entry(c.root+"/f", tree.File, uint64(len(a)+len(b)))
		if err != nil {
			return err
		}
		if _, err := c.expect(agentproto.TypeRead); err != nil {
			return err
		}
		for seg, x := range [][]byte{a, b} {
			h := agentproto.Hashes{File: id, Segment: uint64(seg), Last: seg == 1,
				Chunks: []agentproto.ChunkHash{{Hash: agentproto.HashChunk(x), Length: uint32(len(x))}}}
			if err := c.send(h); err != nil {
				return err
			}
		}
		return errOr(c.send(agentproto.Data{File: id, Segment: 1, Index: 0, Bytes: b}), hang)
	case "fileerr-open":
		return c.fileErrOpen()
	case "oversize": // chunks that add up to more than the file's size
		id, err := c.entry(c.root+"/f", tree.File, 100)
		if err != nil {
			return err
		}
		if _, err := c.expect(agentproto.TypeRead); err != nil {
			return err
		}
		b := pattern(20000, 1)
		h := agentproto.Hashes{File: id, Last: true, Chunks: []agentproto.ChunkHash{{Hash: agentproto.HashChunk(b), Length: 20000}}}
		return errOr(c.send(h), hang)
	}
	return nil
}

// long sends a file of n chunks of the chunker's minimum size, all equal,
// as a correct agent would, then ends the conversation.
func (c *conv) long(n int) error {
	b := pattern(c.hello.Min, 3)
	ch := agentproto.ChunkHash{Hash: agentproto.HashChunk(b), Length: uint32(len(b))}
	id, err := c.entry(c.root+"/f", tree.File, uint64(n*len(b)))
	if err != nil {
		return err
	}
	if _, err := c.expect(agentproto.TypeRead); err != nil {
		return err
	}
	for seg := 0; seg*agentproto.SegmentChunks < n; seg++ {
		k := min(agentproto.SegmentChunks, n-seg*agentproto.SegmentChunks)
		h := agentproto.Hashes{File: id, Segment: uint64(seg), Last: (seg+1)*agentproto.SegmentChunks >= n}
		for range k {
			h.Chunks = append(h.Chunks, ch)
		}
		if err := c.send(h); err != nil {
			return err
		}
		m, err := c.expect(agentproto.TypeWant)
		if err != nil {
			return err
		}
		for i := range k {
			if m.(agentproto.Want).Has(i) {
				if err := c.send(agentproto.Data{File: id, Segment: uint64(seg), Index: uint64(i), Bytes: b}); err != nil {
					return err
				}
			}
		}
		if err := c.send(agentproto.SegDone{File: id, Segment: uint64(seg)}); err != nil {
			return err
		}
	}
	return c.finish()
}

// fileErr is a well-formed pull in which the first name of a file with two
// links cannot be read: "a" (read, then FILEERR) and "b" (a link to it) are
// left out; "c", a third link listed after the FILEERR, is stored.
func (c *conv) fileErr() error {
	a, err := c.linked(c.root+"/a", tree.File, 5, 77)
	if err != nil {
		return err
	}
	if _, err := c.linked(c.root+"/b", tree.File, 5, 77); err != nil {
		return err
	}
	if _, err := c.expect(agentproto.TypeRead); err != nil {
		return err
	}
	if _, err := c.expect(agentproto.TypeSkip); err != nil {
		return err
	}
	if err := c.send(agentproto.FileErr{File: a, Message: "changed while it was read"}); err != nil {
		return err
	}
	cid, err := c.linked(c.root+"/c", tree.File, 5, 77)
	if err != nil {
		return err
	}
	if _, err := c.expect(agentproto.TypeRead); err != nil {
		return err
	}
	b := []byte("hello")
	h := agentproto.Hashes{File: cid, Last: true, Chunks: []agentproto.ChunkHash{{Hash: agentproto.HashChunk(b), Length: 5}}}
	if err := c.send(h); err != nil {
		return err
	}
	m, err := c.expect(agentproto.TypeWant)
	if err != nil {
		return err
	}
	if m.(agentproto.Want).Has(0) {
		if err := c.send(agentproto.Data{File: cid, Bytes: b}); err != nil {
			return err
		}
	}
	if err := c.send(agentproto.SegDone{File: cid}); err != nil {
		return err
	}
	if err := c.send(agentproto.Warn{Path: c.root + "/d", Message: "permission denied"}); err != nil {
		return err
	}
	return c.finish()
}

// finish closes the directories of top and ends the conversation.
func (c *conv) finish() error {
	for id := len(strings.Split(c.root[1:], "/")) + 1; id >= 1; id-- {
		if err := c.send(agentproto.DirEnd{ID: uint64(id)}); err != nil {
			return err
		}
	}
	if err := c.send(agentproto.End{}); err != nil {
		return err
	}
	_, err := c.expect(agentproto.TypeBye)
	return err
}

// errOr returns err, or what then does.
func errOr(err error, then func() error) error {
	if err != nil {
		return err
	}
	return then()
}

// fileErrOpen announces two segments of a file, then gives up on it with
// FILEERR before sending them, sends them, and ends the conversation as a
// correct agent would: the file is left out of a snapshot that commits.
func (c *conv) fileErrOpen() error {
	a, b := pattern(c.hello.Min, 7), pattern(c.hello.Min, 8)
	id, err := c.entry(c.root+"/f", tree.File, uint64(3*len(a)))
	if err != nil {
		return err
	}
	if _, err := c.expect(agentproto.TypeRead); err != nil {
		return err
	}
	for seg, x := range [][]byte{a, b} {
		h := agentproto.Hashes{File: id, Segment: uint64(seg),
			Chunks: []agentproto.ChunkHash{{Hash: agentproto.HashChunk(x), Length: uint32(len(x))}}}
		if err := c.send(h); err != nil {
			return err
		}
	}
	if err := c.send(agentproto.FileErr{File: id, Message: "changed while it was read"}); err != nil {
		return err
	}
	for seg, x := range [][]byte{a, b} {
		m, err := c.expect(agentproto.TypeWant)
		if err != nil {
			return err
		}
		if m.(agentproto.Want).Has(0) {
			if err := c.send(agentproto.Data{File: id, Segment: uint64(seg), Bytes: x}); err != nil {
				return err
			}
		}
		if err := c.send(agentproto.SegDone{File: id, Segment: uint64(seg)}); err != nil {
			return err
		}
	}
	return c.finish()
}
