package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"drawbridge/vault/tree"
)

// maxDepth bounds directory nesting: each level holds a directory handle and
// its tree while the level below is restored. Paths this deep cannot be
// captured through path names anyway (PATH_MAX is 4096).
const maxDepth = 2048

// Restore writes the subtree at subpath ("" or "/" for the whole snapshot) of
// the snapshot tree root into target. If subpath names a directory its
// contents go into target; any other entry is restored as target/<its name>.
// target must not exist (it is then created with mode 0700) or be an empty
// directory; its own metadata is left alone.
//
// Damage in the snapshot is listed in the report and the rest is restored.
// An error writing to the target, or ctx ending, stops the restore with that
// error; the report then covers what was done before.
func Restore(ctx context.Context, src Source, root tree.ID, subpath string, target string, opt Options) (*Report, error) {
	comps, err := splitSubpath(subpath)
	if err != nil {
		return nil, err
	}
	exists, err := checkTarget(target)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r := &restorer{ctx: ctx, cancel: cancel, src: src, opt: opt, copies: map[string]string{}}
	if r.opt.Workers <= 0 {
		r.opt.Workers = runtime.GOMAXPROCS(0)
	}

	// Find what to restore before writing anything.
	t, err := src.Tree(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("read the snapshot's root tree: %w", err)
	}
	entries, bad := accept(t)
	r.stack = []*frame{{entries: entries}}
	var single *tree.Entry
	for i, c := range comps {
		e := find(r.top().entries, c)
		where := strings.Join(comps[:i+1], "/")
		switch {
		case e == nil:
			return nil, fmt.Errorf("restore %q: %w", where, fs.ErrNotExist)
		case e.Kind != tree.Dir && i < len(comps)-1:
			return nil, fmt.Errorf("restore %q: %q is not a directory", subpath, where)
		case e.Kind != tree.Dir:
			single = e
			continue
		}
		t, err := src.Tree(ctx, e.Subtree)
		if err != nil {
			return nil, fmt.Errorf("read the tree of %q: %w", where, err)
		}
		entries, bad = accept(t)
		r.push(&frame{name: c, entries: entries})
	}

	if !exists {
		if err := os.Mkdir(target, 0o700); err != nil {
			return nil, fmt.Errorf("create restore target: %w", err)
		}
	}
	r.root, err = os.OpenRoot(target)
	if err != nil {
		return nil, fmt.Errorf("open restore target: %w", err)
	}
	defer r.root.Close()
	base := r.top()
	base.dir, base.rel = r.root, "."
	r.single = single != nil
	r.base = slices.Clone(r.cur)

	r.jobs = make(chan fileJob, r.opt.Workers)
	for range r.opt.Workers {
		r.wg.Go(r.worker)
	}
	if single != nil {
		err = r.entry(base, single)
	} else {
		err = r.walk(base, bad)
	}
	if err != nil {
		r.cancel(err) // stop the workers too
	}
	close(r.jobs)
	r.wg.Wait()
	if err == nil {
		err = r.failed()
	}
	if err == nil {
		err = r.chmodDeferred()
	}
	r.closeFrames()
	return r.report(), err
}

func splitSubpath(p string) ([]string, error) {
	p = strings.TrimPrefix(p, "/")
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return nil, nil
	}
	comps := strings.Split(p, "/")
	for _, c := range comps {
		if err := tree.ValidName(c); err != nil {
			return nil, fmt.Errorf("restore path %q: %w", p, err)
		}
	}
	return comps, nil
}

