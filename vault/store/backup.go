package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"drawbridge/vault/pack"
	"drawbridge/vault/seal"
	"drawbridge/vault/tree"
)

// Progress is what a running backup has done so far; every field is read
// atomically.
type Progress struct {
	Files atomic.Int64
	Dirs  atomic.Int64
	Bytes atomic.Int64 // file bytes processed (read, or skipped as unchanged)
}

// BackupOptions configure a backup.
type BackupOptions struct {
	Progress *Progress
	// Warn is told about files that could not be read; the backup goes on
	// without them and the snapshot is marked partial.
	Warn func(path string, err error)
}

// Snapshot is one committed snapshot as its journal record describes it.
type Snapshot struct {
	ID          string    `json:"id"`
	Source      string    `json:"source"`
	Time        time.Time `json:"time"`
	Root        string    `json:"root"`
	Paths       []string  `json:"paths"`
	Files       int64     `json:"files"`
	Dirs        int64     `json:"dirs"`
	Bytes       int64     `json:"bytes"`
	NewBytes    int64     `json:"new_bytes"`
	StoredBytes int64     `json:"stored_bytes"`
	Errors      int64     `json:"errors"`
	Seconds     float64   `json:"seconds"`
	Refs        string    `json:"refs"` // H(refs file)
	Status      string    `json:"status"`
	Kind        string    `json:"kind,omitempty"`     // how it was taken: local, agent, sftp, exec
	Host        string    `json:"host,omitempty"`     // the source host it was pulled from
	HostKey     string    `json:"host_key,omitempty"` // SHA256 fingerprint of the host key the pull was made under
	Seq         uint64    `json:"seq,omitempty"`
}

// maxCachePending caps the file cache entries one backup collects.
const maxCachePending = 1 << 20

// backup walks local paths into a Writer.
type backup struct {
	*Writer

	fileSem   chan struct{} // files being read at once
	hardlinks map[[2]uint64]string
	skipDir   string
}

// ValidSourceName says whether a source name is acceptable.
func ValidSourceName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("source name must be 1 to 64 characters")
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') || name[0] == '.' {
			return fmt.Errorf("source name %q: use letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// Backup ingests local paths as one snapshot of source. It needs no
// passphrase. The snapshot exists once this returns without error.
func (s *Store) Backup(ctx context.Context, source string, paths []string, opt BackupOptions) (*Snapshot, error) {
	if err := ValidSourceName(source); err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, errors.New("nothing to back up: no paths given")
	}
	w, err := s.NewWriter(ctx, source, WriterOptions{Progress: opt.Progress, Warn: opt.Warn})
	if err != nil {
		return nil, err
	}
	b := &backup{
		Writer:    w,
		fileSem:   make(chan struct{}, 2*s.workers),
		hardlinks: map[[2]uint64]string{},
	}
	if abs, err := filepath.Abs(s.dir); err == nil && s.dir != "" {
		b.skipDir = abs
	}
	root, absPaths, err := b.run(paths)
	if err != nil {
		w.Abort()
		return nil, err
	}
	return w.Commit(root, absPaths)
}

// run walks every path and stores the root tree.
func (b *backup) run(paths []string) (tree.ID, []string, error) {
	var abs []string
	for _, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return tree.ID{}, nil, err
		}
		if _, err := os.Lstat(a); err != nil {
			return tree.ID{}, nil, fmt.Errorf("back up %s: %w", p, err)
		}
		abs = append(abs, a)
	}
	sort.Strings(abs)
	// Drop paths inside another given path: the outer walk covers them.
	var top []string
	for _, a := range abs {
		if len(top) > 0 {
			last := top[len(top)-1]
			if a == last || last == "/" || strings.HasPrefix(a, last+"/") {
				continue
			}
		}
		top = append(top, a)
	}
	root := &vdir{children: map[string]*vdir{}}
	for _, a := range top {
		if a == "/" {
			root.full = "/"
			continue
		}
		node := root
		parts := strings.Split(strings.TrimPrefix(a, "/"), "/")
		for i, part := range parts {
			child, ok := node.children[part]
			if !ok {
				child = &vdir{path: "/" + strings.Join(parts[:i+1], "/"), children: map[string]*vdir{}}
				node.children[part] = child
			}
			node = child
		}
		node.full = node.path
	}
	id, err := b.storeVirtual(root, "")
	return id, top, err
}

