package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"drawbridge/vault/chunk"
	"drawbridge/vault/pack"
	"drawbridge/vault/tree"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	Progress *Progress
	// Warn is told about entries that could not be read; the snapshot goes
	// on without them and is marked partial.
	Warn func(path string, err error)
}

// Writer writes one snapshot of one source, whatever walks the source: the
// local backup or a pull. It needs no passphrase. Nothing it writes is a
// snapshot until Commit; Abort (or a failed Commit) leaves only sealed packs
// that a later snapshot may reuse.
type Writer struct {
	s      *Store
	in     *ingest
	source string
	start  time.Time
	prog   *Progress
	warnFn func(path string, err error)

	mu        sync.Mutex
	cache     map[string][]byte
	knownPack map[pack.ID]bool
	errors    atomic.Int64
	chunkers  sync.Pool
	finished  bool
}

// NewWriter starts a snapshot of source.
func (s *Store) NewWriter(ctx context.Context, source string, o WriterOptions) (*Writer, error) {
	if err := ValidSourceName(source); err != nil {
		return nil, err
	}
	known, err := s.idx.Packs()
	if err != nil {
		return nil, err
	}
	w := &Writer{s: s, source: source, start: s.now(), prog: o.Progress, warnFn: o.Warn,
		cache: map[string][]byte{}, knownPack: known}
	if w.prog == nil {
		w.prog = &Progress{}
	}
	w.in = s.newIngest(ctx)
	return w, nil
}

// Progress returns the writer's counters.
func (w *Writer) Progress() *Progress { return w.prog }

// warn records an entry left out of the snapshot.
func (w *Writer) warn(path string, err error) {
	w.errors.Add(1)
	if w.warnFn != nil {
		w.warnFn(path, err)
	} else {
		w.s.log.Warn("skipped", "path", path, "err", err)
	}
}

// Warn records an entry the source could not provide; the snapshot will be
// partial.
func (w *Writer) Warn(path string, err error) { w.warn(path, err) }

// Tree stores a directory's tree blob.
func (w *Writer) Tree(t *tree.Tree) (tree.ID, error) {
	data, err := t.Encode()
	if err != nil {
		return tree.ID{}, fmt.Errorf("encode tree: %w", err)
	}
	r, err := w.in.store(pack.Tree, data)
	return r.ref.ID, err
}

// Chunk stores one data chunk (copied) and returns its reference.
func (w *Writer) Chunk(data []byte) (tree.ChunkRef, error) {
	r, err := w.in.store(pack.Data, data)
	return r.ref, err
}

// Have reports whether a blob is already stored and, if so, records that
// the snapshot references it.
func (w *Writer) Have(id [32]byte) (bool, error) {
	p, ok, err := w.in.locate(id)
	if ok {
		w.in.use(p)
	}
	return ok, err
}

// errRead marks a failure to read the source (the entry is left out), as
// opposed to a failure to store (the snapshot fails).
var errRead = errors.New("read error")

type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Is(t error) bool {
	return t == errRead
}
func (e readError) Unwrap() error { return e.err }

// Content chunks and stores everything r yields as the content of the file
// entry e (layout, chunks or lists, size). Errors reading r wrap errRead.
func (w *Writer) Content(r io.Reader, e *tree.Entry) error {
	_, err := w.content(r, e)
	return err
}

// content is Content, also returning the packs the file's blobs are in.
func (w *Writer) content(r io.Reader, e *tree.Entry) (map[pack.ID]struct{}, error) {
	c := w.getChunker(r)
	defer w.chunkers.Put(c)
	fc := &fileContent{w: w, packs: map[pack.ID]struct{}{}}
	var total uint64
	for {
		buf, err := w.in.getBuf()
		if err != nil {
			fc.drain()
			return nil, err
		}
		data, err := c.Next(buf)
		if err == io.EOF {
			w.in.putBuf(buf)
			break
		}
		if err != nil {
			w.in.putBuf(buf)
			fc.drain()
			return nil, readError{err}
		}
		total += uint64(len(data))
		w.prog.Bytes.Add(int64(len(data)))
		ch, err := w.in.submit(pack.Data, data, true)
		if err != nil {
			fc.drain()
			return nil, err
		}
		if err := fc.push(ch); err != nil {
			fc.drain()
			return nil, err
		}
	}
	if err := fc.flush(); err != nil {
		return nil, err
	}
	e.Size = total
	if len(fc.lists) > 0 {
		if err := fc.storeList(); err != nil {
			return nil, err
		}
		e.Layout, e.Lists, e.Chunks = tree.LayoutIndirect, fc.lists, nil
	} else {
		e.Layout, e.Chunks = tree.LayoutInline, fc.refs
	}
	return fc.packs, nil
}

func (w *Writer) getChunker(r io.Reader) *chunk.Chunker {
	if c, ok := w.chunkers.Get().(*chunk.Chunker); ok {
		c.Reset(r)
		return c
	}
	return chunk.New(r, w.in.chunkParams())
}

// Commit seals the last packs and commits the snapshot with root as its
// root tree; paths are the roots it was taken from.
func (w *Writer) Commit(root tree.ID, paths []string) (*Snapshot, error) {
	if w.finished {
		return nil, errors.New("snapshot writer already finished")
	}
	w.finished = true
	if err := w.in.close(); err != nil {
		return nil, err
	}
	return w.commit(root, paths)
}

// Abort stops the writer without a snapshot.
func (w *Writer) Abort() {
	if w.finished {
		return
	}
	w.finished = true
	w.in.abort()
}
