// Package export writes the plain-file export of DESIGN.md §7: a snapshot's
// files as plain files under DIR/drawbridge-export/files, a MANIFEST of
// their SHA-256 sums signed by the vault's identity key, the offline
// verifier for other computers, and a README.txt (docs/export-format.md).
//
// Invariants: every path comes from tree data and is written through an
// os.Root opened on files/, created exclusively, so nothing lands outside
// it or through a symlink the snapshot placed. MANIFEST.sig and then
// MANIFEST are written last, after the files are synced, through temp file,
// fsync and rename: an export cut short has no MANIFEST and the verifier
// calls it incomplete. An entry the target cannot hold (a name FAT refuses,
// a symlink on FAT, a device node) is listed in the MANIFEST as not exported,
// with why, and the export goes on; running out of space ends it.
//
// The writer is its own rather than vault/restore's, because a restore stops
// at the first error writing to its target, and an export to a USB drive's
// filesystem must instead skip what that filesystem cannot hold.
package export

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"drawbridge/vault/export/manifest"
	"drawbridge/vault/readback"
	"drawbridge/vault/seal"
	"drawbridge/vault/tree"
)

// Source supplies a snapshot's blobs, decrypted and verified
// (store.Reader is one).
type Source interface {
	Tree(ctx context.Context, id tree.ID) (*tree.Tree, error)
	List(ctx context.Context, id tree.ID) ([]tree.ChunkRef, error)
	Chunk(ctx context.Context, id tree.ID, dst []byte) ([]byte, error)
}

// Snapshot names what is exported, for the MANIFEST header.
type Snapshot struct {
	VaultID string
	ID      string
	Source  string
	Time    time.Time
}

// Options tune an export.
type Options struct {
	Identity  *seal.Identity // signs the MANIFEST
	Verifiers string         // directory holding drawbridge-verify builds; "" for none
	Owners    bool           // chown files to the snapshot's owners (as root), where the target allows
	Now       func() time.Time
	Progress  func(n int64) // file bytes written, from any goroutine; may be nil
	Workers   int           // 0 means GOMAXPROCS
}

// Report says what an export did.
type Report struct {
	Dir            string // the drawbridge-export directory
	Entries        int64
	Files          int64 // files and hardlinks written
	Dirs           int64
	Symlinks       int64
	Bytes          int64
	NotExported    []Problem // entries listed in the MANIFEST without being on the drive, with why
	Damaged        []Problem // snapshot damage: trees that could not be read
	Verifiers      []string  // verifier builds copied
	ManifestSHA256 string
	Seconds        float64
	// ReadBack and ReadBackBytes count the files read back from the
	// target identical to what was written, before the MANIFEST was
	// signed; ReadWhileWriting is how many bytes of them were read while
	// later files were being written. Mismatches lists those that were
	// not identical (then Export fails with ErrReadBack).
	ReadBack, ReadBackBytes, ReadWhileWriting int64
	Mismatches                                []readback.Mismatch
}

// Problem is one snapshot path and what went wrong with it.
type Problem struct {
	Path   string
	Reason string
}

var (
	// ErrTargetNotEmpty: the target holds something other than lost+found.
	ErrTargetNotEmpty = errors.New("export target is not empty")
	// ErrNoSpace: the target filled up; the export has no MANIFEST.
	ErrNoSpace = errors.New("the export target is full")
	// ErrReadBack: files read back from the target differ from what was
	// written; the export has no MANIFEST.
	ErrReadBack = errors.New("files read back from the export target differ from what was written")
)

// VerifierNames are the verifier builds an export carries, as `make build`
// names them in bin/verify.
var VerifierNames = []string{
	"drawbridge-verify-linux-amd64",
	"drawbridge-verify-linux-arm64",
	"drawbridge-verify-windows-amd64.exe",
	"drawbridge-verify-darwin-amd64",
	"drawbridge-verify-darwin-arm64",
}