// vdir is a directory on the way from / to a backed-up path: only the
// named children are included, unless full is set.
type vdir struct {
	path     string
	full     string
	children map[string]*vdir
}

func (b *backup) storeVirtual(v *vdir, rel string) (tree.ID, error) {
	if v.full != "" {
		t, err := b.dirTree(v.full, rel)
		if err != nil {
			return tree.ID{}, err
		}
		return b.Tree(t)
	}
	names := make([]string, 0, len(v.children))
	for n := range v.children {
		names = append(names, n)
	}
	sort.Strings(names)
	t := &tree.Tree{}
	for _, n := range names {
		c := v.children[n]
		crel := rel + "/" + n
		if c.full != "" {
			e, _, ok, err := b.entry(c.full, crel)
			if err != nil {
				return tree.ID{}, err
			}
			if ok && e.Kind == tree.File {
				if err := b.file(c.full, &e); err != nil {
					return tree.ID{}, err
				}
				ok = e.Kind != 0
			}
			if ok {
				t.Entries = append(t.Entries, e)
			}
			continue
		}
		e, _, err := tree.Capture(c.path)
		if err != nil {
			return tree.ID{}, fmt.Errorf("back up %s: %w", c.path, err)
		}
		if e.Kind != tree.Dir {
			return tree.ID{}, fmt.Errorf("back up %s: not a directory", c.path)
		}
		if e.Subtree, err = b.storeVirtual(c, crel); err != nil {
			return tree.ID{}, err
		}
		b.prog.Dirs.Add(1)
		t.Entries = append(t.Entries, e)
	}
	return b.Tree(t)
}

// entry captures one object at path and, for files and directories, stores
// its content. ok is false when it was skipped.
func (b *backup) entry(path, rel string) (tree.Entry, tree.Stat, bool, error) {
	e, st, err := tree.Capture(path)
	if err != nil {
		b.warn(path, err)
		return e, st, false, nil
	}
	switch e.Kind {
	case tree.Dir:
		if path == b.skipDir {
			return e, st, false, nil
		}
		t, err := b.dirTree(path, rel)
		if err != nil {
			return e, st, false, err
		}
		if e.Subtree, err = b.Tree(t); err != nil {
			return e, st, false, err
		}
		b.prog.Dirs.Add(1)
	case tree.File:
		if st.Nlink > 1 {
			if first, seen := b.firstLink(st, rel); seen {
				e = tree.Entry{Name: e.Name, Kind: tree.Hardlink, Mode: e.Mode, UID: e.UID, GID: e.GID,
					User: e.User, Group: e.Group, MtimeSec: e.MtimeSec, MtimeNsec: e.MtimeNsec, Target: first}
				b.prog.Files.Add(1)
				return e, st, true, nil
			}
		}
	default:
		b.prog.Files.Add(1)
	}
	return e, st, true, nil
}

