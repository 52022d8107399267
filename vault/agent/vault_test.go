package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"testing"
	"time"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/chunk"
)

// fakeVault speaks the protocol from the vault's side, checking everything
// the agent sends against docs/agent-protocol.md.
type fakeVault struct {
	base   string
	params chunk.Params
	roots  []string
	store  map[[32]byte][]byte // chunks held, shared between pulls

	// read decides READ (true) or SKIP for a file ENTRY; nil reads all.
	read func(e agentproto.Entry) bool
	// want decides whether chunk i of a segment is wanted; nil wants those
	// not in the store and not already wanted in the segment.
	want func(e agentproto.Entry, h agentproto.Hashes, i int) bool
	// onHashes runs when HASHES arrive, before the WANT is sent.
	onHashes func(e agentproto.Entry, h agentproto.Hashes)
	// start starts an agent; nil runs Serve in this process.
	start func(t *testing.T, ctx context.Context) (io.WriteCloser, *agentproto.Reader, <-chan error)
}

type pulled struct {
	welcome  agentproto.Welcome
	entries  []agentproto.Entry
	byPath   map[string]agentproto.Entry
	warns    []agentproto.Warn
	fileErrs map[string]string // path → FILEERR message
	files    map[string][]byte // path → content, for files read to the end
	// incomplete lists files read to the end whose chunks the vault
	// neither held nor wanted.
	incomplete []string
	read       []string            // paths answered READ, in order
	skipped    []string            // paths answered SKIP
	sent       map[string][]uint64 // path → chunks sent (segment<<32 | index)
	wanted     map[string][]uint64
}

func newVault(base string, roots ...string) *fakeVault {
	return &fakeVault{
		base:   base,
		params: chunk.Params{Min: 256, Avg: 1024, Max: 4096},
		roots:  roots,
		store:  map[[32]byte][]byte{},
	}
}

// serve runs Serve on a pair of pipes and returns the vault's ends.
func serve(t *testing.T, ctx context.Context, opt Options) (toAgent io.WriteCloser, fromAgent *agentproto.Reader, done <-chan error) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := Serve(ctx, inR, outW, opt)
		inR.CloseWithError(fmt.Errorf("agent returned: %v", err))
		outW.Close()
		errc <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		outR.Close()
	})
	return inW, agentproto.NewReader(outR), errc
}

func send(t *testing.T, w io.Writer, m agentproto.Message) {
	t.Helper()
	if err := agentproto.Write(w, m); err != nil {
		t.Fatalf("vault: send %s: %v", agentproto.TypeName(m.Type()), err)
	}
}

