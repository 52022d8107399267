package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/chunk"
)

// segmentChunks is how many chunks the agent announces per segment (the
// protocol allows up to agentproto.SegmentChunks): about 16 MiB at the
// average chunk size, so that a large file is hashed ahead of its sending
// in steps, not all before its first byte is sent.
const segmentChunks = agentproto.SegmentChunks / 4

// A file's content is read twice: once ahead, by scan, to cut it into chunks
// and hash them, and once as the chunks the vault wants are sent, re-read and
// re-hashed. scan runs one segment ahead of the sending, so that cutting and
// hashing the next segment (or file) overlaps the round trip to the vault
// and the sending of the current one.

// scanned is one segment cut and hashed ahead of its sending, or the end of
// a file that cannot be read (err).
type scanned struct {
	f    pending
	file *os.File // nil when it could not be opened
	seg  uint64
	last bool
	err  error // a *fileError, or what ends the conversation
	recs []chunkRec
	// opened is what fstat said when the file was opened.
	opened unix.Stat_t
}

// final reports whether s is the last of its file's segments.
func (s *scanned) final() bool { return s.last || s.err != nil }

// content reads the files the vault asked for, one at a time, in the order
// of the READs.
func (s *session) content(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	segs := make(chan *scanned, 1)
	free := make(chan []chunkRec, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.scan(ctx, segs, free)
	}()
	defer func() {
		cancel()
		<-done
		// Files the scan opened and did not hand over, and those handed
		// over and not sent.
		for {
			select {
			case sc := <-segs:
				if sc.final() && sc.file != nil {
					sc.file.Close()
				}
			default:
				return
			}
		}
	}()

	buf := make([]byte, s.params.Max)
	var dropped uint64 // a file left out while its later segments come
	for {
		var sc *scanned
		select {
		case sc = <-segs:
		default:
			if err := s.w.flush(); err != nil {
				return err
			}
			select {
			case sc = <-segs:
			case <-ctx.Done():
				return nil
			}
		}
		err := error(nil)
		if sc.f.id != dropped {
			err = s.sendScanned(ctx, buf, sc)
		}
		var fe *fileError
		if errors.As(err, &fe) {
			s.log.Warn("file left out", "path", sc.f.path, "why", fe.msg)
			err = s.w.send(agentproto.FileErr{File: sc.f.id, Message: truncate(fe.msg, agentproto.MaxMessage)})
			if !sc.final() {
				dropped = sc.f.id
			}
		}
		if sc.final() {
			if sc.file != nil {
				sc.file.Close()
			}
			<-s.slots
		}
		if sc.recs != nil {
			select {
			case free <- sc.recs[:0]:
			default:
			}
		}
		if err != nil {
			return err
		}
	}
}

// sendScanned sends one scanned segment, or the FILEERR of a file that could
// not be scanned.
func (s *session) sendScanned(ctx context.Context, buf []byte, sc *scanned) error {
	if sc.err != nil {
		return sc.err
	}
	// The scan may have finished the file a while ago: it must still be
	// as it was opened when its chunks are announced.
	var st unix.Stat_t
	if err := fstat(sc.file, &st); err != nil {
		return fileErrorf("fstat: %v", err)
	}
	if st.Size != sc.opened.Size || st.Mtim != sc.opened.Mtim || st.Ctim != sc.opened.Ctim {
		return fileErrorf("changed while it was read")
	}
	return s.sendSegment(ctx, sc.file, buf, sc.f.id, sc.seg, sc.last, sc.recs)
}

// fstat is unix.Fstat of an open file, which stays open while it runs.
func fstat(f *os.File, st *unix.Stat_t) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	if cerr := rc.Control(func(fd uintptr) { err = unix.Fstat(int(fd), st) }); cerr != nil {
		return cerr
	}
	return err
}

// scan cuts and hashes the files to read, in the order of the READs, and
// hands each segment to content.
func (s *session) scan(ctx context.Context, segs chan<- *scanned, free <-chan []chunkRec) {
	c := chunk.New(nil, s.params)
	buf := make([]byte, s.params.Max)
	for {
		var f pending
		select {
		case f = <-s.reads:
		case <-ctx.Done():
			return
		}
		if !s.scanFile(ctx, c, buf, f, segs, free) {
			return
		}
	}
}

// fileError is a reason to leave a file out: the conversation goes on.
type fileError struct{ msg string }

func (e *fileError) Error() string { return e.msg }

func fileErrorf(format string, args ...any) error {
	return &fileError{fmt.Sprintf(format, args...)}
}

