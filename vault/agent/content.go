package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/chunk"
)

// segmentChunks is the most chunks the agent announces per segment (the
// protocol allows up to agentproto.SegmentChunks). A segment also ends once
// it holds a segment's worth of bytes (see newRing), so that the vault's
// WANTs come back while the agent is still cutting.
const segmentChunks = agentproto.SegmentChunks / 4

// ringBytes is the least memory the agent holds chunks in between their
// HASHES and their WANT.
const ringBytes = 16 << 20

// A file's content is read once. scan cuts the files the vault asked for
// into chunks, hashes them, keeps their bytes in a ring and announces each
// segment with HASHES without waiting for the vault's answer; send takes
// the WANTs as they come, in the order of the segments, and sends the
// wanted chunks from the ring. The bytes sent are the bytes hashed: a file
// changing under the agent cannot make a chunk differ from its hash. How far
// scan runs ahead is bounded by the ring and by MaxOpenSegments.

// outSeg is a segment announced, or the end of a file left out (end).
type outSeg struct {
	f      pending
	seg    uint64
	last   bool
	end    bool       // FILEERR was sent: only the file's slot is left to give back
	chunks [][]byte   // in the ring
	hashes [][32]byte // of chunks
	upTo   int64      // ring position after the last chunk
}

// content reads the files the vault asked for, one at a time, in the order
// of the READs, and sends what the vault wants of them.
func (s *session) content(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, s.ring.stop)
	defer stop()
	errs := make(chan error, 1)
	go func() { errs <- s.scan(ctx) }()
	err := s.send(ctx)
	cancel()
	if serr := <-errs; err == nil {
		err = serr
	}
	return err
}

// idle flushes what is buffered before a wait, marking the sender idle
// first when sender is set, so that a frame written while it waits is
// flushed by its writer (see announce).
func (s *session) idle(sender bool) error {
	if sender {
		s.senderIdle.Store(true)
	}
	return s.w.flush()
}

// send sends the wanted chunks of each segment announced, in order, then its
// SEGDONE, and gives back each file's slot once it is finished.
func (s *session) send(ctx context.Context) error {
	defer s.senderIdle.Store(false)
	for {
		var o *outSeg
		select {
		case o = <-s.segs:
		default:
			if err := s.idle(true); err != nil {
				return err
			}
			select {
			case o = <-s.segs:
			case <-ctx.Done():
				return nil
			}
		}
		s.senderIdle.Store(false)
		if o.end {
			<-s.slots
			continue
		}
		var w agentproto.Want
		select {
		case w = <-s.wants:
		default:
			if err := s.idle(true); err != nil {
				return err
			}
			select {
			case w = <-s.wants:
			case <-ctx.Done():
				return nil
			}
		}
		s.senderIdle.Store(false)
		if w.File != o.f.id || w.Segment != o.seg {
			return fmt.Errorf("%w: WANT for file %d segment %d, but file %d segment %d is the next waiting for one", agentproto.ErrProtocol, w.File, w.Segment, o.f.id, o.seg)
		}
		for i := len(o.chunks); i < 8*len(w.Bitmap); i++ {
			if w.Has(i) {
				return fmt.Errorf("%w: WANT for chunk %d of file %d segment %d, which has %d chunks", agentproto.ErrProtocol, i, w.File, w.Segment, len(o.chunks))
			}
		}
		for i, b := range o.chunks {
			if !w.Has(i) {
				continue
			}
			if err := s.w.sendData(o.f.id, o.seg, uint64(i), b); err != nil {
				return err
			}
		}
		if err := s.w.send(agentproto.SegDone{File: o.f.id, Segment: o.seg}); err != nil {
			return err
		}
		s.ring.free(o.upTo)
		if o.last {
			<-s.slots
		}
	}
}

