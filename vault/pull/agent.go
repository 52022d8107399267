package pull

// The agent source: the vault's side of the agent protocol
// (docs/agent-protocol.md). drawbridge-agent walks the source and cuts its
// files into chunks; the vault judges every message against the protocol and
// against what came before it, decides what to read and which chunks to
// take, re-hashes every chunk it receives, and builds the snapshot's trees.
// The first thing out of place fails the pull; nothing is committed here.
//
// Memory is bounded whatever the agent sends: frames are capped by
// agentproto, at most agentproto.MaxPending files are read and unfinished,
// at most agentproto.MaxOpenSegments segments are open (about 85 MiB at
// worst), at most maxAgentStoring received chunks wait to be stored,
// directories are at most maxAgentDepth deep with at most tree.MaxEntries
// entries each, and the directory listings held until their trees can be
// stored are counted against agentLimits.held.
//
// Hashing: the agent hashes each chunk once, as it cuts it; the vault hashes
// each chunk it receives twice, once with the protocol's unkeyed BLAKE3 to
// check it against what HASHES announced, once with the store's keyed hash
// for its id. The two cannot be one: the source must never hold the
// store's key, and the unkeyed hash is what the source chunk map remembers
// for the next pull.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/chunk"
	"drawbridge/vault/config"
	"drawbridge/vault/pack"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

func init() { Register(config.KindAgent, pullAgent) }

const (
	// agentCommand is what the session asks to run; the source's forced
	// command runs the agent whatever is asked.
	agentCommand = "drawbridge-agent"

	maxAgentDepth = 1024 // directories open at once
	// maxAgentHeld caps the estimated bytes of directory listings held
	// until their trees are stored: about 400,000 entries. With the
	// garbage of decoding them the heap stays near 350 MiB.
	maxAgentHeld = 128 << 20
	// maxAgentKnown caps the chunks this pull remembers having received,
	// so a chunk repeated later in the pull is not transferred again.
	maxAgentKnown = 1 << 17
	// maxAgentLinkBytes caps the memory of the multiply linked inodes
	// remembered to store later names as hard links; inodes met beyond it
	// are stored as files.
	maxAgentLinkBytes = 32 << 20
	// maxAgentStoring caps the received chunks being stored at once: each
	// takes a buffer of the chunker's max.
	maxAgentStoring = 16
	// agentStderrKeep is how much of the agent's standard error is kept for
	// messages.
	agentStderrKeep = 4096
	// agentEntrySize is the memory a tree.Entry takes, rounded up.
	agentEntrySize = 256
)

var (
	// errAgentIdle: the agent sent nothing, or took nothing, for the
	// source's idle timeout.
	errAgentIdle = errors.New("agent idle")
	// errAgentGone: the agent's output ended before the conversation did.
	errAgentGone = errors.New("agent ended the conversation early")
	// errAgentHeld: the agent listed more than the vault holds at once.
	errAgentHeld = errors.New("agent listed more than the vault holds at once")
)

func agentViolation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", agentproto.ErrProtocol, fmt.Sprintf(format, args...))
}

// agentLimits bound one pull.
type agentLimits struct {
	idle time.Duration // the longest the agent may leave the vault waiting
	held int64         // estimated bytes of directory listings held at once
}

