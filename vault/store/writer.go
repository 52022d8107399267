package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"drawbridge/vault/chunk"
	"drawbridge/vault/journal"
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

	mu    sync.Mutex
	cache map[string][]byte
	// Source chunk map entries not yet written, by the pack that holds
	// their chunk; pack.ID{} for chunks already indexed. They are written
	// as each pack is indexed (see sealed), so that a pull killed outright
	// keeps them too.
	srcPend   map[pack.ID]*srcBatch
	nChunks   int                 // entries of RememberSourceChunk in srcPend
	nPartial  int                 // entries of RememberPartial in srcPend and partDone
	partDone  map[string]struct{} // RememberPartial keys written; Commit deletes them
	srcOnce   sync.Once
	srcPrefix []byte // see sourceKey
	knownPack map[pack.ID]bool
	errors    atomic.Int64
	chunkers  sync.Pool
	hashers   sync.Pool
	finished  bool
	origin    Snapshot // Kind, Host and HostKey for the record
}

// SetOrigin says how the snapshot was taken, for its journal record: kind
// (agent, sftp, exec), host, and the host key's fingerprint.
func (w *Writer) SetOrigin(kind, host, hostKey string) {
	w.origin.Kind, w.origin.Host, w.origin.HostKey = kind, host, hostKey
}

// NewWriter starts a snapshot of source.
func (s *Store) NewWriter(ctx context.Context, source string, o WriterOptions) (*Writer, error) {
	if err := ValidSourceName(source); err != nil {
		return nil, err
	}
	if !s.keys.Identity.CanSign() {
		return nil, fmt.Errorf("snapshot of %s: %w", source, journal.ErrReadOnly)
	}
	known, err := s.idx.Packs()
	if err != nil {
		return nil, err
	}
	w := &Writer{s: s, source: source, start: s.now(), prog: o.Progress, warnFn: o.Warn,
		cache: map[string][]byte{}, srcPend: map[pack.ID]*srcBatch{}, partDone: map[string]struct{}{}, knownPack: known}
	if w.prog == nil {
		w.prog = &Progress{}
	}
	w.in = s.newIngest(ctx)
	w.in.sealed = w.sealed
	return w, nil
}

// ChunkParams returns the store's chunker parameters, which a source that
// cuts chunks itself (the agent) must use.
func (w *Writer) ChunkParams() chunk.Params { return w.in.chunkParams() }

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

// Abort stops the writer without a snapshot. The source chunk map keeps
// the chunks this source sent that reached sealed packs: a pull cut off
// half-way resumes without transferring them again, and the source learns
// nothing from that but what it sent itself.
func (w *Writer) Abort() {
	if w.finished {
		return
	}
	w.finished = true
	w.in.abort()
	w.keepSourceChunks()
}

// keepSourceChunks writes the source chunk map entries not written yet
// whose chunks are indexed, that is, in sealed packs.
func (w *Writer) keepSourceChunks() {
	w.mu.Lock()
	m := map[string][]byte{}
	for _, b := range w.srcPend {
		maps.Copy(m, b.chunks)
		maps.Copy(m, b.partial)
	}
	w.srcPend = map[pack.ID]*srcBatch{}
	w.mu.Unlock()
	kept := make(map[string][]byte, len(m))
	for k, v := range m {
		var id [32]byte
		copy(id[:], v)
		if _, err := w.s.idx.Lookup(id); err == nil {
			kept[k] = v
		}
	}
	if len(kept) == 0 {
		return
	}
	if err := w.s.idx.PutSourceChunks(kept); err != nil {
		w.s.log.Warn("source chunk map not updated; the next pull transfers more", "err", err)
	}
}

// commitSourceChunks, once the snapshot is committed, writes the source
// chunk map entries of RememberSourceChunk not written yet (every pack is
// sealed and indexed by then) and deletes those of RememberPartial written
// while the pull ran: they serve only a pull cut off.
func (w *Writer) commitSourceChunks() {
	w.mu.Lock()
	m := map[string][]byte{}
	for _, b := range w.srcPend {
		maps.Copy(m, b.chunks)
	}
	w.srcPend = map[pack.ID]*srcBatch{}
	done := w.partDone
	w.partDone = map[string]struct{}{}
	w.mu.Unlock()
	if err := w.s.idx.PutSourceChunks(m); err != nil {
		w.s.log.Warn("source chunk map not updated; the next pull transfers more", "err", err)
	}
	if err := w.s.idx.DeleteSourceChunks(done); err != nil {
		w.s.log.Warn("source chunk map: entries for resuming a pull not deleted", "err", err)
	}
}

// srcBatch is source chunk map entries waiting for their chunks' pack.
type srcBatch struct {
	chunks  map[string][]byte // RememberSourceChunk
	partial map[string][]byte // RememberPartial
}

// sealed is called by the ingest once pack p is sealed and indexed: the
// entries whose chunks are in p, and those whose chunks were indexed
// already, are written in one batch. An entry is thus never written before
// its chunk is indexed.
func (w *Writer) sealed(p pack.ID) {
	w.mu.Lock()
	b, r := w.srcPend[p], w.srcPend[pack.ID{}]
	delete(w.srcPend, p)
	delete(w.srcPend, pack.ID{})
	w.mu.Unlock()
	if b == nil {
		b, r = r, nil
	}
	if b == nil {
		return
	}
	if r != nil {
		maps.Copy(b.chunks, r.chunks)
		maps.Copy(b.partial, r.partial)
	}
	m := make(map[string][]byte, len(b.chunks)+len(b.partial))
	maps.Copy(m, b.chunks)
	maps.Copy(m, b.partial)
	err := w.s.idx.PutSourceChunks(m)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		// Kept for Commit or Abort, which write them again.
		w.s.log.Warn("source chunk map not updated as a pack was sealed", "err", err)
		w.pend(pack.ID{}).merge(b)
		return
	}
	w.nChunks -= len(b.chunks)
	for k := range b.partial {
		w.partDone[k] = struct{}{}
	}
}