// Export writes the subtree at subpath of the snapshot tree root into
// target/drawbridge-export. target must be missing, empty, or hold only
// lost+found.
func Export(ctx context.Context, src Source, root tree.ID, subpath string, target string, snap Snapshot, o Options) (*Report, error) {
	if o.Identity == nil {
		return nil, errors.New("export: no identity key to sign with")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	start := time.Now()
	start0, prefix, err := walkTo(ctx, src, root, subpath)
	if err != nil {
		return nil, err
	}
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	dir := filepath.Join(target, manifest.Dir)
	if err := os.MkdirAll(filepath.Join(dir, manifest.FilesDir), 0o755); err != nil {
		return nil, fmt.Errorf("create export directory: %w", err)
	}
	rep := &Report{Dir: dir}
	if err := writeFile(filepath.Join(dir, manifest.ReadmeName), []byte(readme(seal.Fingerprint(o.Identity.Public()))), 0o644); err != nil {
		return nil, err
	}
	if rep.Verifiers, err = copyVerifiers(o.Verifiers, filepath.Join(dir, manifest.VerifyDir)); err != nil {
		return nil, err
	}
	files, err := os.OpenRoot(filepath.Join(dir, manifest.FilesDir))
	if err != nil {
		return nil, fmt.Errorf("open export directory: %w", err)
	}
	defer files.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The files are flushed as they are written and read back as soon
	// as a flush has put them on the target: nothing is signed that the
	// target did not give back.
	check, err := readback.Start(ctx, cancel, files.Name(), readback.Options{Gone: readback.DriveError, Now: o.Now})
	if err != nil {
		return nil, fmt.Errorf("open export directory: %w", err)
	}
	defer check.Close()
	x := &exporter{ctx: ctx, cancel: cancel, src: src, root: root, files: files, o: o, rep: rep,
		jobs: make(chan job, o.Workers), check: check}
	for range o.Workers {
		x.wg.Go(x.worker)
	}
	if start0.Kind == tree.Dir {
		err = x.walk(start0.Subtree, prefix, "", "")
	} else {
		err = x.entry(&start0, prefix[:max(strings.LastIndexByte(prefix, '/'), 0)], "", "")
	}
	close(x.jobs)
	x.wg.Wait()
	if err == nil {
		err = x.failed()
	}
	if err == nil {
		err = check.StopFlushing()
	}
	rep.ReadWhileWriting = check.ReadBytes()
	if err != nil {
		return rep, err
	}
	found, err := check.Finish(o.Workers)
	rep.ReadBack, rep.ReadBackBytes, rep.Mismatches = found.Files, found.Bytes, found.Mismatches
	if err != nil {
		return rep, fmt.Errorf("read the exported files back: %w", err)
	}
	if len(found.Mismatches) > 0 {
		return rep, fmt.Errorf("%w: %d files, the first %q: %v", ErrReadBack, len(found.Mismatches), found.Mismatches[0].Path, found.Mismatches[0].Err)
	}
	x.dirMeta()
	if err := x.recheck(); err != nil {
		return rep, err
	}

	m := &manifest.Manifest{Header: manifest.Header{
		VaultID: snap.VaultID, Identity: seal.Fingerprint(o.Identity.Public()), PublicKey: o.Identity.Public(),
		Snapshot: snap.ID, Source: snap.Source, Path: "/" + strings.TrimPrefix(prefix, "/"), SnapshotTime: snap.Time,
		ExportTime: o.Now().UTC(),
	}}
	m.Entries = make([]manifest.Entry, len(x.entries))
	for i, e := range x.entries {
		m.Entries[i] = *e
		switch {
		case e.NotExported != "":
			rep.NotExported = append(rep.NotExported, Problem{e.Path, e.NotExported})
		case e.Type == manifest.TypeFile || e.Type == manifest.TypeHardlink:
			rep.Files++
			m.Bytes += e.Size
		case e.Type == manifest.TypeDir:
			rep.Dirs++
		case e.Type == manifest.TypeSymlink:
			rep.Symlinks++
		}
	}
	rep.Entries = int64(len(m.Entries))
	rep.Bytes = m.Bytes
	sort.Slice(rep.Damaged, func(i, j int) bool { return rep.Damaged[i].Path < rep.Damaged[j].Path })

	// Everything before the MANIFEST must be on the drive before it is.
	if err := readback.Syncfs(filepath.Join(dir, manifest.FilesDir)); err != nil {
		return rep, fmt.Errorf("sync the exported files: %w", err)
	}
	mb := m.Marshal()
	sig := o.Identity.Sign(manifest.Domain, mb)
	if err := writeFile(filepath.Join(dir, manifest.SigName), []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), 0o644); err != nil {
		return rep, err
	}
	if err := writeFile(filepath.Join(dir, manifest.Name), mb, 0o644); err != nil {
		return rep, err
	}
	h := seal.NewSHA256()
	h.Write(mb)
	rep.ManifestSHA256 = hex.EncodeToString(h.Sum(nil))
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// checkTarget accepts a missing target, or an empty directory, or one that
// holds only lost+found (a freshly made filesystem).
func checkTarget(target string) error {
	fi, err := os.Stat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("export target: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: %w", target, ErrTargetNotEmpty)
	}
	names, err := readNames(target)
	if err != nil {
		return fmt.Errorf("export target: %w", err)
	}
	for _, n := range names {
		if n != "lost+found" {
			return fmt.Errorf("%s: %w (it holds %q)", target, ErrTargetNotEmpty, n)
		}
	}
	return nil
}