// pullAgent runs drawbridge-agent on the source through c and stores what
// it sends into w. It returns the snapshot's root tree and the roots pulled.
func pullAgent(ctx context.Context, c *ssh.Client, src *config.Source, w *store.Writer, log *slog.Logger) (tree.ID, []string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	roots, err := agentRoots(src.Paths)
	if err != nil {
		return tree.ID{}, nil, err
	}
	lim := agentLimits{idle: src.Timeout, held: maxAgentHeld}
	if lim.idle <= 0 {
		lim.idle = config.DefaultTimeout
	}
	sess, err := c.NewSession()
	if err != nil {
		return tree.ID{}, nil, fmt.Errorf("agent: open SSH session: %w", err)
	}
	defer sess.Close()
	stdin, err := sess.StdinPipe()
	if err != nil {
		return tree.ID{}, nil, fmt.Errorf("agent: %w", err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return tree.ID{}, nil, fmt.Errorf("agent: %w", err)
	}
	stderr := &agentStderr{}
	sess.Stderr = stderr
	if err := sess.Start(agentCommand); err != nil {
		return tree.ID{}, nil, fmt.Errorf("agent: start: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sess.Wait() }()

	conn := agentConn{in: stdout, out: stdin, close: func() { sess.Close() }}
	root, err := runAgent(ctx, conn, roots, w, log, lim)
	if err == nil {
		// BYE is sent: the agent exits 0.
		stdin.Close()
		t := time.NewTimer(lim.idle)
		defer t.Stop()
		select {
		case werr := <-exited:
			var exit *ssh.ExitError
			var missing *ssh.ExitMissingError
			switch {
			case errors.As(werr, &exit):
				err = fmt.Errorf("agent: exited with status %d after BYE", exit.ExitStatus())
			case errors.As(werr, &missing):
				log.Warn("agent: the source reported no exit status after BYE")
			case werr != nil:
				err = fmt.Errorf("agent: after BYE: %w", werr)
			}
		case <-t.C:
			err = fmt.Errorf("%w: the agent did not exit within %v of BYE", errAgentIdle, lim.idle)
		case <-ctx.Done():
			err = fmt.Errorf("agent: %w", context.Cause(ctx))
		}
	}
	if err != nil {
		// Give the agent a moment to exit, for what it says on standard
		// error; then the deferred Close ends the session.
		stdin.Close()
		t := time.NewTimer(time.Second)
		select {
		case <-exited:
		case <-t.C:
		}
		t.Stop()
		if s := stderr.String(); s != "" {
			err = fmt.Errorf("%w (the agent's standard error: %q)", err, s)
		}
		return tree.ID{}, nil, err
	}
	return root, roots, nil
}

// agentRoots returns paths as HELLO wants them: absolute, clean, sorted,
// none inside another.
func agentRoots(paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, errors.New("agent: no paths to pull")
	}
	var abs []string
	for _, p := range paths {
		if !path.IsAbs(p) {
			return nil, fmt.Errorf("agent: path %q is not absolute", p)
		}
		c := path.Clean(p)
		if err := agentproto.ValidPath(c); err != nil {
			return nil, fmt.Errorf("agent: path %q: %w", p, err)
		}
		abs = append(abs, c)
	}
	slices.Sort(abs)
	var roots []string
	for _, a := range abs {
		if n := len(roots); n > 0 && agentproto.Inside(a, roots[n-1]) {
			continue
		}
		roots = append(roots, a)
	}
	if len(roots) > agentproto.MaxRoots {
		return nil, fmt.Errorf("agent: %d paths, more than the %d the protocol carries", len(roots), agentproto.MaxRoots)
	}
	return roots, nil
}

// agentStderr keeps the start of the agent's standard error.
type agentStderr struct {
	mu sync.Mutex
	b  []byte
}

func (s *agentStderr) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if room := agentStderrKeep - len(s.b); room > 0 {
		s.b = append(s.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (s *agentStderr) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSpace(string(s.b))
}

// agentConn is the agent's standard output (in) and input (out). close
// makes blocked reads and writes on them return.
type agentConn struct {
	in    io.Reader
	out   io.Writer
	close func()
}

// agentLink carries the conversation. What the vault says is buffered and
// flushed before it waits for the agent; every wait, to read or to write,
// is bounded by the idle timeout.
type agentLink struct {
	in    io.Reader
	out   io.Writer
	bw    *bufio.Writer
	buf   []byte
	idle  time.Duration
	close func()
	idled atomic.Bool
}

func newAgentLink(conn agentConn, idle time.Duration, close func()) *agentLink {
	l := &agentLink{in: conn.in, out: conn.out, idle: idle, close: close}
	l.bw = bufio.NewWriterSize(agentWriter{l}, 64<<10)
	return l
}

// guard runs f, giving up on the conversation if it takes longer than the
// idle timeout.
func (l *agentLink) guard(f func() error) error {
	t := time.AfterFunc(l.idle, func() {
		l.idled.Store(true)
		l.close()
	})
	defer t.Stop()
	return f()
}

// Read flushes what the vault has to say, then reads from the agent.
func (l *agentLink) Read(p []byte) (n int, err error) {
	if err := l.bw.Flush(); err != nil {
		return 0, err
	}
	err = l.guard(func() (err error) {
		n, err = l.in.Read(p)
		return err
	})
	return n, err
}

type agentWriter struct{ l *agentLink }

func (w agentWriter) Write(p []byte) (n int, err error) {
	err = w.l.guard(func() (err error) {
		n, err = w.l.out.Write(p)
		return err
	})
	if err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.EOF) {
			// The agent is gone: its output may still hold why.
			err = fmt.Errorf("write to the agent: %w: %w", errAgentGone, err)
		} else {
			err = fmt.Errorf("write to the agent: %w", err)
		}
	}
	return n, err
}

func (l *agentLink) send(m agentproto.Message) error {
	b, err := agentproto.AppendFrame(l.buf[:0], m)
	if err != nil {
		return err
	}
	l.buf = b
	_, err = l.bw.Write(b)
	return err
}

// runAgent speaks the protocol with the agent on conn: HELLO for roots, then
// everything the agent sends, stored into w, until END, then BYE. It returns
// the snapshot's root tree. When ctx ends or the agent is idle too long it
// calls conn.close and fails; on other failures closing conn is the
// caller's.
func runAgent(ctx context.Context, conn agentConn, roots []string, w *store.Writer, log *slog.Logger, lim agentLimits) (tree.ID, error) {
	params := w.ChunkParams()
	if params.Max > agentproto.MaxDataChunk {
		return tree.ID{}, fmt.Errorf("agent: the store's chunks reach %d bytes, more than the %d a DATA frame carries", params.Max, agentproto.MaxDataChunk)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var once sync.Once
	closeConn := func() { once.Do(conn.close) }
	stop := context.AfterFunc(ctx, closeConn)
	defer stop()
	l := newAgentLink(conn, lim.idle, closeConn)
	bufs := make(chan []byte, maxAgentStoring)
	for range maxAgentStoring {
		bufs <- nil // allocated when first needed
	}
	p := &agentPull{
		ctx:    ctx,
		w:      w,
		log:    log,
		params: params,
		roots:  roots,
		lim:    lim,
		link:   l,
		known:  map[[32]byte]agentChunk{},
		wanted: map[[32]byte]agentWanted{},
		links:  map[[2]uint64]*agentLinkGroup{},
		bufs:   bufs,
		jobs:   make(chan agentJob, maxAgentStoring),
		start:  now(ctx),
	}
	for range maxAgentStoring {
		p.wg.Go(p.storer)
	}
	r := agentproto.NewReader(l)
	r.SetDataBuffers(p.dataBuffer)
	root, err := p.run(r)
	close(p.jobs)
	p.wg.Wait()
	if err != nil {
		switch {
		case ctx.Err() != nil:
			err = fmt.Errorf("agent: %w", context.Cause(ctx))
		case l.idled.Load():
			err = fmt.Errorf("%w: the agent sent or took nothing for %v", errAgentIdle, lim.idle)
		}
		return tree.ID{}, err
	}
	return root, nil
}

// agentPull is one conversation's state.
type agentPull struct {
	ctx    context.Context
	w      *store.Writer
	log    *slog.Logger
	params chunk.Params
	roots  []string
	lim    agentLimits
	link   *agentLink

	lastID    uint64
	rootSeen  bool // the ENTRY of "/" came
	ended     bool // END came
	rootDone  bool // the root tree is stored
	root      tree.ID
	stack     []*agentDir  // directories being listed, "/" first
	reads     []*agentFile // files answered READ and not yet announced to their end, in order
	open      []*agentSeg  // segments announced and not done, in order
	unread    int          // files answered READ and not finished
	held      int64        // estimated bytes of listings held
	known     map[[32]byte]agentChunk
	wanted    map[[32]byte]agentWanted // chunks wanted in the open segments
	links     map[[2]uint64]*agentLinkGroup
	linkBytes int64 // estimated bytes of links

	bufs  chan []byte // free buffers for received chunks; nil ones are yet to be made
	jobs  chan agentJob
	wg    sync.WaitGroup // the storers
	errMu sync.Mutex
	err   error // the first failure to store a chunk

	start                       time.Time
	nRead, nSkip, nChunk, nWant int64
	nRecv                       int64 // chunk bytes received
}

// agentDir is a directory listed and not yet stored.
type agentDir struct {
	id      uint64
	path    string
	full    bool // inside a root: all its entries belong to the snapshot
	parent  *agentDir
	index   int          // its entry in parent.entries
	entries []tree.Entry // in name order; Kind 0 marks one left out
	pending int          // entries whose content or subtree is not stored yet
	closed  bool         // its DIREND came
	held    int64
}

// agentFile is a file answered READ and not finished.
type agentFile struct {
	id     uint64
	path   string
	dir    *agentDir
	index  int
	st     store.FileStat
	size   uint64
	got    uint64          // bytes announced so far
	seg    uint64          // the segment expected next
	nOpen  int             // its segments announced and not done
	failed bool            // FILEERR came: it is left out once its open segments are done
	refs   []tree.ChunkRef // not yet in a list blob
	lists  []tree.ID
	packs  map[pack.ID]struct{}
	link   *agentLinkGroup // when it is the first name of a multiply linked inode
	linkAt [2]uint64
}

// agentSeg is a segment between its HASHES and its SEGDONE.
type agentSeg struct {
	f       *agentFile
	n       uint64
	last    bool
	chunks  []agentproto.ChunkHash
	refs    []tree.ChunkRef // filled for chunks held or stored
	packs   []pack.ID
	dup     []int32             // index of the wanted chunk with the same hash, or -1
	want    []byte              // bitmap sent in WANT
	earlier map[int]agentWanted // chunks wanted in an earlier open segment
	got     []byte              // bitmap of DATA received
	missing int
	wg      sync.WaitGroup
}

// agentWanted is chunk i of open segment s, wanted from the agent.
type agentWanted struct {
	s *agentSeg
	i int
}

// agentChunk is a chunk the vault holds.
type agentChunk struct {
	ref  tree.ChunkRef
	pack pack.ID
}

// agentLinkGroup is a multiply linked inode: its first name is stored as a
// file, later ones as hard links to it once it is stored.
type agentLinkGroup struct {
	target  string // the first name's path from the snapshot root
	done    bool
	waiting []agentLinkWaiter
}

type agentLinkWaiter struct {
	dir   *agentDir
	index int
	path  string
}

func agentBitSet(b []byte, i int) bool { return i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0 }
func agentSetBit(b []byte, i int)      { b[i/8] |= 1 << (i % 8) }

func (p *agentPull) run(r *agentproto.Reader) (tree.ID, error) {
	hello := agentproto.Hello{Min: p.params.Min, Avg: p.params.Avg, Max: p.params.Max, Roots: p.roots}
	if err := p.link.send(hello); err != nil {
		return tree.ID{}, fmt.Errorf("agent: HELLO: %w", err)
	}
	m, err := r.Next()
	if err == io.EOF {
		// An agent that speaks another version exits so, saying why on its
		// standard error, which the caller adds.
		return tree.ID{}, fmt.Errorf("%w: no WELCOME to a HELLO of protocol version %d (an older drawbridge-agent refuses it: update the agent on the source)", errAgentGone, agentproto.Version)
	}
	if err != nil {
		return tree.ID{}, fmt.Errorf("agent: waiting for WELCOME: %w", err)
	}
	wel, ok := m.(agentproto.Welcome)
	if !ok {
		return tree.ID{}, agentViolation("%s instead of WELCOME", agentproto.TypeName(m.Type()))
	}
	p.log.Info("agent pull started", "agent", wel.Agent, "host", wel.Host, "roots", p.roots)

	for !p.ended || !p.rootDone {
		m, err := r.Next()
		if serr := p.storeErr(); serr != nil && err != nil {
			return tree.ID{}, serr // what made the read fail
		}
		if err == io.EOF {
			return tree.ID{}, fmt.Errorf("%w: after %d entries, %d files unfinished, END seen %v", errAgentGone, p.lastID, p.unread, p.ended)
		}
		if err != nil {
			return tree.ID{}, err
		}
		if err := p.handle(m); err != nil {
			return tree.ID{}, err
		}
		if err := p.storeErr(); err != nil {
			return tree.ID{}, err
		}
	}
	if err := p.link.send(agentproto.Bye{}); err != nil {
		return tree.ID{}, fmt.Errorf("agent: BYE: %w", err)
	}
	switch m, err := r.Next(); {
	case err == nil:
		return tree.ID{}, agentViolation("%s after BYE", agentproto.TypeName(m.Type()))
	case err != io.EOF:
		return tree.ID{}, fmt.Errorf("agent: after BYE: %w", err)
	}
	p.log.Info("agent pull done", "entries", p.lastID, "read", p.nRead, "skipped", p.nSkip,
		"chunks", p.nChunk, "wanted", p.nWant, "received", p.nRecv, "seconds", now(p.ctx).Sub(p.start).Seconds())
	return p.root, nil
}

func (p *agentPull) handle(m agentproto.Message) error {
	switch m := m.(type) {
	case agentproto.Entry:
		return p.entry(&m)
	case agentproto.DirEnd:
		return p.dirEnd(m.ID)
	case agentproto.Hashes:
		return p.hashes(&m)
	case agentproto.Data:
		return p.data(&m)
	case agentproto.SegDone:
		return p.segDone(m)
	case agentproto.FileErr:
		return p.fileErr(m)
	case agentproto.Warn:
		p.w.Warn(m.Path, fmt.Errorf("not readable on the source: %s", m.Message))
		return nil
	case agentproto.End:
		return p.end()
	}
	return agentViolation("unexpected %s from the agent", agentproto.TypeName(m.Type()))
}

// hold counts n more bytes of listings held for d.
func (p *agentPull) hold(d *agentDir, n int64) error {
	d.held += n
	p.held += n
	if p.held > p.lim.held {
		return fmt.Errorf("%w: more than %d MiB of directory listings", errAgentHeld, p.lim.held>>20)
	}
	return nil
}

func agentEntryCost(e *tree.Entry) int64 {
	n := len(e.Name) + len(e.User) + len(e.Group) + len(e.Target) + 40*len(e.Chunks) + 32*len(e.Lists)
	for _, x := range e.Xattrs {
		n += 48 + len(x.Name) + len(x.Value)
	}
	return int64(n)
}

// add appends e to d's entries and returns its index.
func (p *agentPull) add(d *agentDir, e tree.Entry) (int, error) {
	c := cap(d.entries)
	d.entries = append(d.entries, e)
	if err := p.hold(d, int64(cap(d.entries)-c)*agentEntrySize+agentEntryCost(&e)); err != nil {
		return 0, err
	}
	return len(d.entries) - 1, nil
}

// onTheWay reports whether p is a root or a directory on the way to one.
func (p *agentPull) onTheWay(q string) bool {
	for _, r := range p.roots {
		if agentproto.Inside(r, q) {
			return true
		}
	}
	return false
}

func (p *agentPull) underRoot(q string) bool {
	for _, r := range p.roots {
		if agentproto.Inside(q, r) {
			return true
		}
	}
	return false
}

func (p *agentPull) entry(m *agentproto.Entry) error {
	if p.ended {
		return agentViolation("ENTRY %d %q after END", m.ID, m.Path)
	}
	if m.ID != p.lastID+1 {
		return agentViolation("ENTRY id %d after %d", m.ID, p.lastID)
	}
	p.lastID = m.ID
	kind := tree.Kind(m.Kind)

	if len(p.stack) == 0 {
		if p.rootSeen || m.Path != "/" || kind != tree.Dir {
			return agentViolation("ENTRY %d %q outside any directory being listed", m.ID, m.Path)
		}
		p.rootSeen = true
		d := &agentDir{id: m.ID, path: "/", full: p.underRoot("/")}
		p.stack = append(p.stack, d)
		return nil
	}
	parent := p.stack[len(p.stack)-1]
	i := strings.LastIndexByte(m.Path, '/')
	dir, name := m.Path[:max(i, 1)], m.Path[i+1:]
	switch {
	case i < 0 || dir != parent.path:
		return agentViolation("ENTRY %d %q is not in %q, the directory being listed", m.ID, m.Path, parent.path)
	case len(parent.entries) > 0 && name <= parent.entries[len(parent.entries)-1].Name:
		return agentViolation("ENTRY %d %q after %q: names not in increasing order", m.ID, m.Path, parent.entries[len(parent.entries)-1].Name)
	case !parent.full && !p.onTheWay(m.Path):
		return agentViolation("ENTRY %d %q is neither under a root nor on the way to one", m.ID, m.Path)
	case len(parent.entries) >= tree.MaxEntries:
		return agentViolation("more than %d entries in %q", tree.MaxEntries, parent.path)
	}
	e := tree.Entry{
		Name: strings.Clone(name), Kind: kind, Mode: m.Mode, UID: m.UID, GID: m.GID,
		User: m.User, Group: m.Group, MtimeSec: m.MtimeSec, MtimeNsec: m.MtimeNsec,
	}
	switch kind {
	case tree.Symlink:
		e.Target = m.Target
	case tree.CharDev, tree.BlockDev:
		e.Major, e.Minor = m.Major, m.Minor
	}
	for _, x := range m.Xattrs {
		e.Xattrs = append(e.Xattrs, tree.Xattr{Name: x.Name, Value: x.Value})
	}
	if err := e.Validate(); err != nil {
		return agentViolation("ENTRY %d %q: %v", m.ID, m.Path, err)
	}

	switch kind {
	case tree.Dir:
		if len(p.stack) >= maxAgentDepth {
			return agentViolation("ENTRY %d %q: directories nested more than %d deep", m.ID, m.Path, maxAgentDepth)
		}
		idx, err := p.add(parent, e)
		if err != nil {
			return err
		}
		d := &agentDir{id: m.ID, path: m.Path, full: parent.full || p.underRoot(m.Path), parent: parent, index: idx}
		if err := p.hold(d, int64(len(m.Path))+128); err != nil {
			return err
		}
		parent.pending++
		p.stack = append(p.stack, d)
		return nil
	case tree.File:
		return p.file(m, parent, e)
	}
	p.w.Progress().Files.Add(1)
	_, err := p.add(parent, e)
	return err
}

// file answers a regular file's ENTRY with READ or SKIP.
func (p *agentPull) file(m *agentproto.Entry, parent *agentDir, e tree.Entry) error {
	key := [2]uint64{m.Dev, m.Ino}
	if m.Nlink > 1 {
		if g := p.links[key]; g != nil {
			// A later name of an inode listed before.
			h := tree.Entry{Name: e.Name, Kind: tree.Hardlink, Mode: e.Mode, UID: e.UID, GID: e.GID,
				User: e.User, Group: e.Group, MtimeSec: e.MtimeSec, MtimeNsec: e.MtimeNsec, Target: g.target}
			idx, err := p.add(parent, h)
			if err != nil {
				return err
			}
			if !g.done {
				g.waiting = append(g.waiting, agentLinkWaiter{dir: parent, index: idx, path: m.Path})
				parent.pending++
			}
			p.w.Progress().Files.Add(1)
			return p.answer(agentproto.Skip{File: m.ID})
		}
	}
	idx, err := p.add(parent, e)
	if err != nil {
		return err
	}
	var g *agentLinkGroup
	if m.Nlink > 1 && p.linkBytes < maxAgentLinkBytes {
		g = &agentLinkGroup{target: m.Path[1:]}
		p.links[key] = g
		p.linkBytes += int64(len(g.target)) + 128
	}
	st := store.NewFileStat(m.Size, m.Ino, m.Dev, m.MtimeSec*1e9+int64(m.MtimeNsec), m.CtimeSec*1e9+int64(m.CtimeNsec))
	ep := &parent.entries[idx]
	if m.Size == 0 || p.w.CachedFile(m.Path, st, ep) {
		// Nothing to read: empty, or unchanged since this source's last
		// snapshot.
		if m.Size == 0 {
			ep.Layout, ep.Size = tree.LayoutInline, 0
		}
		if g != nil {
			g.done = true
		}
		p.w.Progress().Files.Add(1)
		p.w.Progress().Bytes.Add(int64(ep.Size))
		if err := p.hold(parent, agentEntryCost(ep)-agentEntryCost(&e)); err != nil {
			return err
		}
		p.nSkip++
		return p.answer(agentproto.Skip{File: m.ID})
	}
	if p.unread >= agentproto.MaxPending {
		return agentViolation("ENTRY %d %q: more than %d files listed and not finished", m.ID, m.Path, agentproto.MaxPending)
	}
	p.unread++
	p.reads = append(p.reads, &agentFile{
		id: m.ID, path: m.Path, dir: parent, index: idx, st: st, size: m.Size,
		packs: map[pack.ID]struct{}{}, link: g, linkAt: key,
	})
	parent.pending++
	p.nRead++
	return p.answer(agentproto.Read{File: m.ID})
}

func (p *agentPull) answer(m agentproto.Message) error {
	if err := p.link.send(m); err != nil {
		return fmt.Errorf("agent: answer a file: %w", err)
	}
	return nil
}

func (p *agentPull) dirEnd(id uint64) error {
	if p.ended || len(p.stack) == 0 || p.stack[len(p.stack)-1].id != id {
		return agentViolation("DIREND %d, which is not the directory being listed", id)
	}
	d := p.stack[len(p.stack)-1]
	p.stack = p.stack[:len(p.stack)-1]
	d.closed = true
	return p.finish(d)
}

// finish stores d's tree once it is listed and everything in it is stored,
// then its parent's, and so on up.
func (p *agentPull) finish(d *agentDir) error {
	for d != nil && d.closed && d.pending == 0 {
		kept := d.entries[:0]
		for _, e := range d.entries {
			if e.Kind != 0 {
				kept = append(kept, e)
			}
		}
		id, err := p.w.Tree(&tree.Tree{Entries: kept})
		if err != nil {
			return fmt.Errorf("agent: store the tree of %q: %w", d.path, err)
		}
		p.held -= d.held
		d.entries = nil
		if d.parent == nil {
			p.root, p.rootDone = id, true
			return nil
		}
		p.w.Progress().Dirs.Add(1)
		d.parent.entries[d.index].Subtree = id
		d.parent.pending--
		d = d.parent
	}
	return nil
}

func (p *agentPull) end() error {
	switch {
	case p.ended:
		return agentViolation("a second END")
	case len(p.stack) > 0:
		return agentViolation("END while %q is being listed", p.stack[len(p.stack)-1].path)
	case !p.rootSeen:
		return errors.New("agent: the source listed nothing, not even /")
	}
	p.ended = true
	return nil
}

// announcing returns the file whose segments are being announced, which
// must be id: the first answered READ whose last segment was not announced.
func (p *agentPull) announcing(id uint64, what string) (*agentFile, error) {
	if len(p.reads) == 0 || p.reads[0].id != id {
		return nil, agentViolation("%s for file %d, which is not the file being read", what, id)
	}
	return p.reads[0], nil
}

// sending returns the oldest open segment, which must be segment seg of
// file id.
func (p *agentPull) sending(id, seg uint64, what string) (*agentSeg, error) {
	if len(p.open) == 0 || p.open[0].f.id != id || p.open[0].n != seg {
		return nil, agentViolation("%s for file %d segment %d, which is not the segment being sent", what, id, seg)
	}
	return p.open[0], nil
}

func (p *agentPull) hashes(h *agentproto.Hashes) error {
	f, err := p.announcing(h.File, "HASHES")
	if err != nil {
		return err
	}
	n := len(h.Chunks)
	switch {
	case len(p.open) >= agentproto.MaxOpenSegments:
		return agentViolation("HASHES for segment %d of %q while %d segments are open", h.Segment, f.path, len(p.open))
	case h.Segment != f.seg:
		return agentViolation("HASHES for segment %d of %q, want segment %d", h.Segment, f.path, f.seg)
	case n == 0 && (!h.Last || h.Segment != 0):
		return agentViolation("HASHES for segment %d of %q without chunks", h.Segment, f.path)
	}
	for i, c := range h.Chunks {
		l := uint64(c.Length)
		if l > uint64(p.params.Max) || l < uint64(p.params.Min) && !(h.Last && i == n-1) {
			return agentViolation("chunk %d of segment %d of %q has %d bytes, outside the chunker's %d..%d", i, h.Segment, f.path, l, p.params.Min, p.params.Max)
		}
		if f.got += l; f.got > f.size {
			return agentViolation("%q: chunks add up to more than its %d bytes", f.path, f.size)
		}
	}
	if h.Last && f.got != f.size {
		return agentViolation("%q: chunks add up to %d bytes, its ENTRY said %d", f.path, f.got, f.size)
	}

	s := &agentSeg{
		f: f, n: h.Segment, last: h.Last, chunks: h.Chunks,
		refs: make([]tree.ChunkRef, n), packs: make([]pack.ID, n), dup: make([]int32, n),
		want: make([]byte, (n+7)/8), got: make([]byte, (n+7)/8),
	}
	first := make(map[[32]byte]int, n)
	for i, c := range h.Chunks {
		s.dup[i] = -1
		if j, ok := first[c.Hash]; ok {
			if s.chunks[j].Length != c.Length {
				return agentViolation("%q: one hash announced with %d and %d bytes", f.path, s.chunks[j].Length, c.Length)
			}
			s.dup[i] = int32(j)
			continue
		}
		first[c.Hash] = i
		held, ok := p.known[c.Hash]
		if !ok {
			ref, pk, found, err := p.w.SourceChunk(c.Hash)
			if err != nil {
				return fmt.Errorf("agent: look up a chunk: %w", err)
			}
			held, ok = agentChunk{ref, pk}, found
		}
		if ok {
			if held.ref.Length != uint64(c.Length) {
				return agentViolation("%q: a chunk announced with %d bytes was %d bytes when this source sent it", f.path, c.Length, held.ref.Length)
			}
			s.refs[i], s.packs[i] = held.ref, held.pack
			continue
		}
		if w, ok := p.wanted[c.Hash]; ok {
			// Wanted in an open segment before this one, whose SEGDONE
			// comes first: taken from there, not sent twice.
			if w.s.chunks[w.i].Length != c.Length {
				return agentViolation("%q: one hash announced with %d and %d bytes", f.path, w.s.chunks[w.i].Length, c.Length)
			}
			if s.earlier == nil {
				s.earlier = map[int]agentWanted{}
			}
			s.earlier[i] = w
			continue
		}
		p.wanted[c.Hash] = agentWanted{s, i}
		agentSetBit(s.want, i)
		s.missing++
	}
	p.nChunk += int64(n)
	p.nWant += int64(s.missing)
	p.open = append(p.open, s)
	f.nOpen++
	f.seg++
	if h.Last {
		p.reads = p.reads[1:]
	}
	// Sent when the link next waits for the agent: the agent goes on
	// cutting and announcing meanwhile.
	if err := p.link.send(agentproto.Want{File: f.id, Segment: s.n, Bitmap: s.want}); err != nil {
		return fmt.Errorf("agent: WANT: %w", err)
	}
	return nil
}

// dataBuffer is where the reader puts the chunk of a DATA frame of n bytes:
// a free buffer, waited for while maxAgentStoring chunks are being stored.
func (p *agentPull) dataBuffer(n int) ([]byte, error) {
	if n > p.params.Max {
		return nil, agentViolation("DATA of %d bytes, more than the chunker's max %d", n, p.params.Max)
	}
	select {
	case b := <-p.bufs:
		if b == nil {
			b = make([]byte, 0, p.params.Max)
		}
		return b, nil
	case <-p.ctx.Done():
		return nil, context.Cause(p.ctx)
	}
}

func (p *agentPull) data(d *agentproto.Data) error {
	s, err := p.sending(d.File, d.Segment, "DATA")
	if err != nil {
		return err
	}
	f := s.f
	if d.Index >= uint64(len(s.chunks)) || !agentBitSet(s.want, int(d.Index)) || agentBitSet(s.got, int(d.Index)) {
		return agentViolation("DATA for chunk %d of segment %d of %q, which was not wanted or came already", d.Index, d.Segment, f.path)
	}
	i := int(d.Index)
	c := s.chunks[i]
	if len(d.Bytes) != int(c.Length) {
		return agentViolation("DATA for chunk %d of segment %d of %q does not match what HASHES announced", i, d.Segment, f.path)
	}
	agentSetBit(s.got, i)
	s.missing--
	p.nRecv += int64(len(d.Bytes))

	s.wg.Add(1)
	// Never blocks: a job holds one of the maxAgentStoring buffers.
	p.jobs <- agentJob{s: s, i: i, data: d.Bytes}
	return nil
}

// agentJob is a received chunk to check and store: chunk i of segment s.
type agentJob struct {
	s    *agentSeg
	i    int
	data []byte // a buffer from bufs, given back when done
}

// storer checks and stores received chunks, off the loop that reads the
// agent: the two hashes of a chunk then run beside the next chunks'
// decrypting and decoding. A mismatch fails the pull before the segment's
// SEGDONE is taken (received waits for every chunk), so nothing built on
// it is stored.
func (p *agentPull) storer() {
	for j := range p.jobs {
		p.store(j)
		p.bufs <- j.data[:0]
		j.s.wg.Done()
	}
}

func (p *agentPull) store(j agentJob) {
	s, i := j.s, j.i
	c := s.chunks[i]
	if p.storeErr() != nil {
		return
	}
	if agentproto.HashChunk(j.data) != c.Hash {
		p.fail(agentViolation("DATA for chunk %d of segment %d of %q does not match what HASHES announced", i, s.n, s.f.path))
		// The loop may be waiting for the agent's next frame.
		p.link.close()
		return
	}
	ref, pk, err := p.w.ChunkIn(j.data)
	if err != nil {
		p.fail(fmt.Errorf("agent: store a chunk of %q: %w", s.f.path, err))
		return
	}
	// At once, not at SEGDONE: a pull cut off in the middle of a segment
	// keeps what it stored (see store.Writer.Abort).
	p.w.RememberSourceChunk(c.Hash, ref)
	s.refs[i], s.packs[i] = ref, pk
}

func (p *agentPull) fail(err error) {
	p.errMu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.errMu.Unlock()
}

func (p *agentPull) storeErr() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

// received waits until s's chunks received so far are stored and
// remembers them for the rest of the pull.
func (p *agentPull) received(s *agentSeg) error {
	s.wg.Wait()
	if err := p.storeErr(); err != nil {
		return err
	}
	for i, c := range s.chunks {
		if !agentBitSet(s.got, i) {
			continue
		}
		if len(p.known) < maxAgentKnown {
			p.known[c.Hash] = agentChunk{s.refs[i], s.packs[i]}
		}
	}
	return nil
}

func (p *agentPull) segDone(m agentproto.SegDone) error {
	s, err := p.sending(m.File, m.Segment, "SEGDONE")
	if err != nil {
		return err
	}
	f := s.f
	if s.missing > 0 {
		return agentViolation("SEGDONE for segment %d of %q with %d wanted chunks not sent", m.Segment, f.path, s.missing)
	}
	if err := p.received(s); err != nil {
		return err
	}
	for i, c := range s.chunks {
		if w, ok := p.wanted[c.Hash]; ok && w.s == s && w.i == i {
			delete(p.wanted, c.Hash)
		}
	}
	for i, w := range s.earlier {
		s.refs[i], s.packs[i] = w.s.refs[w.i], w.s.packs[w.i]
	}
	p.open[0] = nil
	p.open = p.open[1:]
	f.nOpen--
	if f.failed {
		if f.nOpen == 0 {
			return p.drop(f)
		}
		return nil
	}
	for i := range s.chunks {
		if j := s.dup[i]; j >= 0 {
			s.refs[i], s.packs[i] = s.refs[j], s.packs[j]
		}
		f.packs[s.packs[i]] = struct{}{}
		f.refs = append(f.refs, s.refs[i])
		if len(f.refs) == tree.MaxListRefs {
			if err := p.storeList(f); err != nil {
				return err
			}
		}
	}
	if s.last {
		return p.fileDone(f)
	}
	return nil
}

// storeList moves f's pending refs into a list blob.
func (p *agentPull) storeList(f *agentFile) error {
	id, pk, err := p.w.List(f.refs)
	if err != nil {
		return fmt.Errorf("agent: store a chunk list of %q: %w", f.path, err)
	}
	f.lists = append(f.lists, id)
	f.packs[pk] = struct{}{}
	f.refs = f.refs[:0]
	return nil
}

func (p *agentPull) fileDone(f *agentFile) error {
	e := &f.dir.entries[f.index]
	if len(f.lists) > 0 {
		if len(f.refs) > 0 {
			if err := p.storeList(f); err != nil {
				return err
			}
		}
		e.Layout, e.Lists = tree.LayoutIndirect, f.lists
	} else {
		e.Layout, e.Chunks = tree.LayoutInline, f.refs
	}
	e.Size = f.size
	packs := make([]pack.ID, 0, len(f.packs))
	for pk := range f.packs {
		packs = append(packs, pk)
	}
	p.w.RememberFile(f.path, f.st, e, packs)
	p.w.Progress().Files.Add(1)
	p.w.Progress().Bytes.Add(int64(f.size))
	p.unread--
	if err := p.hold(f.dir, int64(40*len(e.Chunks)+32*len(e.Lists))); err != nil {
		return err
	}
	if g := f.link; g != nil {
		g.done = true
		for _, w := range g.waiting {
			w.dir.pending--
			if err := p.finish(w.dir); err != nil {
				return err
			}
		}
		g.waiting = nil
	}
	f.dir.pending--
	return p.finish(f.dir)
}

func (p *agentPull) fileErr(m agentproto.FileErr) error {
	f, err := p.announcing(m.File, "FILEERR")
	if err != nil {
		return err
	}
	p.w.Warn(f.path, fmt.Errorf("not readable on the source: %s", m.Message))
	f.failed = true
	p.reads = p.reads[1:]
	if f.nOpen == 0 {
		return p.drop(f)
	}
	return nil // left out when its open segments are done
}

// drop leaves out f, which the agent could not read.
func (p *agentPull) drop(f *agentFile) error {
	f.dir.entries[f.index].Kind = 0
	p.unread--
	if g := f.link; g != nil {
		// Later names become hard links to nothing: leave them out too.
		// A name listed after this starts the inode over.
		if p.links[f.linkAt] == g {
			delete(p.links, f.linkAt)
		}
		for _, w := range g.waiting {
			p.w.Warn(w.path, fmt.Errorf("hard link to %q, which was not readable on the source", f.path))
			w.dir.entries[w.index].Kind = 0
			w.dir.pending--
			if err := p.finish(w.dir); err != nil {
				return err
			}
		}
		g.waiting = nil
	}
	f.dir.pending--
	return p.finish(f.dir)
}