// checkTarget reports whether target exists, failing unless it is missing or
// an empty directory.
func checkTarget(target string) (bool, error) {
	fi, err := os.Stat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("restore target: %w", err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s: %w", target, ErrTargetNotEmpty)
	}
	d, err := os.Open(target)
	if err != nil {
		return false, fmt.Errorf("restore target: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if len(names) > 0 {
		return false, fmt.Errorf("%s: %w", target, ErrTargetNotEmpty)
	}
	if err != nil && err != io.EOF {
		return false, fmt.Errorf("restore target: %w", err)
	}
	return true, nil
}

// restorer is one run. The walking goroutine owns the stack, copies, cache
// and deferred; workers share only the counters, damage list and jobs.
type restorer struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	src    Source
	opt    Options
	root   *os.Root // the target

	stack  []*frame // from the snapshot root down to the directory being restored
	cur    []string // snapshot path of stack's top (names of stack[1:])
	base   []string // snapshot path of the directory restored into the target
	single bool     // restoring one non-directory entry, not a directory's contents

	copies map[string]string // hardlink target outside the restored subtree → where its copy went
	cache  struct {          // the last tree read to resolve a hardlink
		id      tree.ID
		entries []tree.Entry
		ok      bool
	}
	deferred []deferredChmod

	jobs chan fileJob
	wg   sync.WaitGroup

	files, dirs, symlinks, other, bytes atomic.Int64

	mu      sync.Mutex
	damaged []Damage
	skipped []Damage
	err     error // first error writing to the target
}

// frame is one directory on the way from the snapshot root down.
type frame struct {
	name    string
	entries []tree.Entry // accepted entries, sorted and unique
	dir     *os.Root     // the restored directory; nil above the restored subtree
	rel     string       // its path in the target
	handle  *os.File     // dir opened for *at calls, on first need
}

func (f *frame) fd() (int, error) {
	if f.handle == nil {
		h, err := f.dir.Open(".")
		if err != nil {
			return -1, err
		}
		f.handle = h
	}
	return int(f.handle.Fd()), nil
}

func (f *frame) close() {
	if f.handle != nil {
		f.handle.Close()
		f.handle = nil
	}
	if f.rel != "." && f.dir != nil {
		f.dir.Close()
	}
}

type deferredChmod struct {
	rel  string
	mode uint32
}

func (r *restorer) top() *frame { return r.stack[len(r.stack)-1] }

func (r *restorer) push(f *frame) {
	r.stack = append(r.stack, f)
	r.cur = append(r.cur, f.name)
}

func (r *restorer) pop() {
	r.top().close()
	r.stack = r.stack[:len(r.stack)-1]
	r.cur = r.cur[:len(r.cur)-1]
}

func (r *restorer) closeFrames() {
	for _, f := range r.stack {
		f.close()
	}
}

// path is the snapshot path of name in the current directory.
func (r *restorer) path(name string) string {
	if len(r.cur) == 0 {
		return name
	}
	return strings.Join(r.cur, "/") + "/" + name
}

func relPath(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// refused reports whether err is the target's filesystem refusing
// something it cannot hold, under Options.Lenient, and lists path as
// skipped when it is.
func (r *restorer) refused(path string, err error) bool {
	if !r.metaRefused(err) {
		return false
	}
	r.mu.Lock()
	r.skipped = append(r.skipped, Damage{Path: path, Err: err})
	r.mu.Unlock()
	return true
}

// metaRefused reports whether err, from setting metadata, is the target's
// filesystem refusing it, to be ignored under Options.Lenient.
func (r *restorer) metaRefused(err error) bool {
	if !r.opt.Lenient {
		return false
	}
	for _, e := range []error{unix.EPERM, unix.EINVAL, unix.EOPNOTSUPP, unix.ENOSYS, unix.ENAMETOOLONG,
		unix.EEXIST, unix.EILSEQ, unix.EMLINK} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (r *restorer) damage(path string, err error) {
	r.mu.Lock()
	r.damaged = append(r.damaged, Damage{Path: path, Err: err})
	r.mu.Unlock()
}

// fail records an error writing to the target and stops the run.
func (r *restorer) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.cancel(err)
}

// failed returns why the run stopped early: the caller's context, else the
// first write error.
func (r *restorer) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil && r.err == nil {
		return context.Cause(r.ctx)
	}
	return r.err
}