// scan cuts, hashes and announces the files to read, in the order of the
// READs.
func (s *session) scan(ctx context.Context) error {
	for {
		var f pending
		select {
		case f = <-s.reads:
		default:
			// The vault needs the ENTRYs listed so far to answer.
			if err := s.idle(false); err != nil {
				return err
			}
			select {
			case f = <-s.reads:
			case <-ctx.Done():
				return nil
			}
		}
		err := s.scanFile(ctx, f)
		if fe, ok := err.(*fileError); ok {
			s.log.Warn("file left out", "path", f.path, "why", fe.msg)
			err = s.w.send(agentproto.FileErr{File: f.id, Message: truncate(fe.msg, agentproto.MaxMessage)})
			if err == nil {
				err = s.push(ctx, &outSeg{f: f, end: true})
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// fileError is a reason to leave a file out: the conversation goes on.
type fileError struct{ msg string }

func (e *fileError) Error() string { return e.msg }

func fileErrorf(format string, args ...any) error {
	return &fileError{fmt.Sprintf(format, args...)}
}

// scanFile announces f's segments, the last one marked. A *fileError ends
// the file: the segments announced are still sent, the rest is given back
// to the ring.
func (s *session) scanFile(ctx context.Context, f pending) error {
	fd, err := s.open(f.path, 0)
	if err != nil {
		return fileErrorf("open: %v", err)
	}
	file := os.NewFile(uintptr(fd), s.hostPath(f.path))
	defer file.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileErrorf("fstat: %v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || uint64(st.Dev) != f.dev || st.Ino != f.ino ||
		uint64(st.Size) != f.size || st.Mtim != f.mtime || st.Ctim != f.ctime {
		return fileErrorf("changed since it was listed")
	}
	opened := st

	// One chunk is read ahead, to know whether a segment is the last.
	// Reading one byte past the listed size tells a file that grew.
	r := &cutter{r: io.LimitReader(file, int64(f.size)+1), params: s.params}
	var off int64
	start := s.ring.position() // given back if the file is left out
	type cut struct {
		b    []byte
		hash [32]byte
		upTo int64
	}
	next := func() (cut, bool, error) {
		slot, err := s.ring.take(ctx, s.w)
		if err != nil {
			return cut{}, false, err
		}
		b, err := r.next(slot)
		if err == io.EOF {
			return cut{}, false, nil
		}
		if err != nil {
			return cut{}, false, fileErrorf("read: %v", err)
		}
		off += int64(len(b))
		return cut{b: b, hash: agentproto.HashChunk(b), upTo: s.ring.commit(len(b))}, true, nil
	}
	fail := func(err error) error {
		if _, ok := err.(*fileError); ok {
			s.ring.rollback(start)
		}
		return err
	}
	ahead, more, err := next()
	if err != nil {
		return fail(err)
	}
	segBytes := s.ring.size() / 8
	for seg := uint64(0); ; seg++ {
		o := &outSeg{f: f, seg: seg}
		n := 0
		for more && len(o.chunks) < segmentChunks && n < segBytes {
			o.chunks = append(o.chunks, ahead.b)
			o.hashes = append(o.hashes, ahead.hash)
			o.upTo = ahead.upTo
			n += len(ahead.b)
			if ahead, more, err = next(); err != nil {
				return fail(err)
			}
		}
		o.last = !more
		switch {
		case uint64(off) > f.size:
			return fail(fileErrorf("grew while it was read"))
		case o.last && uint64(off) != f.size:
			return fail(fileErrorf("shrank while it was read"))
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return fail(fileErrorf("fstat: %v", err))
		}
		if st.Size != opened.Size || st.Mtim != opened.Mtim || st.Ctim != opened.Ctim {
			return fail(fileErrorf("changed while it was read"))
		}
		if err := s.announce(ctx, o); err != nil {
			return err
		}
		if o.last {
			return nil
		}
		start = o.upTo
	}
}

// cutter cuts a stream into chunks read straight into the ring: the bytes
// read past a cut stay where they are, at the ring's head, and the next
// chunk starts with them. It finds exactly the chunks chunk.Chunker finds.
type cutter struct {
	r      io.Reader
	params chunk.Params
	rest   []byte // read and not yet cut, at the start of the next slot
	eof    bool
}

// maxEmptyReads bounds how often a reader may return (0, nil) in a row.
const maxEmptyReads = 100

// next cuts the next chunk into slot, which take returned (capacity
// params.Max, at the ring's head), and returns it. It returns io.EOF after
// the last chunk.
func (c *cutter) next(slot []byte) ([]byte, error) {
	buf := slot[:len(c.rest)]
	if len(c.rest) > 0 && &buf[0] != &c.rest[0] {
		copy(buf, c.rest) // the ring wrapped around
	}
	for empty := 0; len(buf) < c.params.Max && !c.eof; {
		n, err := c.r.Read(buf[len(buf):c.params.Max])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			c.eof = true
		case err != nil:
			return nil, err
		case n > 0:
			empty = 0
		default:
			if empty++; empty >= maxEmptyReads {
				return nil, io.ErrNoProgress
			}
		}
	}
	if len(buf) == 0 {
		c.rest = nil
		return nil, io.EOF
	}
	n := chunk.Cut(buf, c.params, c.eof)
	c.rest = buf[n:]
	return buf[:n:n], nil
}

// announce hands o to the sender, then sends its HASHES.
func (s *session) announce(ctx context.Context, o *outSeg) error {
	h := agentproto.Hashes{File: o.f.id, Segment: o.seg, Last: o.last, Chunks: make([]agentproto.ChunkHash, len(o.chunks))}
	for i, b := range o.chunks {
		h.Chunks[i] = agentproto.ChunkHash{Hash: o.hashes[i], Length: uint32(len(b))}
	}
	if err := s.push(ctx, o); err != nil {
		return err
	}
	s.announced.Add(1)
	if err := s.w.send(h); err != nil {
		return err
	}
	if s.senderIdle.Load() {
		// The sender waits for this segment's WANT.
		return s.w.flush()
	}
	return nil
}

// push queues o for the sender, waiting while MaxOpenSegments are queued.
func (s *session) push(ctx context.Context, o *outSeg) error {
	select {
	case s.segs <- o:
		return nil
	default:
	}
	if err := s.idle(false); err != nil {
		return err
	}
	select {
	case s.segs <- o:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ring holds the chunks cut and not yet sent. Chunks are taken and given
// back in the same order, so it is one circular buffer: a chunk always
// lies in one piece, the end of the buffer left unused when too short.
type ring struct {
	mu         sync.Mutex
	cond       *sync.Cond
	buf        []byte
	max        int   // the largest chunk
	head, tail int64 // bytes taken and given back since the start, gaps included
	stopped    bool
}

// newRing returns a ring for chunks of at most max bytes: ringBytes, or
// more for chunks so large that a segment's worth (an eighth) would hold
// fewer than two.
func newRing(maxChunk int) *ring {
	r := &ring{buf: make([]byte, max(ringBytes, 16*maxChunk)), max: maxChunk}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *ring) size() int { return len(r.buf) }

// stop makes waiting takes fail.
func (r *ring) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.cond.Broadcast()
}

func (r *ring) position() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.head
}

// take returns room for the next chunk: an empty slice with a capacity of
// max bytes. It flushes w before it waits for room, since the sender frees
// room only as the vault's WANTs come.
func (r *ring) take(ctx context.Context, w *writer) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := int64(len(r.buf))
	for flushed := false; ; {
		off := r.head % size
		gap := int64(0)
		if size-off < int64(r.max) {
			gap = size - off
		}
		if r.stopped || ctx.Err() != nil {
			return nil, context.Canceled
		}
		if r.head+gap+int64(r.max)-r.tail <= size {
			r.head += gap
			off = r.head % size
			return r.buf[off : off : off+int64(r.max)], nil
		}
		if !flushed {
			r.mu.Unlock()
			err := w.flush()
			r.mu.Lock()
			if err != nil {
				return nil, err
			}
			flushed = true
			continue
		}
		r.cond.Wait()
	}
}

// commit takes n bytes of the room take returned and returns the position
// after them.
func (r *ring) commit(n int) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.head += int64(n)
	return r.head
}

// rollback gives back everything taken since position p, which nothing
// queued for sending lies beyond.
func (r *ring) rollback(p int64) {
	r.mu.Lock()
	r.head = p
	r.mu.Unlock()
	r.cond.Broadcast()
}

// free gives back everything up to position p.
func (r *ring) free(p int64) {
	r.mu.Lock()
	if p > r.tail {
		r.tail = p
	}
	r.mu.Unlock()
	r.cond.Broadcast()
}

// open opens p read-only beneath the base without following any symlink on
// the way, without updating its access time where the kernel allows, and
// without blocking (a FIFO swapped in opens at once and is refused by the
// caller's fstat). flags adds to those.
func (s *session) open(p string, flags int) (int, error) {
	rel := "."
	if p != "/" {
		rel = p[1:]
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NOATIME | unix.O_NONBLOCK | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH,
	}
	if !s.openat2 {
		return openFallback(s.hostPath(p), int(how.Flags))
	}
	for range 16 {
		fd, err := unix.Openat2(s.baseFD, rel, &how)
		switch {
		case err == nil:
			return fd, nil
		case err == unix.EINTR || err == unix.EAGAIN:
			continue // EAGAIN: a rename raced the lookup
		case err == unix.EPERM && how.Flags&unix.O_NOATIME != 0:
			how.Flags &^= unix.O_NOATIME // only the owner or CAP_FOWNER may
			continue
		}
		return -1, err
	}
	return -1, unix.EAGAIN
}

// openFallback opens path where openat2 cannot be used: the last component
// is still not followed, and callers compare the inode with the one listed.
func openFallback(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EPERM && flags&unix.O_NOATIME != 0:
			flags &^= unix.O_NOATIME
			continue
		}
		return fd, err
	}
}