// dirTree builds the tree of one real directory. Entries are captured (and
// looked up in the file cache) in parallel; hard links and subdirectories are
// then handled in name order, depth first, so the first name of an inode is
// the earliest in that order; new file contents are read in the background.
func (b *backup) dirTree(path, rel string) (*tree.Tree, error) {
	ents, err := os.ReadDir(path)
	if err != nil {
		b.warn(path, err)
		return &tree.Tree{}, nil
	}
	type slot struct {
		e   tree.Entry
		st  tree.Stat
		err error
		hit bool // content taken from the file cache
	}
	slots := make([]slot, len(ents))
	capture := func(i int) {
		sl := &slots[i]
		p := filepath.Join(path, ents[i].Name())
		sl.e, sl.st, sl.err = tree.Capture(p)
		if sl.err == nil && sl.e.Kind == tree.File && sl.st.Nlink <= 1 {
			sl.hit = b.fromCache(b.cacheKey(p), statOf(&sl.e, &sl.st), &sl.e)
		}
	}
	b.parallel(len(ents), capture)

	// Full capacity up front: file goroutines hold &t.Entries[i], so the
	// slice must never be reallocated.
	t := &tree.Tree{Entries: make([]tree.Entry, 0, len(ents))}
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for i := range slots {
		if err := b.in.ctx.Err(); err != nil {
			wg.Wait()
			return nil, b.in.cause()
		}
		sl := &slots[i]
		cpath := filepath.Join(path, ents[i].Name())
		crel := rel + "/" + ents[i].Name()
		if sl.err != nil {
			b.warn(cpath, sl.err)
			continue
		}
		e := sl.e
		switch e.Kind {
		case tree.Dir:
			if cpath == b.skipDir {
				continue
			}
			sub, err := b.dirTree(cpath, crel)
			if err != nil {
				wg.Wait()
				return nil, err
			}
			if e.Subtree, err = b.Tree(sub); err != nil {
				wg.Wait()
				return nil, err
			}
			b.prog.Dirs.Add(1)
			t.Entries = append(t.Entries, e)
			continue
		case tree.File:
		default:
			b.prog.Files.Add(1)
			t.Entries = append(t.Entries, e)
			continue
		}
		if sl.st.Nlink > 1 {
			if first, seen := b.firstLink(sl.st, crel); seen {
				b.prog.Files.Add(1)
				t.Entries = append(t.Entries, tree.Entry{Name: e.Name, Kind: tree.Hardlink, Mode: e.Mode, UID: e.UID, GID: e.GID,
					User: e.User, Group: e.Group, MtimeSec: e.MtimeSec, MtimeNsec: e.MtimeNsec, Target: first})
				continue
			}
			sl.hit = b.fromCache(b.cacheKey(cpath), statOf(&e, &sl.st), &e)
		}
		t.Entries = append(t.Entries, e)
		if sl.hit {
			// An unchanged file costs no open and no read.
			b.prog.Files.Add(1)
			b.prog.Bytes.Add(int64(e.Size))
			continue
		}
		idx := len(t.Entries) - 1
		select {
		case b.fileSem <- struct{}{}:
		case <-b.in.ctx.Done():
			wg.Wait()
			return nil, b.in.cause()
		}
		// Taken here, not in the goroutine: this loop keeps appending to
		// t.Entries (within its capacity, so the element stays put).
		ep := &t.Entries[idx]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-b.fileSem }()
			if err := b.file(cpath, ep); err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	t.DropUnset()
	return t, nil
}

// firstLink records the first name of a multiply linked inode; for later
// names it returns that first name.
func (b *backup) firstLink(st tree.Stat, rel string) (string, bool) {
	key := [2]uint64{st.Dev, st.Ino}
	b.mu.Lock()
	defer b.mu.Unlock()
	if first, seen := b.hardlinks[key]; seen {
		return first, true
	}
	b.hardlinks[key] = strings.TrimPrefix(rel, "/")
	return "", false
}

func statOf(e *tree.Entry, st *tree.Stat) FileStat {
	return FileStat{size: e.Size, ino: st.Ino, dev: st.Dev,
		mtime: e.MtimeSec*1e9 + int64(e.MtimeNsec), ctime: st.CtimeSec*1e9 + st.CtimeNsec}
}

