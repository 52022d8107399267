package pull

// Resuming SFTP pulls. A pull cut off (the window closed, the link went
// down) keeps the chunks that reached sealed packs, and with them what the
// source chunk map says of them (see store.Writer.Abort). An SFTP pull
// also records there, for a pull cut off only (store.Writer.RememberPartial),
// where in a file each chunk it stored started: the key is a hash of the
// source's latest snapshot id, the file's path, size and mtime, and the
// chunk's offset. The next pull of the same source, while no snapshot of it
// was committed since, follows that chain from offset 0 for a file whose
// size and mtime are still the same, takes the chunks it finds without
// reading them, and reads the file from where they
// end. The chunker cuts the rest exactly as it would have cut the whole
// file: a boundary depends only on the bytes since the previous one.
//
// Like rsync's quick check, this takes a file of the same size and mtime
// (SFTP gives whole seconds) for an unchanged one, and only between a pull
// cut off and the next: a file rewritten in place within the same second,
// to the same size, after a pull was cut off in its middle, would be stored
// as its old start and its new end. Every completed pull reads every file
// from its start again.
//
// An exec source is a stream that cannot be read from a given offset: a
// pull cut off reads the whole stream again, and only the storing of the
// chunks already stored is skipped.

import (
	"encoding/binary"
	"io"
	"sync"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/chunk"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

// resumeWindow is how many chunks of one file are being stored at once.
const resumeWindow = 8

// resumeKey names, in the source chunk map, the chunk that starts at off in
// the file at path as a pull saw it (size, and mtime in seconds), after the
// source's snapshot base (its id, "" for none).
func resumeKey(base, path string, size uint64, mtime int64, off uint64) [32]byte {
	b := make([]byte, 0, 96+len(path))
	b = append(b, "drawbridge sftp resume\x00"...)
	b = append(b, base...)
	b = append(b, 0)
	b = binary.AppendUvarint(b, size)
	b = binary.AppendVarint(b, mtime)
	b = binary.AppendUvarint(b, off)
	b = append(b, path...)
	return agentproto.HashChunk(b)
}

// resumePoint returns the chunks that an earlier pull of this source stored
// of the start of the file at path, as it is now (size, mtime), and the
// offset where they end.
func resumePoint(w *store.Writer, base, path string, size uint64, mtime int64) ([]tree.ChunkRef, uint64, error) {
	var refs []tree.ChunkRef
	var off uint64
	for off < size {
		ref, _, ok, err := w.SourceChunk(resumeKey(base, path, size, mtime, off))
		if err != nil {
			return nil, 0, err
		}
		if !ok || ref.Length == 0 || ref.Length > size-off {
			break
		}
		refs = append(refs, ref)
		off += ref.Length
	}
	return refs, off, nil
}

// resumable stores files so that a pull cut off can resume them. Its
// chunkers and buffers are shared by the files of a pull.
type resumable struct {
	w        *store.Writer
	params   chunk.Params
	chunkers sync.Pool
	bufs     sync.Pool
}

func newResumable(w *store.Writer) *resumable {
	return &resumable{w: w, params: w.ChunkParams()}
}

// storeFrom chunks r, the bytes of the file at path from offset from on,
// and stores the chunks; it fills e (layout, chunks or lists, size) with
// have, the chunks of the bytes before from, followed by them. Each chunk
// is recorded under its resumeKey as soon as it is stored, for Abort.
// Errors of r are returned as they are, wrapped: the caller tells them
// from store errors.
func (rs *resumable) storeFrom(r io.Reader, e *tree.Entry, base, path string, mtime int64, have []tree.ChunkRef, from uint64) error {
	w, params := rs.w, rs.params
	c, ok := rs.chunkers.Get().(*chunk.Chunker)
	if ok {
		c.Reset(r)
	} else {
		c = chunk.New(r, params)
	}
	defer func() {
		c.Reset(nil)
		rs.chunkers.Put(c)
	}()
	fc := fileChunks{w: w}
	for _, ref := range have {
		if err := fc.add(ref); err != nil {
			return err
		}
	}
	type result struct {
		ref tree.ChunkRef
		err error
	}
	var queue []chan result // chunks being stored, in order
	bufs := make(chan []byte, resumeWindow)
	for range resumeWindow {
		bufs <- nil
	}
	defer func() {
		for range resumeWindow {
			if b := <-bufs; b != nil {
				rs.bufs.Put(&b)
			}
		}
	}()
	take := func() error {
		r := <-queue[0]
		queue = queue[1:]
		if r.err != nil {
			return r.err
		}
		return fc.add(r.ref)
	}
	fail := func(err error) error {
		for _, ch := range queue {
			<-ch
		}
		return err
	}
	off := from
	for {
		if len(queue) == resumeWindow {
			if err := take(); err != nil {
				return fail(err)
			}
		}
		buf := <-bufs
		if buf == nil {
			if p, ok := rs.bufs.Get().(*[]byte); ok {
				buf = *p
			} else {
				buf = make([]byte, 0, params.Max)
			}
		}
		data, err := c.Next(buf)
		if err == io.EOF {
			bufs <- buf
			break
		}
		if err != nil {
			bufs <- buf
			return fail(err)
		}
		key := resumeKey(base, path, e.Size, mtime, off)
		off += uint64(len(data))
		w.Progress().Bytes.Add(int64(len(data)))
		done := make(chan result, 1)
		queue = append(queue, done)
		go func() {
			ref, _, err := w.ChunkIn(data)
			if err == nil {
				w.RememberPartial(key, ref)
			}
			bufs <- data[:0]
			done <- result{ref, err}
		}()
	}
	for len(queue) > 0 {
		if err := take(); err != nil {
			return fail(err)
		}
	}
	if err := fc.finish(e); err != nil {
		return err
	}
	e.Size = off
	return nil
}

// fileChunks collects a file's chunk references in order, moving them into
// list blobs for a file of more than tree.MaxListRefs chunks.
type fileChunks struct {
	w     *store.Writer
	refs  []tree.ChunkRef
	lists []tree.ID
}

func (f *fileChunks) add(ref tree.ChunkRef) error {
	f.refs = append(f.refs, ref)
	if len(f.refs) < tree.MaxListRefs {
		return nil
	}
	return f.storeList()
}

func (f *fileChunks) storeList() error {
	id, _, err := f.w.List(f.refs)
	if err != nil {
		return err
	}
	f.lists = append(f.lists, id)
	f.refs = f.refs[:0]
	return nil
}

// finish sets e's layout and content.
func (f *fileChunks) finish(e *tree.Entry) error {
	if len(f.lists) == 0 {
		e.Layout, e.Chunks, e.Lists = tree.LayoutInline, f.refs, nil
		return nil
	}
	if len(f.refs) > 0 {
		if err := f.storeList(); err != nil {
			return err
		}
	}
	e.Layout, e.Lists, e.Chunks = tree.LayoutIndirect, f.lists, nil
	return nil
}
