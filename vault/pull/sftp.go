package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"drawbridge/vault/config"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

func init() { Register(config.KindSFTP, pullSFTP) }

// sftpFiles is how many files an SFTP pull reads at once; each read keeps
// several requests in flight on its own.
const sftpFiles = 4

// maxDepth caps how deep a walk goes below a root: a server can present a
// directory that contains itself forever. Deeper directories are left out
// with a warning. A variable so that tests can lower it.
var maxDepth = 1024

// File type bits of the SFTP permissions field, as POSIX stat has them.
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
)

// pullSFTP walks the configured paths over the source's SFTP subsystem and
// chunks files on the vault. SFTP gives mode, owner ids, size and mtime to
// the second: no xattrs, no inode or ctime, so nothing here can tell that a
// file is unchanged and the file cache is not used; unchanged content still
// costs no new storage.
func pullSFTP(ctx context.Context, c *ssh.Client, src *config.Source, w *store.Writer, log *slog.Logger) (tree.ID, []string, error) {
	var none tree.ID
	sess, err := c.NewSession()
	if err != nil {
		return none, nil, fmt.Errorf("open an SSH session: %w", err)
	}
	defer sess.Close()
	stdin, err := sess.StdinPipe()
	if err != nil {
		return none, nil, err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return none, nil, err
	}
	stderr := &cappedBuffer{max: maxStderr}
	sess.Stderr = stderr
	if err := sess.RequestSubsystem("sftp"); err != nil {
		return none, nil, fmt.Errorf("start the SFTP subsystem: %w%s", err, stderr.explain())
	}
	g := &sftpGuard{r: stdout}
	cl, err := sftp.NewClientPipe(g, stdin, sftp.UseConcurrentReads(true))
	if err != nil {
		if gerr := g.failure(); gerr != nil {
			err = gerr
		}
		return none, nil, fmt.Errorf("start SFTP: %w%s", err, stderr.explain())
	}
	defer func() {
		// The client's Close waits for its reader, which a server that
		// holds the channel open could keep forever: close the channel,
		// and let the connection's close, right after the pull, end the
		// rest.
		sess.Close()
		go cl.Close()
	}()
	k := &sftpWalk{ctx: ctx, cl: cl, g: g, w: w, log: log, sem: make(chan struct{}, sftpFiles), base: resumeBase(ctx), rs: newResumable(w)}
	return k.run(src.Paths)
}

// sftpWalk is one SFTP pull's walk: directories are listed one at a time,
// in name order, depth first; file contents are read in the background,
// a few at a time.
type sftpWalk struct {
	ctx context.Context
	cl  *sftp.Client
	g   *sftpGuard
	w   *store.Writer
	log *slog.Logger
	sem chan struct{}
	// base is the source's latest snapshot id: what resuming a file
	// stored half-way is keyed on.
	base string
	rs   *resumable
}

// fatal returns the error that ends the pull when err is not a refusal of
// one entry by the server (which is warned about and skipped), or nil.
func (k *sftpWalk) fatal(err error) error {
	if gerr := k.g.failure(); gerr != nil {
		return gerr
	}
	if cerr := k.ctx.Err(); cerr != nil {
		return cerr
	}
	var se *sftp.StatusError
	if errors.As(err, &se) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return nil
	}
	return err
}

// topPaths sorts the roots and drops those inside another root.
func topPaths(paths []string) []string {
	abs := make([]string, 0, len(paths))
	for _, p := range paths {
		abs = append(abs, path.Clean("/"+p))
	}
	sort.Strings(abs)
	var top []string
	for _, a := range abs {
		if n := len(top); n > 0 {
			last := top[n-1]
			if a == last || last == "/" || strings.HasPrefix(a, last+"/") {
				continue
			}
		}
		top = append(top, a)
	}
	return top
}

// vdir is a directory on the way from / to a root: only the named children
// are included, unless it is a root itself (full).
type vdir struct {
	path     string
	full     bool
	children map[string]*vdir
}

