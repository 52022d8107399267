package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"drawbridge/vault/index"
	"drawbridge/vault/pack"
	"drawbridge/vault/seal"
	"drawbridge/vault/tree"
	"drawbridge/vault/vfs"
)

// Reader reads stored content. It exists only after the restore passphrase
// opened the recipient key. It is safe for concurrent use.
type Reader struct {
	s      *Store
	opener *seal.Opener

	mu    sync.Mutex
	keys  map[pack.ID]*seal.DataKey
	files map[pack.ID]vfs.File
	tools sync.Pool // *readTools
}

type readTools struct {
	ids *seal.IDHasher
	dec *pack.Decompressor
	rec []byte // the record read from the pack
	buf []byte // its sealed bytes, opened
}

// maxOpenPacks bounds the pack files a Reader keeps open.
const maxOpenPacks = 64

// Unlock checks the restore passphrase and returns a Reader.
func (s *Store) Unlock(passphrase []byte) (*Reader, error) {
	o, err := s.keys.Unlock(passphrase)
	if err != nil {
		return nil, err
	}
	return &Reader{s: s, opener: o, keys: map[pack.ID]*seal.DataKey{}, files: map[pack.ID]vfs.File{}}, nil
}

// Close closes the pack files the reader holds.
func (r *Reader) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, f := range r.files {
		f.Close()
		delete(r.files, id)
	}
}

func (r *Reader) packFile(id pack.ID) (vfs.File, *seal.DataKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.files[id]
	if !ok {
		if len(r.files) >= maxOpenPacks {
			for k, old := range r.files {
				old.Close()
				delete(r.files, k)
			}
		}
		var err error
		f, err = r.s.fs.OpenFile(id.Path(), os.O_RDONLY, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: pack %s: %v", ErrDamaged, id, err)
		}
		r.files[id] = f
	}
	key, ok := r.keys[id]
	if !ok {
		h, err := pack.ReadHeader(f)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: pack %s: %v", ErrDamaged, id, err)
		}
		if key, err = r.opener.Unwrap(h.Wrapped); err != nil {
			return nil, nil, fmt.Errorf("%w: pack %s: %v", ErrDamaged, id, err)
		}
		r.keys[id] = key
	}
	return f, key, nil
}

func (r *Reader) getTools() (*readTools, error) {
	if t, ok := r.tools.Get().(*readTools); ok {
		return t, nil
	}
	dec, err := pack.NewDecompressor()
	if err != nil {
		return nil, err
	}
	return &readTools{ids: r.s.keys.IDKey.Hasher(), dec: dec}, nil
}

// Blob returns a blob's plaintext, appended to dst[:0], after checking its
// outer checksum, authenticating it and re-hashing it. Damage is reported
// with an error wrapping ErrDamaged.
func (r *Reader) Blob(ctx context.Context, id [32]byte, dst []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e, err := r.s.idx.Lookup(id)
	if errors.Is(err, index.ErrNotFound) {
		return nil, fmt.Errorf("%w: blob %x is in no pack", ErrDamaged, id[:8])
	}
	if err != nil {
		return nil, err
	}
	return r.blobAt(e, dst)
}

func (r *Reader) blobAt(e pack.Entry, dst []byte) ([]byte, error) {
	f, key, err := r.packFile(e.Pack)
	if err != nil {
		return nil, err
	}
	t, err := r.getTools()
	if err != nil {
		return nil, err
	}
	defer r.tools.Put(t)
	// The record, the opened bytes and the decompressed ones go into the
	// tools' buffers, reused from blob to blob; only the copy into dst
	// leaves this function.
	if n := int(e.Length); cap(t.rec) < n && n <= pack.KeepBuffer {
		t.rec = make([]byte, 0, n)
	}
	rec, err := pack.ReadRecordBuf(f, e, t.rec)
	if err != nil {
		if errors.Is(err, pack.ErrDamaged) {
			return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
		}
		return nil, err
	}
	if n := len(rec.Sealed); cap(t.buf) < n && n <= pack.KeepBuffer {
		t.buf = make([]byte, 0, n)
	}
	plain, err := pack.Open(rec, key, t.ids, t.dec, t.buf)
	if err != nil {
		return nil, fmt.Errorf("%w: pack %s: %v", ErrDamaged, e.Pack, err)
	}
	return append(dst[:0], plain...), nil
}

// Tree reads and decodes a tree blob.
func (r *Reader) Tree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	b, err := r.Blob(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	t, err := tree.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%w: tree %x: %v", ErrDamaged, id[:8], err)
	}
	return t, nil
}

// List reads and decodes a chunk list blob.
func (r *Reader) List(ctx context.Context, id tree.ID) ([]tree.ChunkRef, error) {
	b, err := r.Blob(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	refs, err := tree.DecodeList(b)
	if err != nil {
		return nil, fmt.Errorf("%w: list %x: %v", ErrDamaged, id[:8], err)
	}
	return refs, nil
}

// Chunk reads a data chunk.
func (r *Reader) Chunk(ctx context.Context, id tree.ID, dst []byte) ([]byte, error) {
	return r.Blob(ctx, id, dst)
}
