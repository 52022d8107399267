package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"drawbridge/vault/chunk"
	"drawbridge/vault/index"
	"drawbridge/vault/pack"
	"drawbridge/vault/seal"
	"drawbridge/vault/tree"
)

// ingest is the write pipeline of one backup: workers hash each blob with
// the vault's keyed hash, skip what the store already holds, compress, seal
// and append the rest to packs of their own. Memory is bounded by the number
// of buffers in flight, whatever the size of the files.
type ingest struct {
	s    *Store
	jobs chan *blobJob
	bufs chan []byte // free chunk buffers; their count bounds memory
	wg   sync.WaitGroup

	mu       sync.Mutex
	inflight map[[32]byte]pack.ID // blobs in packs not yet indexed
	used     map[pack.ID]struct{} // packs this snapshot references
	sealed   func(pack.ID)        // called once a pack is indexed, if set

	errOnce sync.Once
	errMu   sync.Mutex // guards err: fail runs while others read it
	err     error
	cancel  context.CancelFunc
	ctx     context.Context

	newBytes    atomic.Int64 // plaintext bytes of new blobs
	storedBytes atomic.Int64 // bytes written to packs
}

type blobJob struct {
	typ  pack.Type
	data []byte
	pool bool // data came from bufs and goes back there
	done chan blobResult
}

type blobResult struct {
	ref  tree.ChunkRef
	pack pack.ID // where the blob lives
	err  error
}

func (s *Store) newIngest(ctx context.Context) *ingest {
	ctx, cancel := context.WithCancel(ctx)
	in := &ingest{
		s:        s,
		jobs:     make(chan *blobJob, 2*s.workers),
		bufs:     make(chan []byte, 4*s.workers+8),
		inflight: map[[32]byte]pack.ID{},
		used:     map[pack.ID]struct{}{},
		ctx:      ctx,
		cancel:   cancel,
	}
	for i := 0; i < cap(in.bufs); i++ {
		in.bufs <- nil // allocated lazily
	}
	for i := 0; i < s.workers; i++ {
		in.wg.Add(1)
		go in.worker()
	}
	return in
}

func (in *ingest) fail(err error) {
	in.errOnce.Do(func() {
		in.errMu.Lock()
		in.err = err
		in.errMu.Unlock()
		in.cancel()
	})
}

// getBuf waits for a free chunk buffer.
func (in *ingest) getBuf() ([]byte, error) {
	select {
	case b := <-in.bufs:
		if b == nil {
			b = make([]byte, 0, in.s.info.Chunker.Max)
		}
		return b[:0], nil
	case <-in.ctx.Done():
		return nil, in.cause()
	}
}

func (in *ingest) putBuf(b []byte) { in.bufs <- b[:0] }

func (in *ingest) cause() error {
	in.errMu.Lock()
	err := in.err
	in.errMu.Unlock()
	if err != nil {
		return err
	}
	return in.ctx.Err()
}

// submit hands a blob to the workers; the result arrives on the returned
// channel. When pool is set, data is a buffer from getBuf.
func (in *ingest) submit(typ pack.Type, data []byte, pool bool) (chan blobResult, error) {
	j := &blobJob{typ: typ, data: data, pool: pool, done: make(chan blobResult, 1)}
	select {
	case in.jobs <- j:
		return j.done, nil
	case <-in.ctx.Done():
		if pool {
			in.putBuf(data)
		}
		return nil, in.cause()
	}
}

// store stores one blob and waits for it.
func (in *ingest) store(typ pack.Type, data []byte) (blobResult, error) {
	ch, err := in.submit(typ, data, false)
	if err != nil {
		return blobResult{}, err
	}
	return in.wait(ch)
}

func (in *ingest) wait(ch chan blobResult) (blobResult, error) {
	select {
	case r := <-ch:
		return r, r.err
	case <-in.ctx.Done():
		return blobResult{}, in.cause()
	}
}

// use records that the snapshot references a pack.
func (in *ingest) use(p pack.ID) {
	in.mu.Lock()
	in.used[p] = struct{}{}
	in.mu.Unlock()
}