// chunkRec is what a segment keeps of a chunk: where it is and its hash.
type chunkRec struct {
	off    int64
	length int
	hash   [32]byte
}

// scanFile hands f's segments to segs, the last one marked, or an error
// that ends the file. It reports false when ctx ended first; the file is
// then closed.
func (s *session) scanFile(ctx context.Context, c *chunk.Chunker, buf []byte, f pending, segs chan<- *scanned, free <-chan []chunkRec) bool {
	give := func(sc *scanned) bool {
		select {
		case segs <- sc:
			return true
		case <-ctx.Done():
			// The conversation is over: whatever still reads the file
			// fails, and a second Close of it is harmless.
			if sc.file != nil {
				sc.file.Close()
			}
			return false
		}
	}
	fd, err := s.open(f.path, 0)
	if err != nil {
		return give(&scanned{f: f, err: fileErrorf("open: %v", err)})
	}
	file := os.NewFile(uintptr(fd), s.hostPath(f.path))
	fail := func(err error) bool { return give(&scanned{f: f, file: file, err: err}) }
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(fileErrorf("fstat: %v", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || uint64(st.Dev) != f.dev || st.Ino != f.ino ||
		uint64(st.Size) != f.size || st.Mtim != f.mtime || st.Ctim != f.ctime {
		return fail(fileErrorf("changed since it was listed"))
	}
	opened := st

	// One chunk is read ahead, to know whether a segment is the last.
	// Reading one byte past the listed size tells a file that grew.
	c.Reset(io.LimitReader(file, int64(f.size)+1))
	var off int64
	next := func() (chunkRec, bool, error) {
		b, err := c.Next(buf)
		if err == io.EOF {
			return chunkRec{}, false, nil
		}
		if err != nil {
			return chunkRec{}, false, fileErrorf("read: %v", err)
		}
		r := chunkRec{off: off, length: len(b), hash: agentproto.HashChunk(b)}
		off += int64(len(b))
		return r, true, nil
	}
	ahead, more, err := next()
	if err != nil {
		return fail(err)
	}
	for seg := uint64(0); ; seg++ {
		var recs []chunkRec
		select {
		case recs = <-free:
		default:
		}
		for more && len(recs) < segmentChunks {
			recs = append(recs, ahead)
			if ahead, more, err = next(); err != nil {
				return fail(err)
			}
		}
		last := !more
		switch {
		case uint64(off) > f.size:
			return fail(fileErrorf("grew while it was read"))
		case last && uint64(off) != f.size:
			return fail(fileErrorf("shrank while it was read"))
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return fail(fileErrorf("fstat: %v", err))
		}
		if st.Size != opened.Size || st.Mtim != opened.Mtim || st.Ctim != opened.Ctim {
			return fail(fileErrorf("changed while it was read"))
		}
		if !give(&scanned{f: f, file: file, seg: seg, last: last, recs: recs, opened: opened}) {
			return false
		}
		if last {
			return true
		}
	}
}

// sendSegment sends HASHES, waits for the WANT, then sends each wanted chunk
// re-read and re-hashed, and SEGDONE.
func (s *session) sendSegment(ctx context.Context, file *os.File, buf []byte, id, seg uint64, last bool, recs []chunkRec) error {
	h := agentproto.Hashes{File: id, Segment: seg, Last: last, Chunks: make([]agentproto.ChunkHash, len(recs))}
	for i, r := range recs {
		h.Chunks[i] = agentproto.ChunkHash{Hash: r.hash, Length: uint32(r.length)}
	}
	s.mu.Lock()
	s.expect = &segment{file: id, segment: seg, chunks: len(recs)}
	s.mu.Unlock()
	if err := s.w.send(h); err != nil {
		return err
	}
	if err := s.w.flush(); err != nil {
		return err
	}
	var want agentproto.Want
	select {
	case want = <-s.wants:
	case <-ctx.Done():
		return ctx.Err()
	}
	for i, r := range recs {
		if !want.Has(i) {
			continue
		}
		b := buf[:r.length]
		if n, err := file.ReadAt(b, r.off); n != len(b) {
			if err == io.EOF {
				return fileErrorf("shrank while it was read")
			}
			return fileErrorf("read: %v", err)
		}
		if agentproto.HashChunk(b) != r.hash {
			return fileErrorf("changed while it was read: chunk %d of segment %d at offset %d", i, seg, r.off)
		}
		if err := s.w.send(agentproto.Data{File: id, Segment: seg, Index: uint64(i), Bytes: b}); err != nil {
			return err
		}
	}
	return s.w.send(agentproto.SegDone{File: id, Segment: seg})
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