// stopped is the error to return when an operation failed and the context
// may be the reason.
func (r *restorer) stopped() error {
	if r.ctx.Err() != nil {
		return context.Cause(r.ctx)
	}
	return nil
}

func (r *restorer) report() *Report {
	r.mu.Lock()
	damaged := slices.Clone(r.damaged)
	skipped := slices.Clone(r.skipped)
	r.mu.Unlock()
	slices.SortStableFunc(damaged, func(a, b Damage) int { return strings.Compare(a.Path, b.Path) })
	slices.SortStableFunc(skipped, func(a, b Damage) int { return strings.Compare(a.Path, b.Path) })
	return &Report{
		Files:    r.files.Load(),
		Dirs:     r.dirs.Load(),
		Symlinks: r.symlinks.Load(),
		Other:    r.other.Load(),
		Bytes:    r.bytes.Load(),
		Damaged:  damaged,
		Skipped:  skipped,
	}
}

type rejected struct {
	name string
	err  error
}

// accept returns a tree's entries that may be restored, sorted by name, and
// the others: names that are not a single valid component, and every entry
// of a name that occurs more than once (which of them is meant is unknown,
// and restoring one could leave a symlink where the next expects a directory).
func accept(t *tree.Tree) ([]tree.Entry, []rejected) {
	ok := true
	for i := range t.Entries {
		if tree.ValidName(t.Entries[i].Name) != nil || i > 0 && t.Entries[i-1].Name >= t.Entries[i].Name {
			ok = false
			break
		}
	}
	if ok {
		return t.Entries, nil
	}
	sorted := slices.Clone(t.Entries)
	slices.SortStableFunc(sorted, func(a, b tree.Entry) int { return strings.Compare(a.Name, b.Name) })
	var good []tree.Entry
	var bad []rejected
	for i, e := range sorted {
		if err := tree.ValidName(e.Name); err != nil {
			bad = append(bad, rejected{e.Name, err})
			continue
		}
		if i > 0 && sorted[i-1].Name == e.Name || i+1 < len(sorted) && sorted[i+1].Name == e.Name {
			bad = append(bad, rejected{e.Name, fmt.Errorf("%w: name %q occurs more than once", tree.ErrInvalid, e.Name)})
			continue
		}
		good = append(good, e)
	}
	return good, bad
}

func find(entries []tree.Entry, name string) *tree.Entry {
	i, ok := slices.BinarySearchFunc(entries, name, func(e tree.Entry, n string) int { return strings.Compare(e.Name, n) })
	if !ok {
		return nil
	}
	return &entries[i]
}

// walk restores the entries of f, which is the top of the stack.
func (r *restorer) walk(f *frame, bad []rejected) error {
	for _, b := range bad {
		r.damage(r.path(b.name), b.err)
	}
	for i := range f.entries {
		if err := r.stopped(); err != nil {
			return err
		}
		if err := r.entry(f, &f.entries[i]); err != nil {
			return err
		}
	}
	return nil
}

// entry restores e into directory f. Only errors writing to the target are
// returned; damage is recorded.
func (r *restorer) entry(f *frame, e *tree.Entry) error {
	path := r.path(e.Name)
	if err := tree.ValidName(e.Name); err != nil { // accept() did; a second look costs nothing
		r.damage(path, err)
		return nil
	}
	switch e.Kind {
	case tree.Dir:
		return r.dir(f, e, path)
	case tree.File:
		return r.file(f, e.Name, e, path)
	case tree.Symlink:
		return r.symlink(f, e, path)
	case tree.Hardlink:
		return r.hardlink(f, e, path)
	case tree.FIFO, tree.CharDev, tree.BlockDev:
		return r.node(f, e, path)
	case tree.Socket:
		r.other.Add(1) // a socket is made by the program that listens on it
		return nil
	}
	r.damage(path, fmt.Errorf("%w: unknown kind %d", tree.ErrInvalid, e.Kind))
	return nil
}