// locate finds a blob among this backup's unindexed packs or in the index.
func (in *ingest) locate(id [32]byte) (pack.ID, bool, error) {
	in.mu.Lock()
	p, ok := in.inflight[id]
	in.mu.Unlock()
	if ok {
		return p, true, nil
	}
	e, err := in.s.idx.Lookup(id)
	if errors.Is(err, index.ErrNotFound) {
		return pack.ID{}, false, nil
	}
	if err != nil {
		return pack.ID{}, false, err
	}
	return e.Pack, true, nil
}

type worker struct {
	in   *ingest
	ids  *seal.IDHasher
	comp *pack.Compressor
	w    *pack.Writer
}

func (in *ingest) worker() {
	defer in.wg.Done()
	comp, err := pack.NewCompressor()
	if err != nil {
		in.fail(err)
		return
	}
	w := &worker{in: in, ids: in.s.keys.IDKey.Hasher(), comp: comp}
	for j := range in.jobs {
		var res blobResult
		if in.ctx.Err() != nil {
			res.err = in.cause()
		} else {
			res = w.handle(j)
			if res.err != nil {
				in.fail(res.err)
			}
		}
		if j.pool {
			in.putBuf(j.data)
		}
		j.done <- res
	}
	if w.w != nil {
		if in.ctx.Err() != nil {
			w.w.Abort()
			return
		}
		if err := w.finish(); err != nil {
			in.fail(err)
		}
	}
}

func (w *worker) handle(j *blobJob) blobResult {
	in := w.in
	id := w.ids.Sum(j.data)
	r := blobResult{ref: tree.ChunkRef{ID: id, Length: uint64(len(j.data))}}
	p, ok, err := in.locate(id)
	if err != nil {
		r.err = err
		return r
	}
	if ok {
		in.use(p)
		r.pack = p
		return r
	}
	if w.w == nil {
		if w.w, r.err = pack.NewWriter(in.s.fs, tmpDir, in.s.keys.Recipient); r.err != nil {
			return r
		}
	}
	in.mu.Lock()
	if p, ok := in.inflight[id]; ok { // another worker got there first
		in.used[p] = struct{}{}
		in.mu.Unlock()
		r.pack = p
		return r
	}
	r.pack = w.w.ID()
	in.inflight[id] = r.pack
	in.used[r.pack] = struct{}{}
	in.mu.Unlock()

	data, compressed := w.comp.Compress(j.data)
	before := w.w.Size()
	if _, r.err = w.w.Add(j.typ, id, len(j.data), data, compressed); r.err != nil {
		return r
	}
	in.newBytes.Add(int64(len(j.data)))
	in.storedBytes.Add(int64(w.w.Size() - before))
	if w.w.Size() >= uint64(in.s.info.PackTarget) {
		r.err = w.finish()
	}
	return r
}

// finish seals the worker's pack, indexes it, and forgets its blobs from
// the in-flight map now that the index has them.
func (w *worker) finish() error {
	pw := w.w
	w.w = nil
	entries, err := pw.Finish()
	if err != nil {
		return err
	}
	w.in.storedBytes.Add(pack.TrailerSize)
	if err := w.in.s.idx.AddPack(pw.ID(), entries); err != nil {
		return err
	}
	w.in.mu.Lock()
	for _, e := range entries {
		if w.in.inflight[e.ID] == pw.ID() {
			delete(w.in.inflight, e.ID)
		}
	}
	w.in.mu.Unlock()
	if w.in.sealed != nil {
		w.in.sealed(pw.ID())
	}
	return nil
}

// close stops the workers, sealing their packs, and reports the first error.
func (in *ingest) close() error {
	close(in.jobs)
	in.wg.Wait()
	// A cancel after the last blob still made workers discard their
	// unsealed packs, so it fails the backup like any other.
	err := in.cause()
	in.cancel()
	return err
}

// abort stops the workers and discards unfinished packs.
func (in *ingest) abort() {
	in.fail(context.Canceled)
	close(in.jobs)
	in.wg.Wait()
}

// chunkParams returns the store's chunker parameters.
func (in *ingest) chunkParams() chunk.Params { return in.s.info.Chunker }
