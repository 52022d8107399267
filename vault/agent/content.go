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

// content reads the files the vault asked for, one at a time, in the order
// of the READs.
func (s *session) content(ctx context.Context) error {
	c := chunk.New(nil, s.params)
	buf := make([]byte, s.params.Max)
	var recs []chunkRec
	for {
		var f pending
		select {
		case f = <-s.reads:
		default:
			if err := s.w.flush(); err != nil {
				return err
			}
			select {
			case f = <-s.reads:
			case <-ctx.Done():
				return nil
			}
		}
		var err error
		recs, err = s.readFile(ctx, c, buf, recs, f)
		<-s.slots
		if err != nil {
			return err
		}
	}
}

// chunkRec is what a segment keeps of a chunk: where it is and its hash.
type chunkRec struct {
	off    int64
	length int
	hash   [32]byte
}

// fileError is a reason to leave a file out: the conversation goes on.
type fileError struct{ msg string }

func (e *fileError) Error() string { return e.msg }

func fileErrorf(format string, args ...any) error {
	return &fileError{fmt.Sprintf(format, args...)}
}

// readFile sends f segment by segment and returns recs for reuse. A file that
// cannot be read, or changes, is reported with FILEERR; the error returned
// ends the conversation.
func (s *session) readFile(ctx context.Context, c *chunk.Chunker, buf []byte, recs []chunkRec, f pending) ([]chunkRec, error) {
	err := s.sendFile(ctx, c, buf, &recs, f)
	var fe *fileError
	if errors.As(err, &fe) {
		s.log.Warn("file left out", "path", f.path, "why", fe.msg)
		err = s.w.send(agentproto.FileErr{File: f.id, Message: truncate(fe.msg, agentproto.MaxMessage)})
	}
	return recs, err
}

func (s *session) sendFile(ctx context.Context, c *chunk.Chunker, buf []byte, recs *[]chunkRec, f pending) error {
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
		return err
	}
	for seg := uint64(0); ; seg++ {
		*recs = (*recs)[:0]
		for more && len(*recs) < agentproto.SegmentChunks {
			*recs = append(*recs, ahead)
			if ahead, more, err = next(); err != nil {
				return err
			}
		}
		last := !more
		switch {
		case uint64(off) > f.size:
			return fileErrorf("grew while it was read")
		case last && uint64(off) != f.size:
			return fileErrorf("shrank while it was read")
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return fileErrorf("fstat: %v", err)
		}
		if st.Size != opened.Size || st.Mtim != opened.Mtim || st.Ctim != opened.Ctim {
			return fileErrorf("changed while it was read")
		}
		if err := s.sendSegment(ctx, file, buf, f.id, seg, last, *recs); err != nil {
			return err
		}
		if last {
			return nil
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