func (k *sftpWalk) run(paths []string) (tree.ID, []string, error) {
	top := topPaths(paths)
	if len(top) == 0 {
		return tree.ID{}, nil, errors.New("no paths to pull")
	}
	root := &vdir{path: "/", children: map[string]*vdir{}}
	for _, a := range top {
		node := root
		if a != "/" {
			for _, part := range strings.Split(strings.TrimPrefix(a, "/"), "/") {
				child, ok := node.children[part]
				if !ok {
					child = &vdir{path: path.Join(node.path, part), children: map[string]*vdir{}}
					node.children[part] = child
				}
				node = child
			}
		}
		node.full = true
	}
	t, err := k.virtual(root)
	if err != nil {
		return tree.ID{}, nil, err
	}
	id, err := k.w.Tree(t)
	return id, top, err
}

// virtual builds the tree of a directory on the way to the roots.
func (k *sftpWalk) virtual(v *vdir) (*tree.Tree, error) {
	if v.full {
		return k.dirTree(v.path, 0)
	}
	names := make([]string, 0, len(v.children))
	for n := range v.children {
		names = append(names, n)
	}
	sort.Strings(names)
	t := &tree.Tree{}
	for _, n := range names {
		c := v.children[n]
		fi, err := k.cl.Lstat(c.path)
		if err != nil {
			if gerr := k.g.failure(); gerr != nil {
				err = gerr
			}
			return nil, fmt.Errorf("pull %s: %w", c.path, err)
		}
		e, ok := k.entry(c.path, n, fi)
		if !ok {
			if c.full {
				continue
			}
			return nil, fmt.Errorf("pull %s: cannot read it over SFTP", c.path)
		}
		switch {
		case c.full && e.Kind == tree.File:
			if err := k.file(c.path, &e); err != nil {
				return nil, err
			}
			if e.Kind == 0 {
				continue
			}
		case c.full:
			if ok, err := k.complete(c.path, &e, 0); err != nil {
				return nil, err
			} else if !ok {
				continue
			}
		case e.Kind != tree.Dir:
			return nil, fmt.Errorf("pull %s: not a directory on the source", c.path)
		default:
			sub, err := k.virtual(c)
			if err != nil {
				return nil, err
			}
			if e.Subtree, err = k.w.Tree(sub); err != nil {
				return nil, err
			}
			k.w.Progress().Dirs.Add(1)
		}
		t.Entries = append(t.Entries, e)
	}
	return t, nil
}

// entry turns what the server said about p into an entry without content.
// ok is false when the entry is left out (with a warning).
func (k *sftpWalk) entry(p, name string, fi os.FileInfo) (tree.Entry, bool) {
	st, isStat := fi.Sys().(*sftp.FileStat)
	if !isStat || st == nil {
		k.w.Warn(p, errors.New("the server gave no attributes"))
		return tree.Entry{}, false
	}
	e := tree.Entry{Name: name, Mode: st.Mode & tree.MaxMode, UID: st.UID, GID: st.GID, MtimeSec: int64(st.Mtime)}
	switch st.Mode & sIFMT {
	case sIFDIR:
		e.Kind = tree.Dir
	case sIFREG:
		e.Kind = tree.File
		e.Size = st.Size
	case sIFLNK:
		e.Kind = tree.Symlink
	case sIFIFO:
		e.Kind = tree.FIFO
	case sIFSOCK:
		e.Kind = tree.Socket
	case sIFCHR, sIFBLK:
		k.w.Warn(p, errors.New("a device: SFTP does not give device numbers"))
		return e, false
	default:
		k.w.Warn(p, fmt.Errorf("unknown file type %#o", st.Mode&sIFMT))
		return e, false
	}
	return e, true
}

