package vfs

import (
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// MemFS is a strict in-memory FS for crash and fault tests, modelled on
// pebble's strict MemFS and errorfs. It remembers what was made durable:
// a file's content as of its last Sync and a directory's entries as of its
// last SyncDir. Crash returns the FS a reboot would find. InjectErrors makes
// every N-th mutating or syncing operation fail.
//
// MemFS honours Seal: writing, renaming or removing a sealed file fails with
// fs.ErrPermission, even where root could on a plain read-only file.
type MemFS struct {
	mu    sync.Mutex
	root  *memNode
	ops   int // mutating and syncing operations so far
	every int // fail every N-th operation; 0: never
	since int // operations since InjectErrors
	clock int64
}

type memNode struct {
	dir    bool
	mode   fs.FileMode // permission bits only
	sealed bool
	mtime  time.Time

	data   []byte // file: current content
	synced []byte // file: content as of the last Sync

	children map[string]*memNode // dir: current entries
	durable  map[string]*memNode // dir: entries as of the last SyncDir
}

// NewMem returns an empty MemFS.
func NewMem() *MemFS {
	return &MemFS{root: newMemDir(0o755, time.Unix(0, 0))}
}

func newMemDir(perm fs.FileMode, t time.Time) *memNode {
	return &memNode{dir: true, mode: perm.Perm(), mtime: t,
		children: map[string]*memNode{}, durable: map[string]*memNode{}}
}

// Crash returns a new MemFS holding only what was durable in m: the
// directory entries each directory had at its last SyncDir, and each file's
// content as of its last Sync. Modes and sealed flags of surviving files are
// kept. m itself is left as it was; files open on m stay attached to m.
func (m *MemFS) Crash() *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &MemFS{root: crashCopy(m.root), clock: m.clock}
}

func crashCopy(n *memNode) *memNode {
	if !n.dir {
		return &memNode{mode: n.mode, sealed: n.sealed, mtime: n.mtime,
			data: slices.Clone(n.synced), synced: slices.Clone(n.synced)}
	}
	c := newMemDir(n.mode, n.mtime)
	for name, child := range n.durable {
		c.children[name] = crashCopy(child)
	}
	c.durable = maps.Clone(c.children)
	return c
}

// InjectErrors makes every N-th mutating or syncing operation from now on
// (OpenFile for writing, Write, Sync, SyncDir, Rename, Remove, MkdirAll,
// Seal) fail with an error wrapping ErrInjected. A failed Write writes the
// first half of its buffer, as a torn write would. 0 turns injection off.
func (m *MemFS) InjectErrors(every int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.every, m.since = every, 0
}

// Ops returns the number of mutating or syncing operations counted so far.
func (m *MemFS) Ops() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ops
}

// Unseal clears a file's sealed flag and makes it writable, so a test can
// tamper with a sealed file. Nothing in Drawbridge itself calls it.
func (m *MemFS) Unseal(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup("unseal", name)
	if err != nil {
		return err
	}
	n.sealed = false
	n.mode = 0o644
	return nil
}

// op counts one mutating operation and decides whether it fails. m.mu held.
func (m *MemFS) op(name, p string) error {
	m.ops++
	if m.every <= 0 {
		return nil
	}
	m.since++
	if m.since%m.every == 0 {
		return &fs.PathError{Op: name, Path: p, Err: ErrInjected}
	}
	return nil
}

func (m *MemFS) now() time.Time {
	m.clock++
	return time.Unix(0, m.clock)
}