func (r *restorer) dir(f *frame, e *tree.Entry, path string) error {
	if len(r.stack) > maxDepth {
		r.damage(path, fmt.Errorf("%w: directories nested more than %d deep", tree.ErrInvalid, maxDepth))
		return nil
	}
	rel := relPath(f.rel, e.Name)
	if err := f.dir.Mkdir(e.Name, 0o700); err != nil {
		if r.refused(path, err) {
			return nil
		}
		return fmt.Errorf("restore %q: %w", rel, err)
	}
	r.dirs.Add(1)
	sub, err := f.dir.OpenRoot(e.Name)
	if err != nil {
		return fmt.Errorf("restore %q: %w", rel, err)
	}
	child := &frame{name: e.Name, dir: sub, rel: rel}
	var bad []rejected
	t, err := r.src.Tree(r.ctx, e.Subtree)
	if err != nil {
		if stop := r.stopped(); stop != nil {
			sub.Close()
			return stop
		}
		r.damage(path, fmt.Errorf("read tree %x: %w", e.Subtree[:8], err))
	} else {
		child.entries, bad = accept(t)
	}
	r.push(child)
	err = r.walk(child, bad)
	if err == nil {
		err = r.dirMeta(child, e, path)
	}
	r.pop()
	return err
}

// dirMeta sets a directory's metadata once its entries exist (creating them
// changed its mtime). A mode that would keep this process out (no owner
// rwx) waits until the end, so that later hardlinks can still reach inside.
func (r *restorer) dirMeta(f *frame, e *tree.Entry, path string) error {
	fd, err := f.fd()
	if err != nil {
		return fmt.Errorf("restore %q: %w", f.rel, err)
	}
	mode := e.Mode & tree.MaxMode
	restrictive := mode&0o700 != 0o700
	if err := r.fdMeta(fd, e, path, !restrictive); err != nil {
		return fmt.Errorf("restore %q: %w", f.rel, err)
	}
	if restrictive {
		r.deferred = append(r.deferred, deferredChmod{f.rel, mode})
	}
	return nil
}

// chmodDeferred applies the restrictive directory modes, deepest first (the
// order they were recorded in), so that each directory is still reachable
// when its turn comes.
func (r *restorer) chmodDeferred() error {
	for _, d := range r.deferred {
		h, err := r.root.OpenFile(d.rel, os.O_RDONLY|unix.O_DIRECTORY, 0)
		if err == nil {
			err = unix.Fchmod(int(h.Fd()), d.mode)
			h.Close()
		}
		if err != nil && !r.metaRefused(err) {
			return fmt.Errorf("restore %q: chmod: %w", d.rel, err)
		}
	}
	return nil
}

