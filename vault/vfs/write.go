package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
)

// Pending is a file being written under a temporary name. Commit puts it in
// place durably and seals it; Abort throws it away. Anything left in the
// temporary directory after a crash is garbage.
type Pending struct {
	fsys FS
	name string // temporary name
	f    File
	err  error // first write error; Commit refuses after one
	done bool
}

// Create starts a file under a fresh random name in tmpDir, creating tmpDir
// if needed. The temporary directory is never synced: its entries do not
// need to survive a crash.
func Create(fsys FS, tmpDir string) (*Pending, error) {
	const tries = 8
	var err error
	for i := 0; i < tries; i++ {
		name := path.Join(tmpDir, fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64()))
		var f File
		f, err = fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrNotExist) {
			if merr := fsys.MkdirAll(tmpDir, 0o700); merr != nil {
				return nil, fmt.Errorf("create temporary directory %s: %w", tmpDir, merr)
			}
			f, err = fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
		if err == nil {
			return &Pending{fsys: fsys, name: name, f: f}, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	return nil, fmt.Errorf("create temporary file in %s: %w", tmpDir, err)
}

// Write appends to the pending file. After a failed write every later Write
// and the Commit fail with the same error.
func (p *Pending) Write(b []byte) (int, error) {
	if p.done {
		return 0, fmt.Errorf("write %s: %w", p.name, fs.ErrClosed)
	}
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.f.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		p.err = fmt.Errorf("write %s: %w", p.name, err)
		return n, p.err
	}
	return n, nil
}

// Commit makes the file durable under dest and seals it: fsync, close,
// rename to dest without replacing it, fsync dest's directory, seal. It
// refuses, with an error wrapping fs.ErrExist, when dest already exists.
//
// dest's directory must exist and be durable (created, and its parent
// synced) before Commit: Commit syncs only that directory.
//
// On an error before the rename the temporary file is removed. An error
// after the rename (syncing the directory, sealing) leaves dest holding its
// full, synced content, possibly not yet durable or not sealed; sealing
// again is harmless.
func (p *Pending) Commit(dest string) error {
	if p.done {
		return fmt.Errorf("commit %s: %w", dest, fs.ErrClosed)
	}
	if err := checkName("commit", dest); err != nil || dest == "." {
		p.Abort()
		return fmt.Errorf("commit %q: %w", dest, fs.ErrInvalid)
	}
	if p.err != nil {
		p.Abort()
		return fmt.Errorf("commit %s: %w", dest, p.err)
	}
	if err := p.f.Sync(); err != nil {
		p.Abort()
		return fmt.Errorf("commit %s: sync: %w", dest, err)
	}
	p.done = true
	if err := p.f.Close(); err != nil {
		p.fsys.Remove(p.name)
		return fmt.Errorf("commit %s: close: %w", dest, err)
	}
	if err := renameNoReplace(p.fsys, p.name, dest); err != nil {
		p.fsys.Remove(p.name)
		return fmt.Errorf("commit %s: %w", dest, err)
	}
	if err := p.fsys.SyncDir(path.Dir(dest)); err != nil {
		return fmt.Errorf("commit %s: sync directory: %w", dest, err)
	}
	if err := p.fsys.Seal(dest); err != nil {
		return fmt.Errorf("commit %s: seal: %w", dest, err)
	}
	return nil
}

// Abort closes and removes the temporary file. It is a no-op after Commit.
func (p *Pending) Abort() {
	if p.done {
		return
	}
	p.done = true
	p.f.Close()
	p.fsys.Remove(p.name)
}

// WriteSealed writes data to dest durably and seals it (format.md §7).
func WriteSealed(fsys FS, tmpDir, dest string, data []byte) error {
	p, err := Create(fsys, tmpDir)
	if err != nil {
		return fmt.Errorf("write %s: %w", dest, err)
	}
	if _, err := p.Write(data); err != nil {
		p.Abort()
		return fmt.Errorf("write %s: %w", dest, err)
	}
	return p.Commit(dest)
}

// Replace durably replaces dest with data, for the few files that change in
// place (state/). After a crash dest holds either the old or the new content.
// The file is not sealed.
func Replace(fsys FS, tmpDir, dest string, data []byte) error {
	if err := checkName("replace", dest); err != nil || dest == "." {
		return fmt.Errorf("replace %q: %w", dest, fs.ErrInvalid)
	}
	p, err := Create(fsys, tmpDir)
	if err != nil {
		return fmt.Errorf("replace %s: %w", dest, err)
	}
	if _, err := p.Write(data); err != nil {
		p.Abort()
		return fmt.Errorf("replace %s: %w", dest, err)
	}
	if err := p.f.Sync(); err != nil {
		p.Abort()
		return fmt.Errorf("replace %s: sync: %w", dest, err)
	}
	p.done = true
	if err := p.f.Close(); err != nil {
		fsys.Remove(p.name)
		return fmt.Errorf("replace %s: close: %w", dest, err)
	}
	if err := fsys.Rename(p.name, dest); err != nil {
		fsys.Remove(p.name)
		return fmt.Errorf("replace %s: %w", dest, err)
	}
	if err := fsys.SyncDir(path.Dir(dest)); err != nil {
		return fmt.Errorf("replace %s: sync directory: %w", dest, err)
	}
	return nil
}

func renameNoReplace(fsys FS, oldname, newname string) error {
	if r, ok := fsys.(noReplaceRenamer); ok {
		return r.renameNoReplace(oldname, newname)
	}
	return statThenRename(fsys, oldname, newname)
}

// statThenRename is the fallback where no atomic no-replace rename exists.
func statThenRename(fsys FS, oldname, newname string) error {
	_, err := fsys.Stat(newname)
	if err == nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrExist}
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return fsys.Rename(oldname, newname)
}