// parallel runs fn(0..n-1) on the store's workers; small n runs inline.
func (b *backup) parallel(n int, fn func(int)) {
	w := b.s.workers
	if n < 8 || w < 2 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// file stores one regular file's content into e. A file that cannot be
// read is warned about and dropped (e.Kind = 0); only store errors fail.
func (b *backup) file(path string, e *tree.Entry) error {
	b.prog.Files.Add(1)
	key := b.cacheKey(path)
	f, err := os.OpenFile(path, os.O_RDONLY|syscallNoatime, 0)
	if err != nil {
		f, err = os.Open(path)
	}
	if err != nil {
		b.warn(path, err)
		e.Kind = 0
		return nil
	}
	defer f.Close()
	fi, st, err := fstat(f)
	if err != nil {
		b.warn(path, err)
		e.Kind = 0
		return nil
	}
	if fi.Size() != int64(e.Size) {
		e.Size = uint64(fi.Size())
	}
	if b.fromCache(key, st, e) {
		b.prog.Bytes.Add(int64(e.Size))
		return nil
	}
	packs, err := b.content(f, e)
	if errors.Is(err, errRead) {
		b.warn(path, err)
		e.Kind = 0
		return nil
	}
	if err != nil {
		return err
	}
	b.remember(key, st, e, packs)
	return nil
}

// fileContent collects a file's chunk references in order, turning every
// MaxListRefs of them into a list blob so memory stays bounded.
type fileContent struct {
	w       *Writer
	pending []chan blobResult
	refs    []tree.ChunkRef
	lists   []tree.ID
	packs   map[pack.ID]struct{}
}

const maxPendingChunks = 64

func (fc *fileContent) push(ch chan blobResult) error {
	fc.pending = append(fc.pending, ch)
	if len(fc.pending) >= maxPendingChunks {
		return fc.take(len(fc.pending) / 2)
	}
	return nil
}

func (fc *fileContent) take(n int) error {
	for _, ch := range fc.pending[:n] {
		r, err := fc.w.in.wait(ch)
		if err != nil {
			return err
		}
		fc.packs[r.pack] = struct{}{}
		fc.refs = append(fc.refs, r.ref)
		if len(fc.refs) == tree.MaxListRefs {
			if err := fc.storeList(); err != nil {
				return err
			}
		}
	}
	fc.pending = append(fc.pending[:0], fc.pending[n:]...)
	return nil
}

func (fc *fileContent) flush() error { return fc.take(len(fc.pending)) }

func (fc *fileContent) drain() {
	for _, ch := range fc.pending {
		fc.w.in.wait(ch)
	}
	fc.pending = nil
}

func (fc *fileContent) storeList() error {
	if len(fc.refs) == 0 {
		return nil
	}
	data, err := tree.EncodeList(fc.refs)
	if err != nil {
		return err
	}
	r, err := fc.w.in.store(pack.List, data)
	if err != nil {
		return err
	}
	fc.packs[r.pack] = struct{}{}
	fc.lists = append(fc.lists, r.ref.ID)
	fc.refs = fc.refs[:0]
	return nil
}

// The file cache lets a backup skip reading a file whose size, mtime,
// ctime and inode are what they were when this source last stored it.
// Entries are written only after the snapshot that stored the file is
// committed, so everything they name is durable.

func (w *Writer) cacheKey(path string) []byte {
	h, ok := w.hashers.Get().(*seal.IDHasher)
	if !ok {
		h = w.s.keys.IDKey.Hasher()
	}
	k := h.Sum([]byte(w.source + "\x00" + path))
	w.hashers.Put(h)
	return k[:]
}

// FileStat is what tells that a file is unchanged since the source last
// stored it: size, inode, device, and mtime and ctime in nanoseconds.
type FileStat struct {
	size, ino, dev uint64
	mtime, ctime   int64
}

// NewFileStat builds a FileStat.
func NewFileStat(size, ino, dev uint64, mtimeNs, ctimeNs int64) FileStat {
	return FileStat{size: size, ino: ino, dev: dev, mtime: mtimeNs, ctime: ctimeNs}
}

func (w *Writer) fromCache(key []byte, st FileStat, e *tree.Entry) bool {
	v, err := w.s.idx.GetFile(key)
	if err != nil || v == nil {
		return false
	}
	c, ok := decodeCacheEntry(v)
	if !ok || c.st != st {
		return false
	}
	for _, p := range c.packs {
		if !w.knownPack[p] {
			return false
		}
	}
	for _, p := range c.packs {
		w.in.use(p)
	}
	if c.layout == tree.LayoutIndirect {
		e.Layout, e.Lists = tree.LayoutIndirect, c.ids
	} else {
		e.Layout = tree.LayoutInline
		e.Chunks = make([]tree.ChunkRef, len(c.ids))
		for i := range c.ids {
			e.Chunks[i] = tree.ChunkRef{ID: c.ids[i], Length: c.lens[i]}
		}
	}
	e.Size = st.size
	return true
}

func (w *Writer) remember(key []byte, st FileStat, e *tree.Entry, packs map[pack.ID]struct{}) {
	c := cacheEntry{st: st, layout: e.Layout}
	if e.Layout == tree.LayoutIndirect {
		c.ids = e.Lists
	} else {
		for _, r := range e.Chunks {
			c.ids = append(c.ids, r.ID)
			c.lens = append(c.lens, r.Length)
		}
	}
	for p := range packs {
		c.packs = append(c.packs, p)
	}
	v := c.encode()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.cache) < maxCachePending {
		w.cache[string(key)] = v
	}
}