// lookup returns the node at name or the error os would give. m.mu held.
func (m *MemFS) lookup(op, name string) (*memNode, error) {
	if err := checkName(op, name); err != nil {
		return nil, err
	}
	n := m.root
	if name == "." {
		return n, nil
	}
	for _, el := range strings.Split(name, "/") {
		if !n.dir {
			return nil, &fs.PathError{Op: op, Path: name, Err: errNotDir}
		}
		c, ok := n.children[el]
		if !ok {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		n = c
	}
	return n, nil
}

// parent returns the directory holding name and name's last element.
func (m *MemFS) parent(op, name string) (*memNode, string, error) {
	if err := checkName(op, name); err != nil {
		return nil, "", err
	}
	if name == "." {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	d, err := m.lookup(op, path.Dir(name))
	if err != nil {
		return nil, "", err
	}
	if !d.dir {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: errNotDir}
	}
	return d, path.Base(name), nil
}

var (
	errNotDir   = errors.New("not a directory")
	errIsDir    = errors.New("is a directory")
	errNotEmpty = errors.New("directory not empty")
	errBadFD    = errors.New("bad file descriptor")
)

const writeFlags = os.O_WRONLY | os.O_RDWR | os.O_CREATE | os.O_TRUNC | os.O_APPEND

func (m *MemFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := checkName("open", name); err != nil {
		return nil, err
	}
	writing := flag&writeFlags != 0
	if writing {
		if err := m.op("open", name); err != nil {
			return nil, err
		}
	}
	var n *memNode
	if name == "." {
		n = m.root
	} else {
		d, base, err := m.parent("open", name)
		if err != nil {
			return nil, err
		}
		n = d.children[base]
		switch {
		case n != nil && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
		case n == nil && flag&os.O_CREATE == 0:
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		case n == nil:
			n = &memNode{mode: perm.Perm(), mtime: m.now()}
			d.children[base] = n
		}
	}
	if n.dir && writing {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errIsDir}
	}
	if n.sealed && writing {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	if flag&os.O_TRUNC != 0 && flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		n.data = nil
		n.mtime = m.now()
	}
	return &memFile{m: m, n: n, name: name, flag: flag}, nil
}

func (m *MemFS) Rename(oldname, newname string) error {
	return m.rename(oldname, newname, true)
}

func (m *MemFS) renameNoReplace(oldname, newname string) error {
	return m.rename(oldname, newname, false)
}

func (m *MemFS) rename(oldname, newname string, replace bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := checkName("rename", oldname); err != nil {
		return err
	}
	if err := checkName("rename", newname); err != nil {
		return err
	}
	if err := m.op("rename", oldname); err != nil {
		return err
	}
	fail := func(err error) error {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	od, obase, err := m.parent("rename", oldname)
	if err != nil {
		return fail(err)
	}
	nd, nbase, err := m.parent("rename", newname)
	if err != nil {
		return fail(err)
	}
	n := od.children[obase]
	if n == nil {
		return fail(fs.ErrNotExist)
	}
	if n.sealed {
		return fail(fs.ErrPermission)
	}
	if oldname == newname {
		return nil
	}
	if n.dir && strings.HasPrefix(newname+"/", oldname+"/") {
		return fail(fs.ErrInvalid)
	}
	if t := nd.children[nbase]; t != nil {
		switch {
		case !replace:
			return fail(fs.ErrExist)
		case t.sealed:
			return fail(fs.ErrPermission)
		case t.dir != n.dir:
			return fail(errIsDir)
		case t.dir && len(t.children) > 0:
			return fail(errNotEmpty)
		}
	}
	delete(od.children, obase)
	nd.children[nbase] = n
	return nil
}

func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := checkName("remove", name); err != nil {
		return err
	}
	if err := m.op("remove", name); err != nil {
		return err
	}
	d, base, err := m.parent("remove", name)
	if err != nil {
		return err
	}
	n := d.children[base]
	switch {
	case n == nil:
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	case n.sealed:
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrPermission}
	case n.dir && len(n.children) > 0:
		return &fs.PathError{Op: "remove", Path: name, Err: errNotEmpty}
	}
	delete(d.children, base)
	return nil
}

func (m *MemFS) MkdirAll(name string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := checkName("mkdir", name); err != nil {
		return err
	}
	if err := m.op("mkdir", name); err != nil {
		return err
	}
	if name == "." {
		return nil
	}
	n := m.root
	for _, el := range strings.Split(name, "/") {
		c, ok := n.children[el]
		if !ok {
			c = newMemDir(perm, m.now())
			n.children[el] = c
		} else if !c.dir {
			return &fs.PathError{Op: "mkdir", Path: name, Err: errNotDir}
		}
		n = c
	}
	return nil
}

func (m *MemFS) ReadDir(name string) ([]fs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if !n.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errNotDir}
	}
	names := slices.Sorted(maps.Keys(n.children))
	out := make([]fs.DirEntry, len(names))
	for i, el := range names {
		out[i] = fs.FileInfoToDirEntry(n.children[el].info(el))
	}
	return out, nil
}

func (m *MemFS) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	return n.info(path.Base(name)), nil
}