func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(16)
	if err == io.EOF {
		err = nil
	}
	return names, err
}

// walkTo finds the entry at subpath; the root is a directory entry. It
// returns the entry and its slash path without a leading slash.
func walkTo(ctx context.Context, src Source, root tree.ID, subpath string) (tree.Entry, string, error) {
	cur := tree.Entry{Kind: tree.Dir, Subtree: root}
	var comps []string
	for _, part := range strings.Split(subpath, "/") {
		if part == "" || part == "." {
			continue
		}
		if err := tree.ValidName(part); err != nil {
			return cur, "", fmt.Errorf("export path %q: %w", subpath, err)
		}
		where := strings.Join(append(comps, part), "/")
		if cur.Kind != tree.Dir {
			return cur, "", fmt.Errorf("export %q: %q is not a directory", subpath, strings.Join(comps, "/"))
		}
		t, err := src.Tree(ctx, cur.Subtree)
		if err != nil {
			return cur, "", fmt.Errorf("read the tree of %q: %w", where, err)
		}
		i := sort.Search(len(t.Entries), func(i int) bool { return t.Entries[i].Name >= part })
		if i == len(t.Entries) || t.Entries[i].Name != part {
			return cur, "", fmt.Errorf("export %q: %w", where, fs.ErrNotExist)
		}
		cur = t.Entries[i]
		comps = append(comps, part)
	}
	return cur, strings.Join(comps, "/"), nil
}

// exporter is one run. The walking goroutine owns entries (it appends;
// workers only fill in the entry a job points to) and dirs.
type exporter struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	src    Source
	root   tree.ID
	files  *os.Root
	o      Options
	rep    *Report

	entries []*manifest.Entry
	dirs    []dirJob
	jobs    chan job
	wg      sync.WaitGroup
	written atomic.Int64
	check   *readback.Checker

	mu  sync.Mutex
	err error
}

type job struct {
	rel     string // path under files/
	content *tree.Entry
	me      *manifest.Entry
}

type dirJob struct {
	rel string
	e   tree.Entry
}

func (x *exporter) fail(err error) {
	x.mu.Lock()
	if x.err == nil {
		x.err = err
	}
	x.mu.Unlock()
	x.cancel(err)
}

func (x *exporter) failed() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err != nil {
		return x.err
	}
	if x.ctx.Err() != nil {
		return context.Cause(x.ctx)
	}
	return nil
}

func (x *exporter) damage(path string, err error) {
	x.mu.Lock()
	x.rep.Damaged = append(x.rep.Damaged, Problem{path, err.Error()})
	x.mu.Unlock()
}