type cacheEntry struct {
	st     FileStat
	layout uint8
	ids    []tree.ID
	lens   []uint64 // inline layout only
	packs  []pack.ID
}

const cacheVersion = 1

func (c *cacheEntry) encode() []byte {
	b := []byte{cacheVersion, c.layout}
	b = binary.AppendUvarint(b, c.st.size)
	b = binary.AppendUvarint(b, c.st.ino)
	b = binary.AppendUvarint(b, c.st.dev)
	b = binary.AppendVarint(b, c.st.mtime)
	b = binary.AppendVarint(b, c.st.ctime)
	b = binary.AppendUvarint(b, uint64(len(c.packs)))
	for _, p := range c.packs {
		b = append(b, p[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(c.ids)))
	for i, id := range c.ids {
		b = append(b, id[:]...)
		if c.layout == tree.LayoutInline {
			b = binary.AppendUvarint(b, c.lens[i])
		}
	}
	return b
}

func decodeCacheEntry(b []byte) (c cacheEntry, ok bool) {
	if len(b) < 2 || b[0] != cacheVersion || b[1] > tree.LayoutIndirect {
		return c, false
	}
	c.layout = b[1]
	b = b[2:]
	u := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			ok = false
			return 0
		}
		b = b[n:]
		return v
	}
	s := func() int64 {
		v, n := binary.Varint(b)
		if n <= 0 {
			ok = false
			return 0
		}
		b = b[n:]
		return v
	}
	ok = true
	c.st.size, c.st.ino, c.st.dev = u(), u(), u()
	c.st.mtime, c.st.ctime = s(), s()
	np := u()
	if !ok || np > uint64(len(b))/16 {
		return c, false
	}
	for i := uint64(0); i < np; i++ {
		var p pack.ID
		copy(p[:], b)
		b = b[16:]
		c.packs = append(c.packs, p)
	}
	ni := u()
	if !ok || ni > uint64(len(b))/32 {
		return c, false
	}
	for i := uint64(0); i < ni && ok; i++ {
		if len(b) < 32 {
			return c, false
		}
		var id tree.ID
		copy(id[:], b)
		b = b[32:]
		c.ids = append(c.ids, id)
		if c.layout == tree.LayoutInline {
			c.lens = append(c.lens, u())
		}
	}
	return c, ok && len(b) == 0
}

// fileKeys is how file identity is read from an open file.
func fstat(f *os.File) (os.FileInfo, FileStat, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, FileStat{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi, FileStat{size: uint64(fi.Size())}, nil
	}
	return fi, FileStat{size: uint64(st.Size), ino: st.Ino, dev: st.Dev,
		mtime: st.Mtim.Sec*1e9 + st.Mtim.Nsec, ctime: st.Ctim.Sec*1e9 + st.Ctim.Nsec}, nil
}

const syscallNoatime = syscall.O_NOATIME