// complete fills in a directory's subtree or a symlink's target; ok is
// false when the entry is left out.
func (k *sftpWalk) complete(p string, e *tree.Entry, depth int) (bool, error) {
	switch e.Kind {
	case tree.Dir:
		if depth >= maxDepth {
			k.w.Warn(p, fmt.Errorf("more than %d directories deep", maxDepth))
			return false, nil
		}
		sub, err := k.dirTree(p, depth)
		if err != nil {
			return false, err
		}
		if e.Subtree, err = k.w.Tree(sub); err != nil {
			return false, err
		}
		k.w.Progress().Dirs.Add(1)
	case tree.Symlink:
		target, err := k.cl.ReadLink(p)
		if err != nil {
			if ferr := k.fatal(err); ferr != nil {
				return false, fmt.Errorf("read link %s: %w", p, ferr)
			}
			k.w.Warn(p, err)
			return false, nil
		}
		if target == "" || len(target) > tree.MaxTargetLen || strings.IndexByte(target, 0) >= 0 {
			return false, fmt.Errorf("%w: symlink %s has a target of %d bytes or with NUL", ErrHostileSource, p, len(target))
		}
		e.Target = target
		k.w.Progress().Files.Add(1)
	default:
		k.w.Progress().Files.Add(1)
	}
	return true, nil
}

// dirTree lists the directory p and builds its tree. Subdirectories are
// walked in name order before the tree is returned; file contents are read
// by up to sftpFiles goroutines, all finished before it returns.
func (k *sftpWalk) dirTree(p string, depth int) (*tree.Tree, error) {
	k.g.startListing()
	fis, err := k.cl.ReadDirContext(k.ctx, p)
	k.g.endListing()
	if err != nil {
		if ferr := k.fatal(err); ferr != nil {
			return nil, fmt.Errorf("list %s: %w", p, ferr)
		}
		k.w.Warn(p, err)
		return &tree.Tree{}, nil
	}
	if len(fis) > maxListEntries {
		return nil, fmt.Errorf("%w: %s holds more than %d entries", ErrHostileSource, p, maxListEntries)
	}
	sort.Slice(fis, func(i, j int) bool { return fis[i].Name() < fis[j].Name() })
	for i, fi := range fis {
		if err := tree.ValidName(fi.Name()); err != nil {
			return nil, fmt.Errorf("%w: %s holds %v", ErrHostileSource, p, err)
		}
		if i > 0 && fis[i-1].Name() == fi.Name() {
			return nil, fmt.Errorf("%w: %s lists the name %q twice", ErrHostileSource, p, fi.Name())
		}
	}

	// Full capacity up front: file goroutines hold &t.Entries[i], so the
	// slice must never be reallocated.
	t := &tree.Tree{Entries: make([]tree.Entry, 0, len(fis))}
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	fail := func() error {
		wg.Wait()
		return firstErr
	}
	for _, fi := range fis {
		if err := k.ctx.Err(); err != nil {
			wg.Wait()
			return nil, err
		}
		errMu.Lock()
		ferr := firstErr
		errMu.Unlock()
		if ferr != nil {
			break
		}
		cp := path.Join(p, fi.Name())
		e, ok := k.entry(cp, fi.Name(), fi)
		if !ok {
			continue
		}
		if e.Kind != tree.File {
			ok, err := k.complete(cp, &e, depth+1)
			if err != nil {
				wg.Wait()
				return nil, err
			}
			if ok {
				t.Entries = append(t.Entries, e)
			}
			continue
		}
		t.Entries = append(t.Entries, e)
		ep := &t.Entries[len(t.Entries)-1]
		select {
		case k.sem <- struct{}{}:
		case <-k.ctx.Done():
			wg.Wait()
			return nil, k.ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-k.sem }()
			if err := k.file(cp, ep); err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}()
	}
	if err := fail(); err != nil {
		return nil, err
	}
	t.DropUnset()
	return t, nil
}