// walk exports the entries of tree id. snap is its snapshot path, rel its
// path under files/, and skip (when not "") why none of it can be written.
func (x *exporter) walk(id tree.ID, snap, rel, skip string) error {
	if strings.Count(rel, "/") > 2048 {
		x.damage(snap, errors.New("directories nested more than 2048 deep"))
		return nil
	}
	t, err := x.src.Tree(x.ctx, id)
	if err != nil {
		if x.ctx.Err() != nil {
			return context.Cause(x.ctx)
		}
		x.damage(snap, fmt.Errorf("read tree %x: %w", id[:8], err))
		return nil
	}
	for i := range t.Entries {
		if err := x.ctx.Err(); err != nil {
			return context.Cause(x.ctx)
		}
		if err := x.entry(&t.Entries[i], snap, rel, skip); err != nil {
			return err
		}
	}
	return nil
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

var types = map[tree.Kind]string{
	tree.Dir: manifest.TypeDir, tree.File: manifest.TypeFile, tree.Symlink: manifest.TypeSymlink,
	tree.Hardlink: manifest.TypeHardlink, tree.FIFO: manifest.TypeFIFO, tree.CharDev: manifest.TypeCharDev,
	tree.BlockDev: manifest.TypeBlockDev, tree.Socket: manifest.TypeSocket,
}

// entry exports e, which sits in the directory at snapshot path snapDir and
// export path relDir.
func (x *exporter) entry(e *tree.Entry, snapDir, relDir, skip string) error {
	snap := join(snapDir, e.Name)
	if err := tree.ValidName(e.Name); err != nil {
		x.damage(snap, err)
		return nil
	}
	typ, ok := types[e.Kind]
	if !ok {
		x.damage(snap, fmt.Errorf("%w: unknown kind %d", tree.ErrInvalid, e.Kind))
		return nil
	}
	rel := join(relDir, e.Name)
	me := &manifest.Entry{Type: typ, Mode: e.Mode & 0o7777, Size: -1, MtimeSec: e.MtimeSec,
		MtimeNsec: min(e.MtimeNsec, 999999999), Path: rel, NotExported: skip}
	x.entries = append(x.entries, me)
	switch e.Kind {
	case tree.Dir:
		if skip == "" {
			if err := x.files.Mkdir(rel, 0o700); err != nil {
				me.NotExported = reason(err)
				skip = "its directory was not exported"
			} else {
				x.dirs = append(x.dirs, dirJob{rel, *e})
			}
		}
		return x.walk(e.Subtree, snap, rel, skip)
	case tree.File:
		me.Size = int64(e.Size)
		if skip != "" {
			return nil
		}
		return x.queue(job{rel: rel, content: e, me: me})
	case tree.Symlink:
		me.Target = e.Target
		if skip != "" {
			return nil
		}
		if err := x.files.Symlink(e.Target, rel); err != nil {
			me.NotExported = reason(err)
		}
	case tree.Hardlink:
		me.Target = e.Target
		target, err := x.lookup(e.Target)
		if err != nil {
			if x.ctx.Err() != nil {
				return context.Cause(x.ctx)
			}
			me.NotExported = "hardlink target unreadable: " + err.Error()
			return nil
		}
		if target == nil || target.Kind != tree.File {
			me.NotExported = "hardlink target is not a file in the snapshot"
			return nil
		}
		me.Size = int64(target.Size)
		if skip != "" {
			return nil
		}
		c := *target
		c.Mode, c.MtimeSec, c.MtimeNsec = e.Mode, e.MtimeSec, e.MtimeNsec
		return x.queue(job{rel: rel, content: &c, me: me})
	case tree.CharDev, tree.BlockDev:
		me.Dev = fmt.Sprintf("%d:%d", e.Major, e.Minor)
	}
	return nil
}

func (x *exporter) queue(j job) error {
	select {
	case x.jobs <- j:
		return nil
	case <-x.ctx.Done():
		return context.Cause(x.ctx)
	}
}

// lookup finds the entry at a snapshot path (a hardlink's target); nil when
// there is none.
func (x *exporter) lookup(p string) (*tree.Entry, error) {
	comps, err := tree.SplitLinkPath(p)
	if err != nil {
		return nil, err
	}
	id := x.root
	for i, c := range comps {
		t, err := x.src.Tree(x.ctx, id)
		if err != nil {
			return nil, err
		}
		j := sort.Search(len(t.Entries), func(k int) bool { return t.Entries[k].Name >= c })
		if j == len(t.Entries) || t.Entries[j].Name != c {
			return nil, nil
		}
		if i == len(comps)-1 {
			return &t.Entries[j], nil
		}
		if t.Entries[j].Kind != tree.Dir {
			return nil, nil
		}
		id = t.Entries[j].Subtree
	}
	return nil, nil
}

// reason says in a person's words why the target refused an entry.
func reason(err error) string {
	switch {
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.EILSEQ):
		return "the drive's filesystem cannot hold this name (" + errText(err) + ")"
	case errors.Is(err, syscall.ENAMETOOLONG):
		return "the name is too long for the drive's filesystem"
	case errors.Is(err, fs.ErrExist):
		return "another entry already has this name on the drive (its filesystem does not tell upper and lower case apart)"
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.ENOSYS):
		return "the drive's filesystem cannot hold this kind of entry (" + errText(err) + ")"
	}
	return errText(err)
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Op + ": " + le.Err.Error()
	}
	return err.Error()
}