// fdMeta sets owner, xattrs, mode and times on an open file or directory,
// in that order: chown clears setuid and file capabilities, and a mode
// without write permission would keep a non-root restorer from setting
// xattrs. Xattrs that cannot be set are damage; anything else is an error.
func (r *restorer) fdMeta(fd int, e *tree.Entry, path string, chmod bool) error {
	if r.opt.Owners {
		if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil && !r.metaRefused(err) {
			return fmt.Errorf("chown: %w", err)
		}
	}
	for _, x := range e.Xattrs {
		if err := unix.Fsetxattr(fd, x.Name, x.Value, 0); err != nil {
			r.damage(path, fmt.Errorf("set xattr %q: %w", x.Name, err))
			break
		}
	}
	if chmod {
		if err := unix.Fchmod(fd, e.Mode&tree.MaxMode); err != nil && !r.metaRefused(err) {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	ts, ok := r.mtime(e, path)
	if !ok {
		return nil
	}
	if err := futimens(fd, ts); err != nil && !r.metaRefused(err) {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// mtime returns the entry's mtime as atime and mtime for utimensat.
func (r *restorer) mtime(e *tree.Entry, path string) ([]unix.Timespec, bool) {
	nsec := int64(e.MtimeNsec)
	if nsec >= 1e9 {
		r.damage(path, fmt.Errorf("%w: mtime nanoseconds %d", tree.ErrInvalid, nsec))
		return nil, false
	}
	ts, err := timespec(e.MtimeSec, nsec)
	if err != nil {
		r.damage(path, fmt.Errorf("mtime %d: %w", e.MtimeSec, err))
		return nil, false
	}
	return []unix.Timespec{ts, ts}, true
}

func (r *restorer) symlink(f *frame, e *tree.Entry, path string) error {
	if e.Target == "" || len(e.Target) > tree.MaxTargetLen || strings.IndexByte(e.Target, 0) >= 0 {
		r.damage(path, fmt.Errorf("%w: symlink target %q", tree.ErrInvalid, e.Target))
		return nil
	}
	rel := relPath(f.rel, e.Name)
	if err := f.dir.Symlink(e.Target, e.Name); err != nil {
		if r.refused(path, err) {
			return nil
		}
		return fmt.Errorf("restore %q: %w", rel, err)
	}
	r.symlinks.Add(1)
	if r.opt.Owners {
		if err := f.dir.Lchown(e.Name, int(e.UID), int(e.GID)); err != nil && !r.metaRefused(err) {
			return fmt.Errorf("restore %q: %w", rel, err)
		}
	}
	return r.atMeta(f, e, path, false)
}

// node makes a fifo or device with mknodat in the directory f.
func (r *restorer) node(f *frame, e *tree.Entry, path string) error {
	rel := relPath(f.rel, e.Name)
	fd, err := f.fd()
	if err != nil {
		return fmt.Errorf("restore %q: %w", rel, err)
	}
	mode, dev := uint32(unix.S_IFIFO), uint64(0)
	switch e.Kind {
	case tree.CharDev:
		mode, dev = unix.S_IFCHR, unix.Mkdev(e.Major, e.Minor)
	case tree.BlockDev:
		mode, dev = unix.S_IFBLK, unix.Mkdev(e.Major, e.Minor)
	}
	err = unix.Mknodat(fd, e.Name, mode|0o600, int(dev))
	if err == unix.EPERM && e.Kind != tree.FIFO {
		r.damage(path, fmt.Errorf("create %v %d:%d (needs root): %w", e.Kind, e.Major, e.Minor, err))
		return nil
	}
	if err != nil {
		if r.refused(path, err) {
			return nil
		}
		return fmt.Errorf("restore %q: mknod: %w", rel, err)
	}
	r.other.Add(1)
	if r.opt.Owners {
		if err := f.dir.Lchown(e.Name, int(e.UID), int(e.GID)); err != nil && !r.metaRefused(err) {
			return fmt.Errorf("restore %q: %w", rel, err)
		}
	}
	return r.atMeta(f, e, path, true)
}

// atMeta sets xattrs, mode and times of something that cannot be opened
// without side effects (a symlink, fifo or device), by name in f, never
// following a symlink.
func (r *restorer) atMeta(f *frame, e *tree.Entry, path string, chmod bool) error {
	rel := relPath(f.rel, e.Name)
	fd, err := f.fd()
	if err != nil {
		return fmt.Errorf("restore %q: %w", rel, err)
	}
	for _, x := range e.Xattrs {
		if err := setxattrat(fd, e.Name, x.Name, x.Value); err != nil {
			r.damage(path, fmt.Errorf("set xattr %q: %w", x.Name, err))
			break
		}
	}
	if chmod {
		mode := e.Mode & tree.MaxMode
		err := unix.Fchmodat(fd, e.Name, mode, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
			// No fchmodat2 (Linux < 6.6). The node was just made by
			// mknodat, so it is not a symlink unless someone else writes
			// to the target while we do.
			err = unix.Fchmodat(fd, e.Name, mode, 0)
		}
		if err != nil && !r.metaRefused(err) {
			return fmt.Errorf("restore %q: chmod: %w", rel, err)
		}
	}
	if ts, ok := r.mtime(e, path); ok {
		if err := unix.UtimesNanoAt(fd, e.Name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil && !r.metaRefused(err) {
			return fmt.Errorf("restore %q: set times: %w", rel, err)
		}
	}
	return nil
}

// hardlink links e to the regular file its target path names. The target
// must be a file entry earlier in depth-first name order. If it lies outside
// what this run restores (a subpath restore), the first link to it becomes a
// copy of its content and later ones link to that copy.
func (r *restorer) hardlink(f *frame, e *tree.Entry, path string) error {
	comps, err := tree.SplitLinkPath(e.Target)
	if err != nil {
		r.damage(path, err)
		return nil
	}
	if slices.Compare(comps, append(slices.Clip(r.cur), e.Name)) >= 0 {
		r.damage(path, fmt.Errorf("%w: hardlink target %q is not an earlier entry", tree.ErrInvalid, e.Target))
		return nil
	}
	target, err := r.lookup(comps)
	if err != nil {
		if stop := r.stopped(); stop != nil {
			return stop
		}
		r.damage(path, fmt.Errorf("resolve hardlink target %q: %w", e.Target, err))
		return nil
	}
	if target == nil || target.Kind != tree.File {
		r.damage(path, fmt.Errorf("%w: hardlink target %q is not a file in the snapshot", tree.ErrInvalid, e.Target))
		return nil
	}
	newRel := relPath(f.rel, e.Name)
	if !r.single && hasPrefix(comps, r.base) {
		oldRel := strings.Join(comps[len(r.base):], "/")
		if fi, err := r.root.Lstat(oldRel); err != nil || !fi.Mode().IsRegular() {
			r.damage(path, fmt.Errorf("%w: hardlink target %q was not restored", tree.ErrInvalid, e.Target))
			return nil
		}
		return r.link(oldRel, newRel, path)
	}
	if oldRel, ok := r.copies[e.Target]; ok {
		return r.link(oldRel, newRel, path)
	}
	content := *target
	content.Name = e.Name
	if err := r.file(f, e.Name, &content, path); err != nil {
		return err
	}
	r.copies[e.Target] = newRel
	return nil
}

func (r *restorer) link(oldRel, newRel, path string) error {
	err := r.root.Link(oldRel, newRel)
	if err != nil && r.refused(path, err) {
		return nil
	}
	if errors.Is(err, unix.EMLINK) {
		r.damage(path, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore %q: %w", newRel, err)
	}
	r.files.Add(1)
	return nil
}

func hasPrefix(s, prefix []string) bool {
	return len(s) >= len(prefix) && slices.Equal(s[:len(prefix)], prefix)
}

// lookup finds the entry at a snapshot path, starting from the deepest
// directory it shares with the current one. It returns nil when there is no
// such entry.
func (r *restorer) lookup(comps []string) (*tree.Entry, error) {
	dirs := comps[:len(comps)-1]
	j := 0
	for j < len(dirs) && j < len(r.cur) && dirs[j] == r.cur[j] {
		j++
	}
	entries := r.stack[j].entries
	for _, c := range dirs[j:] {
		e := find(entries, c)
		if e == nil || e.Kind != tree.Dir {
			return nil, nil
		}
		var err error
		if entries, err = r.cachedTree(e.Subtree); err != nil {
			return nil, err
		}
	}
	return find(entries, comps[len(comps)-1]), nil
}

func (r *restorer) cachedTree(id tree.ID) ([]tree.Entry, error) {
	if r.cache.ok && r.cache.id == id {
		return r.cache.entries, nil
	}
	t, err := r.src.Tree(r.ctx, id)
	if err != nil {
		return nil, err
	}
	entries, _ := accept(t)
	r.cache.id, r.cache.entries, r.cache.ok = id, entries, true
	return entries, nil
}
