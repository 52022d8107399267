package restore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/tree"
)

// fakeSource is an in-memory Source. Trees are stored encoded and decoded
// with tree.Decode on every read, as a store would; raw trees skip the codec
// so tests can hand Restore what a hostile writer could.
type fakeSource struct {
	mu     sync.Mutex
	trees  map[tree.ID][]byte
	raw    map[tree.ID]*tree.Tree
	lists  map[tree.ID][]byte
	chunks map[tree.ID][]byte
	fail   map[tree.ID]error
	seq    int
	// blockChunks makes Chunk wait for its context to end.
	blockChunks bool
}

func newSource() *fakeSource {
	return &fakeSource{
		trees:  map[tree.ID][]byte{},
		raw:    map[tree.ID]*tree.Tree{},
		lists:  map[tree.ID][]byte{},
		chunks: map[tree.ID][]byte{},
		fail:   map[tree.ID]error{},
	}
}

func blobID(kind byte, b []byte) tree.ID {
	return sha256.Sum256(append([]byte{kind}, b...))
}

func (s *fakeSource) Tree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail[id]; err != nil {
		return nil, err
	}
	if t, ok := s.raw[id]; ok {
		return &tree.Tree{Entries: slices.Clone(t.Entries)}, nil
	}
	b, ok := s.trees[id]
	if !ok {
		return nil, fmt.Errorf("tree %x: %w", id[:4], fs.ErrNotExist)
	}
	return tree.Decode(b)
}

func (s *fakeSource) List(ctx context.Context, id tree.ID) ([]tree.ChunkRef, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail[id]; err != nil {
		return nil, err
	}
	b, ok := s.lists[id]
	if !ok {
		return nil, fmt.Errorf("list %x: %w", id[:4], fs.ErrNotExist)
	}
	return tree.DecodeList(b)
}

func (s *fakeSource) Chunk(ctx context.Context, id tree.ID, dst []byte) ([]byte, error) {
	if s.blockChunks {
		<-ctx.Done()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fail[id]; err != nil {
		return nil, err
	}
	b, ok := s.chunks[id]
	if !ok {
		return nil, fmt.Errorf("chunk %x: %w", id[:4], fs.ErrNotExist)
	}
	return append(dst[:0], b...), nil
}

func (s *fakeSource) chunk(data []byte) tree.ChunkRef {
	id := blobID('c', data)
	s.mu.Lock()
	s.chunks[id] = bytes.Clone(data)
	s.mu.Unlock()
	return tree.ChunkRef{ID: id, Length: uint64(len(data))}
}

// file makes a file entry holding data cut into chunks of chunkSize bytes;
// with perList > 0 it uses layout 1 with perList refs in each list.
func (s *fakeSource) file(t testing.TB, name string, mode uint32, data []byte, chunkSize, perList int) tree.Entry {
	e := tree.Entry{Name: name, Kind: tree.File, Mode: mode, Size: uint64(len(data))}
	var refs []tree.ChunkRef
	for off := 0; off < len(data); off += chunkSize {
		refs = append(refs, s.chunk(data[off:min(off+chunkSize, len(data))]))
	}
	if perList == 0 || len(refs) == 0 {
		e.Chunks = refs
		return e
	}
	e.Layout = tree.LayoutIndirect
	for off := 0; off < len(refs); off += perList {
		b, err := tree.EncodeList(refs[off:min(off+perList, len(refs))])
		if err != nil {
			t.Fatal(err)
		}
		id := blobID('l', b)
		s.lists[id] = b
		e.Lists = append(e.Lists, id)
	}
	return e
}

// dir stores a valid tree of entries (sorted here) and returns its id.
func (s *fakeSource) dir(t testing.TB, entries ...tree.Entry) tree.ID {
	t.Helper()
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b tree.Entry) int { return strings.Compare(a.Name, b.Name) })
	b, err := (&tree.Tree{Entries: entries}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	id := blobID('t', b)
	s.trees[id] = b
	return id
}

// rawDir stores entries as they are, bypassing every check of the codec.
func (s *fakeSource) rawDir(entries ...tree.Entry) tree.ID {
	s.seq++
	id := blobID('r', binary.AppendUvarint(nil, uint64(s.seq)))
	s.raw[id] = &tree.Tree{Entries: entries}
	return id
}

// rawBlob stores b as a tree blob's plaintext, for hand-encoded trees.
func (s *fakeSource) rawBlob(b []byte) tree.ID {
	id := blobID('t', b)
	s.trees[id] = b
	return id
}

// content is the expected content of a file entry.
func (s *fakeSource) content(t testing.TB, e *tree.Entry) []byte {
	refs := e.Chunks
	for _, id := range e.Lists {
		more, err := tree.DecodeList(s.lists[id])
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, more...)
	}
	var out []byte
	for _, r := range refs {
		out = append(out, s.chunks[r.ID]...)
	}
	return out
}

func dirEntry(name string, mode uint32, id tree.ID) tree.Entry {
	return tree.Entry{Name: name, Kind: tree.Dir, Mode: mode, Subtree: id}
}

// needRoot skips a test that needs root, except under CI=true where the
// missing privilege is a failure.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	fixture.Need(t, "needs root ("+why+"); run as root")
}

// needUserXattrs skips a test whose filesystem lacks user xattrs, except under
// CI=true.
func needUserXattrs(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, ".xattr-probe")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	err := unix.Setxattr(p, "user.probe", []byte("1"), 0)
	if err == nil {
		return
	}
	fixture.Need(t, fmt.Sprintf("the filesystem of %s has no user xattrs (%v); use ext4, xfs or tmpfs", dir, err))
}

// tempDir is t.TempDir whose cleanup first makes every directory writable
// again, since restored trees hold read-only directories.
func tempDir(t *testing.T) string {
	dir := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	return dir
}