func (m *MemFS) SyncDir(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := checkName("syncdir", name); err != nil {
		return err
	}
	if err := m.op("syncdir", name); err != nil {
		return err
	}
	n, err := m.lookup("syncdir", name)
	if err != nil {
		return err
	}
	if !n.dir {
		return &fs.PathError{Op: "syncdir", Path: name, Err: errNotDir}
	}
	n.durable = maps.Clone(n.children)
	return nil
}

func (m *MemFS) Seal(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := checkName("seal", name); err != nil {
		return err
	}
	if err := m.op("seal", name); err != nil {
		return err
	}
	n, err := m.lookup("seal", name)
	if err != nil {
		return err
	}
	if n.dir {
		return &fs.PathError{Op: "seal", Path: name, Err: errIsDir}
	}
	n.mode = 0o444
	n.sealed = true
	return nil
}

func (m *MemFS) isImmutable(name string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup("getflags", name)
	if err != nil {
		return false, err
	}
	return n.sealed, nil
}

func (n *memNode) info(name string) fs.FileInfo {
	mode := n.mode
	if n.dir {
		mode |= fs.ModeDir
	}
	return &memInfo{name: name, size: int64(len(n.data)), mode: mode, mtime: n.mtime}
}

type memInfo struct {
	name  string
	size  int64
	mode  fs.FileMode
	mtime time.Time
}

func (i *memInfo) Name() string       { return i.name }
func (i *memInfo) Size() int64        { return i.size }
func (i *memInfo) Mode() fs.FileMode  { return i.mode }
func (i *memInfo) ModTime() time.Time { return i.mtime }
func (i *memInfo) IsDir() bool        { return i.mode.IsDir() }
func (i *memInfo) Sys() any           { return nil }

// memFile is an open MemFS file. It stays attached to its node after the
// name is removed or renamed, as an open file descriptor does.
type memFile struct {
	m      *MemFS
	n      *memNode
	name   string
	flag   int
	off    int64
	closed bool
}

func (f *memFile) check(op string, write bool) error {
	if f.closed {
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	}
	if f.n.dir && op != "sync" && op != "stat" {
		return &fs.PathError{Op: op, Path: f.name, Err: errIsDir}
	}
	if write && f.flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		return &fs.PathError{Op: op, Path: f.name, Err: errBadFD}
	}
	if !write && f.flag&os.O_WRONLY != 0 {
		return &fs.PathError{Op: op, Path: f.name, Err: errBadFD}
	}
	return nil
}

func (f *memFile) Read(b []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if f.off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	k := copy(b, f.n.data[f.off:])
	f.off += int64(k)
	return k, nil
}

func (f *memFile) ReadAt(b []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	k := copy(b, f.n.data[off:])
	if k < len(b) {
		return k, io.EOF
	}
	return k, nil
}

func (f *memFile) Seek(offset int64, whence int) (int64, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if f.closed {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrClosed}
	}
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = f.off
	case io.SeekEnd:
		base = int64(len(f.n.data))
	default:
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrInvalid}
	}
	if base+offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrInvalid}
	}
	f.off = base + offset
	return f.off, nil
}

func (f *memFile) Write(b []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if f.n.sealed {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: fs.ErrPermission}
	}
	ierr := f.m.op("write", f.name)
	if ierr != nil {
		b = b[:len(b)/2]
	}
	if f.flag&os.O_APPEND != 0 {
		f.off = int64(len(f.n.data))
	}
	end := f.off + int64(len(b))
	if end > int64(len(f.n.data)) {
		f.n.data = append(f.n.data, make([]byte, end-int64(len(f.n.data)))...)
	}
	copy(f.n.data[f.off:], b)
	f.off = end
	if len(b) > 0 {
		f.n.mtime = f.m.now()
	}
	return len(b), ierr
}

func (f *memFile) Sync() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("sync", false); err != nil && !errors.Is(err, errBadFD) {
		return err
	}
	if err := f.m.op("sync", f.name); err != nil {
		return err
	}
	if !f.n.dir {
		f.n.synced = slices.Clone(f.n.data)
	}
	return nil
}

func (f *memFile) Close() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	return nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if f.closed {
		return nil, &fs.PathError{Op: "stat", Path: f.name, Err: fs.ErrClosed}
	}
	return f.n.info(path.Base(f.name)), nil
}