// pend returns the batch waiting for pack p. w.mu is held.
func (w *Writer) pend(p pack.ID) *srcBatch {
	b := w.srcPend[p]
	if b == nil {
		b = &srcBatch{chunks: map[string][]byte{}, partial: map[string][]byte{}}
		w.srcPend[p] = b
	}
	return b
}

func (b *srcBatch) merge(o *srcBatch) {
	maps.Copy(b.chunks, o.chunks)
	maps.Copy(b.partial, o.partial)
}

// rememberSource adds an entry of the source chunk map to write once the
// chunk ref names is indexed.
func (w *Writer) rememberSource(h [32]byte, ref tree.ChunkRef, partial bool) {
	v := binary.AppendUvarint(append(make([]byte, 0, 42), ref.ID[:]...), ref.Length)
	k := string(w.sourceKey(h))
	w.mu.Lock()
	defer w.mu.Unlock()
	if partial && w.nPartial >= maxCachePending || !partial && w.nChunks >= maxCachePending {
		return
	}
	// Under w.mu, so that sealed, which takes it after the pack left the
	// in-flight map, finds the entry. Not in flight means indexed: the
	// chunk was stored before this call.
	w.in.mu.Lock()
	p := w.in.inflight[ref.ID]
	w.in.mu.Unlock()
	b := w.pend(p)
	if partial {
		if _, ok := b.partial[k]; !ok {
			w.nPartial++
		}
		b.partial[k] = v
	} else {
		if _, ok := b.chunks[k]; !ok {
			w.nChunks++
		}
		b.chunks[k] = v
	}
}

// ChunkIn stores one data chunk and also returns the pack holding it.
func (w *Writer) ChunkIn(data []byte) (tree.ChunkRef, pack.ID, error) {
	r, err := w.in.store(pack.Data, data)
	return r.ref, r.pack, err
}

// Locate reports whether a blob is already stored and in which pack; when
// it is, the snapshot is recorded as referencing that pack.
func (w *Writer) Locate(id [32]byte) (pack.ID, bool, error) {
	p, ok, err := w.in.locate(id)
	if ok {
		w.in.use(p)
	}
	return p, ok, err
}

// List stores a chunk list blob of refs (1..tree.MaxListRefs of them), for
// a file of more than tree.MaxListRefs chunks, and returns its id and pack.
func (w *Writer) List(refs []tree.ChunkRef) (tree.ID, pack.ID, error) {
	data, err := tree.EncodeList(refs)
	if err != nil {
		return tree.ID{}, pack.ID{}, err
	}
	r, err := w.in.store(pack.List, data)
	return r.ref.ID, r.pack, err
}

// CachedFile fills e from the file cache when this source stored the file
// at path with exactly st before; it reports whether it did.
func (w *Writer) CachedFile(path string, st FileStat, e *tree.Entry) bool {
	return w.fromCache(w.cacheKey(path), st, e)
}

// RememberFile records a file's content for the file cache, written when
// the snapshot commits.
func (w *Writer) RememberFile(path string, st FileStat, e *tree.Entry, packs []pack.ID) {
	m := make(map[pack.ID]struct{}, len(packs))
	for _, p := range packs {
		m[p] = struct{}{}
	}
	w.remember(w.cacheKey(path), st, e, m)
}

// SourceChunk answers "do I have the chunk this source calls h?" from this
// source's earlier snapshots (and pulls cut off half-way) only: a source
// learns nothing about what other sources stored. It returns the chunk's reference and pack.
func (w *Writer) SourceChunk(h [32]byte) (tree.ChunkRef, pack.ID, bool, error) {
	v, err := w.s.idx.GetSourceChunk(w.sourceKey(h))
	if err != nil || v == nil {
		return tree.ChunkRef{}, pack.ID{}, false, err
	}
	if len(v) < 33 {
		return tree.ChunkRef{}, pack.ID{}, false, nil
	}
	var ref tree.ChunkRef
	copy(ref.ID[:], v)
	n, k := binary.Uvarint(v[32:])
	if k <= 0 || n == 0 {
		return tree.ChunkRef{}, pack.ID{}, false, nil
	}
	ref.Length = n
	p, ok, err := w.Locate(ref.ID)
	if err != nil || !ok {
		return tree.ChunkRef{}, pack.ID{}, false, err
	}
	return ref, p, true, nil
}

// RememberSourceChunk records that this source's chunk h is ref. The entry
// is written as soon as the pack holding the chunk is indexed.
func (w *Writer) RememberSourceChunk(h [32]byte, ref tree.ChunkRef) {
	w.rememberSource(h, ref, false)
}

// RememberPartial records, like RememberSourceChunk, that this source's
// chunk h is ref, but for a pull cut off only: written as its pack is
// indexed, it is deleted again when the snapshot commits. The SFTP source
// names with h where in a file a chunk starts, so that a file read
// half-way is not read again from its start.
func (w *Writer) RememberPartial(h [32]byte, ref tree.ChunkRef) {
	w.rememberSource(h, ref, true)
}

// sourceKey is the source chunk map's key of this source's chunk h. The
// source's prefix is a keyed hash, computed once per writer: a pull asks
// for it twice per chunk.
func (w *Writer) sourceKey(h [32]byte) []byte {
	w.srcOnce.Do(func() {
		k := w.s.keys.IDKey.Sum([]byte("source\x00" + w.source))
		w.srcPrefix = k[:16]
	})
	return append(append(make([]byte, 0, 48), w.srcPrefix...), h[:]...)
}