// file stores the content of the regular file p into e, reading at most
// the size its listing gave. A file the server will not open or read is
// warned about and dropped (e.Kind = 0); only store and connection errors
// fail the pull.
func (k *sftpWalk) file(p string, e *tree.Entry) error {
	k.w.Progress().Files.Add(1)
	f, err := k.cl.Open(p)
	if err != nil {
		if ferr := k.fatal(err); ferr != nil {
			return fmt.Errorf("open %s: %w", p, ferr)
		}
		k.w.Warn(p, err)
		e.Kind = 0
		return nil
	}
	defer f.Close()
	size := int64(math.MaxInt64)
	if e.Size < math.MaxInt64 {
		size = int64(e.Size)
	}
	// What a pull cut off stored of it is not read again (see resume.go).
	have, from, err := resumePoint(k.w, k.base, p, e.Size, e.MtimeSec)
	if err != nil {
		return fmt.Errorf("resume %s: %w", p, err)
	}
	if from > 0 {
		k.log.Info("resuming a file", "path", p, "offset", from, "size", e.Size)
		k.w.Progress().Bytes.Add(int64(from))
	}
	r := &sourceReader{r: io.NewSectionReader(f, int64(from), size-int64(from))}
	if size-int64(from) > sftpStreamFrom {
		if _, err := f.Seek(int64(from), io.SeekStart); err != nil {
			return fmt.Errorf("seek %s: %w", p, err)
		}
		stream := streamSFTP(f, size-int64(from))
		defer stream.stop()
		r.r = stream
	}
	err = k.rs.storeFrom(r, e, k.base, p, e.MtimeSec, have, from)
	if err == nil {
		return nil
	}
	if rerr := r.failure(); rerr != nil {
		if ferr := k.fatal(rerr); ferr != nil {
			return fmt.Errorf("read %s: %w", p, ferr)
		}
		k.w.Warn(p, rerr)
		e.Kind, e.Size, e.Layout, e.Chunks, e.Lists = 0, 0, 0, nil, nil
		return nil
	}
	return err
}

// sftpStream reads the first size bytes of a file with File.WriteTo, which
// keeps up to 64 requests in flight from the first byte to the last.
// Reads of the chunker's buffer size (File.Read, File.ReadAt) fill their
// requests and wait for all of them before the next read asks for more, so
// the link idles once per read.
type sftpStream struct {
	*io.PipeReader
	done chan struct{}
}

// sftpStreamFrom is the size from which a file is read with sftpStream.
// WriteTo asks for the file's size first, a round trip that a small file,
// read in one go anyway, is better without.
const sftpStreamFrom = 1 << 20

// errSFTPLimit stops WriteTo at the size the listing gave.
var errSFTPLimit = errors.New("sftp: listed size reached")

func streamSFTP(f *sftp.File, size int64) *sftpStream {
	pr, pw := io.Pipe()
	s := &sftpStream{PipeReader: pr, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_, err := f.WriteTo(&limitWriter{w: pw, n: size})
		if errors.Is(err, errSFTPLimit) {
			err = nil
		}
		pw.CloseWithError(err) // nil: the reader sees io.EOF
	}()
	return s
}

// stop ends the reading, if the chunker did not read to the end, and waits
// for it: the file may be closed after.
func (s *sftpStream) stop() {
	s.PipeReader.CloseWithError(errSFTPLimit)
	<-s.done
}

// limitWriter passes on the first n bytes written to it, then fails with
// errSFTPLimit.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= l.n {
		n, err := l.w.Write(p)
		l.n -= int64(n)
		return n, err
	}
	if l.n == 0 {
		return 0, errSFTPLimit
	}
	n, err := l.w.Write(p[:l.n])
	l.n -= int64(n)
	if err == nil {
		err = errSFTPLimit
	}
	return n, err
}

// sourceReader remembers the error of the reader it wraps, which tells a
// failure to read the source from a failure to store.
type sourceReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
	return n, err
}

func (s *sourceReader) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
