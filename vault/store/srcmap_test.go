package store

import (
	"context"
	"testing"

	"drawbridge/vault/seal"
	"drawbridge/vault/tree"
	"drawbridge/vault/vfs"
)

// srcStored is a chunk a test stored with its source chunk map entries.
type srcStored struct {
	h, hp [32]byte // the source's hash, and its resume key (RememberPartial)
	ref   tree.ChunkRef
}

// storeSourceChunks stores n chunks of 256 KiB of random bytes through w and
// remembers each under a source hash and a resume key.
func storeSourceChunks(t *testing.T, w *Writer, seed uint64, n int) []srcStored {
	t.Helper()
	var out []srcStored
	for i := 0; i < n; i++ {
		data := crashBytes(seed+uint64(i), 256<<10)
		ref, _, err := w.ChunkIn(data)
		if err != nil {
			t.Fatal(err)
		}
		c := srcStored{h: seal.Hash([]byte("h"), data), hp: seal.Hash([]byte("resume"), data), ref: ref}
		w.RememberSourceChunk(c.h, c.ref)
		w.RememberPartial(c.hp, c.ref)
		out = append(out, c)
	}
	return out
}

// TestSourceChunkMapWrittenAsPacksSeal: a pull killed outright (neither
// Commit nor Abort runs) keeps the source chunk map entries of every chunk
// in a sealed pack, and none of a chunk that is not indexed; a committed
// snapshot leaves no resume entries behind.
func TestSourceChunkMapWrittenAsPacksSeal(t *testing.T) {
	s := initMemStore(t, vfs.NewMem())
	defer s.Close()
	ctx := context.Background()
	w, err := s.NewWriter(ctx, "src", WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chunks := storeSourceChunks(t, w, 1, 43) // not a multiple of the 4 a pack holds
	// What a kill leaves: the unsealed packs are gone, nothing else runs.
	w.in.abort()

	has := func(w *Writer, h [32]byte) bool {
		v, err := s.idx.GetSourceChunk(w.sourceKey(h))
		if err != nil {
			t.Fatal(err)
		}
		return v != nil
	}
	indexed, kept := 0, 0
	for i, c := range chunks {
		in, err := s.idx.Has(c.ref.ID)
		if err != nil {
			t.Fatal(err)
		}
		a, b := has(w, c.h), has(w, c.hp)
		if (a || b) && !in {
			t.Errorf("chunk %d is not indexed, yet the source chunk map names it (%v, %v)", i, a, b)
		}
		if a != b {
			t.Errorf("chunk %d: source chunk map entry %v, resume entry %v", i, a, b)
		}
		if in {
			indexed++
		}
		if a {
			kept++
		}
	}
	if indexed == 0 || indexed == len(chunks) {
		t.Fatalf("%d chunks of %d in sealed packs: the test needs some in and some out", indexed, len(chunks))
	}
	// The chunk that fills a pack is remembered once the pack is indexed,
	// so its entry goes with the next pack: after the last one, at most
	// one per worker is left unwritten.
	if kept < indexed-2 {
		t.Fatalf("%d chunks of %d in sealed packs have source chunk map entries", kept, indexed)
	}
	t.Logf("%d chunks of %d in sealed packs, %d with source chunk map entries", indexed, len(chunks), kept)

	w2, err := s.NewWriter(ctx, "src", WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, c := range chunks {
		if _, _, ok, err := w2.SourceChunk(c.h); err != nil {
			t.Fatal(err)
		} else if ok {
			found++
		}
	}
	if found != kept {
		t.Fatalf("the next writer finds %d chunks of the source, want %d", found, kept)
	}
	more := storeSourceChunks(t, w2, 1000, 12)
	root, err := w2.Tree(&tree.Tree{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Commit(root, []string{"/"}); err != nil {
		t.Fatal(err)
	}
	for i, c := range more {
		if !has(w2, c.h) {
			t.Errorf("committed chunk %d: no source chunk map entry", i)
		}
		if has(w2, c.hp) {
			t.Errorf("committed chunk %d: its resume entry outlived the commit", i)
		}
	}
}