func (x *exporter) worker() {
	var buf []byte
	for j := range x.jobs {
		if x.ctx.Err() != nil {
			continue
		}
		var err error
		if buf, err = x.fill(j, buf); err != nil {
			x.fail(err)
		}
	}
}

// fill writes one file's content, hashing it on the way. Snapshot damage
// or a refusal by the target leaves the file out (and listed as not
// exported); a full drive ends the export.
func (x *exporter) fill(j job, buf []byte) ([]byte, error) {
	f, err := x.files.OpenFile(j.rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return buf, fmt.Errorf("export %q: %w", j.rel, ErrNoSpace)
		}
		j.me.NotExported = reason(err)
		return buf, nil
	}
	h, back := seal.NewSHA256(), readback.NewHash()
	var n uint64
	var bad error
	put := func(refs []tree.ChunkRef) error {
		for _, ref := range refs {
			p, err := x.src.Chunk(x.ctx, ref.ID, buf)
			if err != nil {
				if x.ctx.Err() != nil {
					return context.Cause(x.ctx)
				}
				bad = fmt.Errorf("chunk %x at offset %d: %w", ref.ID[:8], n, err)
				return nil
			}
			buf = p[:0]
			if uint64(len(p)) != ref.Length {
				bad = fmt.Errorf("chunk %x at offset %d has %d bytes, its entry says %d", ref.ID[:8], n, len(p), ref.Length)
				return nil
			}
			if _, err := f.Write(p); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					return fmt.Errorf("export %q: %w", j.rel, ErrNoSpace)
				}
				return fmt.Errorf("export %q: %w", j.rel, err)
			}
			h.Write(p)
			back.Write(p)
			n += ref.Length
			x.check.Wrote(int64(ref.Length))
			if x.o.Progress != nil {
				x.o.Progress(int64(ref.Length))
			}
		}
		return nil
	}
	e := j.content
	switch e.Layout {
	case tree.LayoutInline:
		err = put(e.Chunks)
	case tree.LayoutIndirect:
		for _, id := range e.Lists {
			refs, lerr := x.src.List(x.ctx, id)
			if lerr != nil {
				if x.ctx.Err() != nil {
					err = context.Cause(x.ctx)
				} else {
					bad = fmt.Errorf("chunk list %x: %w", id[:8], lerr)
				}
				break
			}
			if err = put(refs); err != nil || bad != nil {
				break
			}
		}
	default:
		bad = fmt.Errorf("%w: file layout %d", tree.ErrInvalid, e.Layout)
	}
	if bad == nil && err == nil && n != e.Size {
		bad = fmt.Errorf("chunk lengths add up to %d, size is %d", n, e.Size)
	}
	cerr := f.Close()
	if err == nil && bad == nil && cerr != nil {
		err = fmt.Errorf("export %q: %w", j.rel, cerr)
		if errors.Is(cerr, syscall.ENOSPC) {
			err = fmt.Errorf("export %q: %w", j.rel, ErrNoSpace)
		}
	}
	if err != nil || bad != nil {
		x.files.Remove(j.rel)
		if bad != nil {
			j.me.NotExported = "damaged in the vault: " + bad.Error()
		}
		return buf, err
	}
	j.me.SHA256 = hex.EncodeToString(h.Sum(nil))
	x.written.Add(1)
	x.check.Add(readback.File{Rel: j.rel, Size: int64(n), Sum: back.Sum(nil)})
	// Metadata is best effort: FAT holds neither owners nor most modes, and
	// the verifier checks content only.
	if x.o.Owners {
		x.files.Lchown(j.rel, int(e.UID), int(e.GID))
	}
	x.files.Chmod(j.rel, fs.FileMode(e.Mode&0o777|0o400))
	t := time.Unix(e.MtimeSec, int64(min(e.MtimeNsec, 999999999)))
	x.files.Chtimes(j.rel, t, t)
	return buf, nil
}