// pull runs one whole conversation and returns what the agent sent and
// Serve's result.
func (v *fakeVault) pull(t *testing.T) (*pulled, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := v.start
	if start == nil {
		start = func(t *testing.T, ctx context.Context) (io.WriteCloser, *agentproto.Reader, <-chan error) {
			return serve(t, ctx, Options{Base: v.base, Hostname: "source.test"})
		}
	}
	w, r, done := start(t, ctx)
	p := &pulled{
		byPath:   map[string]agentproto.Entry{},
		fileErrs: map[string]string{},
		files:    map[string][]byte{},
		sent:     map[string][]uint64{},
		wanted:   map[string][]uint64{},
	}
	fail := func(format string, args ...any) {
		t.Helper()
		cancel()
		t.Fatalf("vault: "+format, args...)
	}
	send(t, w, agentproto.Hello{Min: v.params.Min, Avg: v.params.Avg, Max: v.params.Max, Roots: v.roots})
	m, err := r.Next()
	if err != nil {
		fail("want WELCOME: %v", err)
	}
	p.welcome = m.(agentproto.Welcome)

	type dir struct {
		id         uint64
		path, last string
	}
	type reading struct {
		e      agentproto.Entry
		hashes []agentproto.ChunkHash // of all segments announced so far
		seg    uint64                 // segment announced next
		failed bool                   // FILEERR came
		open   int                    // segments announced and not done
	}
	type segment struct {
		f      *reading
		n      uint64
		last   bool
		wanted []int // indices still to come as DATA
		off    int   // index in f.hashes of its first chunk
	}
	var (
		stack  []dir
		lastID uint64
		ended  bool
		rootOK bool       // the ENTRY of "/" was sent
		reads  []*reading // answered READ, announcement not complete
		open   []*segment // announced, SEGDONE not yet, in order
		// asked is every chunk wanted so far: a segment announced before
		// the DATA of an earlier one arrived does not ask for it again,
		// as the vault does not.
		asked = map[[32]byte]bool{}
	)
	for !ended || len(reads) > 0 || len(open) > 0 {
		m, err := r.Next()
		if err != nil {
			fail("after %d entries: %v", lastID, err)
		}
		switch m := m.(type) {
		case agentproto.Entry:
			if ended || m.ID != lastID+1 {
				fail("ENTRY %d %q after id %d (ended %v)", m.ID, m.Path, lastID, ended)
			}
			lastID = m.ID
			if len(stack) == 0 {
				if rootOK || m.Path != "/" || m.Kind != 1 {
					fail("ENTRY %q outside any directory", m.Path)
				}
				rootOK = true
			} else {
				top := &stack[len(stack)-1]
				name := path.Base(m.Path)
				if path.Dir(m.Path) != top.path || name <= top.last {
					fail("ENTRY %q in directory %q after %q", m.Path, top.path, top.last)
				}
				top.last = name
			}
			p.entries = append(p.entries, m)
			p.byPath[m.Path] = m
			if m.Kind == 1 {
				stack = append(stack, dir{id: m.ID, path: m.Path})
			}
			if m.Kind == 2 {
				if v.read == nil || v.read(m) {
					p.read = append(p.read, m.Path)
					reads = append(reads, &reading{e: m})
					send(t, w, agentproto.Read{File: m.ID})
				} else {
					p.skipped = append(p.skipped, m.Path)
					send(t, w, agentproto.Skip{File: m.ID})
				}
			}
		case agentproto.DirEnd:
			if len(stack) == 0 || stack[len(stack)-1].id != m.ID {
				fail("DIREND %d, open directories %v", m.ID, stack)
			}
			stack = stack[:len(stack)-1]
		case agentproto.End:
			if len(stack) != 0 || ended {
				fail("END with open directories %v", stack)
			}
			ended = true
		case agentproto.Warn:
			p.warns = append(p.warns, m)
		case agentproto.FileErr:
			if len(reads) == 0 || reads[0].e.ID != m.File {
				fail("FILEERR for file %d, not the one being announced", m.File)
			}
			p.fileErrs[reads[0].e.Path] = m.Message
			reads[0].failed = true
			reads = reads[1:]
		case agentproto.Hashes:
			if len(reads) == 0 || reads[0].e.ID != m.File {
				fail("HASHES for file %d, not the one being announced", m.File)
			}
			f := reads[0]
			if m.Segment != f.seg {
				fail("HASHES for segment %d of %q, want %d", m.Segment, f.e.Path, f.seg)
			}
			if len(m.Chunks) > segmentChunks || !m.Last && len(m.Chunks) == 0 || m.Last && len(m.Chunks) == 0 && m.Segment != 0 {
				fail("segment %d of %q has %d chunks (last %v)", m.Segment, f.e.Path, len(m.Chunks), m.Last)
			}
			if len(open) >= agentproto.MaxOpenSegments {
				fail("more than %d segments open", agentproto.MaxOpenSegments)
			}
			for _, c := range m.Chunks {
				if c.Length > uint32(v.params.Max) || c.Length < uint32(v.params.Min) && !m.Last {
					fail("chunk of %d bytes in %q", c.Length, f.e.Path)
				}
			}
			if v.onHashes != nil {
				v.onHashes(f.e, m)
			}
			sg := &segment{f: f, n: m.Segment, last: m.Last, off: len(f.hashes)}
			f.hashes = append(f.hashes, m.Chunks...)
			f.seg++
			f.open++
			open = append(open, sg)
			if m.Last {
				reads = reads[1:]
			}
			bitmap := make([]byte, (len(m.Chunks)+7)/8)
			for i, c := range m.Chunks {
				var want bool
				if v.want != nil {
					want = v.want(f.e, m, i)
				} else {
					_, have := v.store[c.Hash]
					want = !have && !asked[c.Hash]
				}
				if want {
					asked[c.Hash] = true
					bitmap[i/8] |= 1 << (i % 8)
					sg.wanted = append(sg.wanted, i)
					p.wanted[f.e.Path] = append(p.wanted[f.e.Path], m.Segment<<32|uint64(i))
				}
			}
			send(t, w, agentproto.Want{File: m.File, Segment: m.Segment, Bitmap: bitmap})
		case agentproto.Data:
			if len(open) == 0 || open[0].f.e.ID != m.File || open[0].n != m.Segment {
				fail("DATA for file %d segment %d, not the oldest open segment", m.File, m.Segment)
			}
			sg := open[0]
			f := sg.f
			if len(sg.wanted) == 0 || m.Index != uint64(sg.wanted[0]) {
				fail("DATA for chunk %d/%d of %q, not the next wanted (%v)", m.Segment, m.Index, f.e.Path, sg.wanted)
			}
			sg.wanted = sg.wanted[1:]
			c := f.hashes[sg.off+int(m.Index)]
			if uint32(len(m.Bytes)) != c.Length || agentproto.HashChunk(m.Bytes) != c.Hash {
				fail("DATA for chunk %d/%d of %q does not match its hash", m.Segment, m.Index, f.e.Path)
			}
			v.store[c.Hash] = m.Bytes
			p.sent[f.e.Path] = append(p.sent[f.e.Path], m.Segment<<32|m.Index)
		case agentproto.SegDone:
			if len(open) == 0 || open[0].f.e.ID != m.File || open[0].n != m.Segment {
				fail("SEGDONE for file %d segment %d, not the oldest open segment", m.File, m.Segment)
			}
			sg := open[0]
			f := sg.f
			if len(sg.wanted) != 0 {
				fail("SEGDONE %d of %q with wanted chunks %v missing", m.Segment, f.e.Path, sg.wanted)
			}
			open = open[1:]
			f.open--
			if sg.last && !f.failed {
				var content []byte
				complete := true
				for _, c := range f.hashes {
					b, ok := v.store[c.Hash]
					complete = complete && ok // not, when a test's want leaves chunks out
					content = append(content, b...)
				}
				switch {
				case !complete:
					p.incomplete = append(p.incomplete, f.e.Path)
				case uint64(len(content)) != f.e.Size:
					fail("%q: %d bytes, ENTRY said %d", f.e.Path, len(content), f.e.Size)
				default:
					// The chunks are exactly those the chunker finds.
					rest := content
					for i, c := range f.hashes {
						if n := chunk.Cut(rest, v.params, true); n != int(c.Length) {
							fail("%q: chunk %d of %d bytes, the chunker cuts %d", f.e.Path, i, c.Length, n)
						}
						rest = rest[c.Length:]
					}
					p.files[f.e.Path] = content
				}
			}
		default:
			fail("unexpected %s", agentproto.TypeName(m.Type()))
		}
	}
	send(t, w, agentproto.Bye{})
	if m, err := r.Next(); err != io.EOF {
		fail("after BYE: %v, %v", m, err)
	}
	return p, <-done
}

// mustPull is pull that wants Serve to succeed.
func (v *fakeVault) mustPull(t *testing.T) *pulled {
	t.Helper()
	p, err := v.pull(t)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return p
}

func (p *pulled) paths() []string {
	var out []string
	for _, e := range p.entries {
		out = append(out, e.Path)
	}
	return out
}

func (p *pulled) warned(path string, substr string) bool {
	for _, w := range p.warns {
		if w.Path == path && bytes.Contains([]byte(w.Message), []byte(substr)) {
			return true
		}
	}
	return false
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