// dirMeta sets directory modes and times, deepest first, once everything
// inside them is written.
func (x *exporter) dirMeta() {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		if x.o.Owners {
			x.files.Lchown(d.rel, int(d.e.UID), int(d.e.GID))
		}
		x.files.Chmod(d.rel, fs.FileMode(d.e.Mode&0o777|0o700))
		t := time.Unix(d.e.MtimeSec, int64(min(d.e.MtimeNsec, 999999999)))
		x.files.Chtimes(d.rel, t, t)
	}
}

// beforeRecheck lets tests change files/ the way a filesystem might.
var beforeRecheck func(files *os.Root)

// recheck reads files/ back and makes it agree with the entries: a
// filesystem may store a name other than the one asked for (FAT drops
// trailing dots and spaces) without an error. What is not there under its
// own name is listed as not exported, and what is there under another name
// is removed, so that the MANIFEST describes the drive exactly.
func (x *exporter) recheck() error {
	if beforeRecheck != nil {
		beforeRecheck(x.files)
	}
	want := make(map[string]*manifest.Entry, len(x.entries))
	for _, e := range x.entries {
		if e.OnDisk() {
			want[e.Path] = e
		}
	}
	seen := make(map[string]bool, len(want))
	var extra []string
	// WalkDir on the path rather than files.FS(): io/fs refuses names
	// that are not valid fs paths, and a snapshot's names are raw bytes.
	// The walk does not follow symlinks, and files/ is this run's own.
	top := x.files.Name()
	err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == top {
			return nil
		}
		p, err = filepath.Rel(top, p)
		if err != nil {
			return err
		}
		p = filepath.ToSlash(p)
		if _, ok := want[p]; !ok {
			extra = append(extra, p)
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		seen[p] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the exported files back: %w", err)
	}
	for _, p := range extra {
		if err := x.files.RemoveAll(p); err != nil {
			return fmt.Errorf("remove %q, which the drive's filesystem named differently than asked: %w", p, err)
		}
	}
	for p, e := range want {
		if !seen[p] {
			e.NotExported = "the drive's filesystem did not keep this name as it is (FAT drops trailing dots and spaces)"
		}
	}
	return nil
}

// writeFile writes a small file durably: temp file, fsync, rename, fsync
// of the directory.
func writeFile(name string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(name), err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		os.Chmod(tmp, mode) // FAT may refuse; the content is what matters
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
		return fmt.Errorf("write %s: %w", filepath.Base(name), err)
	}
	return syncPath(dir)
}

func syncPath(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// copyVerifiers copies the verifier builds found in from into to, and
// returns their names. A missing from is not an error: the export then
// carries no verifier and its README says where to get one.
func copyVerifiers(from, to string) ([]string, error) {
	if from == "" {
		return nil, nil
	}
	var got []string
	for _, n := range VerifierNames {
		src, err := os.Open(filepath.Join(from, n))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return got, fmt.Errorf("read verifier %s: %w", n, err)
		}
		if len(got) == 0 {
			if err := os.MkdirAll(to, 0o755); err != nil {
				src.Close()
				return nil, fmt.Errorf("create %s: %w", manifest.VerifyDir, err)
			}
		}
		dst, err := os.OpenFile(filepath.Join(to, n), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
		if err == nil {
			_, err = io.Copy(dst, src)
			if cerr := dst.Close(); err == nil {
				err = cerr
			}
		}
		src.Close()
		if err != nil {
			return got, fmt.Errorf("copy verifier %s: %w", n, err)
		}
		got = append(got, n)
	}
	return got, nil
}
