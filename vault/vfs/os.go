package vfs

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// osFS is a real directory confined with os.Root: symlinks and names cannot
// lead outside it.
type osFS struct {
	root *os.Root
}

// OS returns the directory dir as an FS.
func OS(dir string) (FS, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open store directory: %w", err)
	}
	return &osFS{root: r}, nil
}

// Close releases the directory handle: until then the filesystem that holds
// the directory cannot be unmounted.
func (o *osFS) Close() error { return o.root.Close() }

func (o *osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if err := checkName("open", name); err != nil {
		return nil, err
	}
	f, err := o.root.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (o *osFS) Rename(oldname, newname string) error {
	if err := checkName("rename", oldname); err != nil {
		return err
	}
	if err := checkName("rename", newname); err != nil {
		return err
	}
	return o.root.Rename(oldname, newname)
}

func (o *osFS) Remove(name string) error {
	if err := checkName("remove", name); err != nil {
		return err
	}
	return o.root.Remove(name)
}

func (o *osFS) MkdirAll(name string, perm fs.FileMode) error {
	if err := checkName("mkdir", name); err != nil {
		return err
	}
	return o.root.MkdirAll(name, perm)
}

func (o *osFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if err := checkName("readdir", name); err != nil {
		return nil, err
	}
	d, err := o.root.Open(name)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	ents, err := d.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = &osDirEntry{DirEntry: e, root: o.root, name: path.Join(name, e.Name())}
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

// osDirEntry answers Info through the root, so even a stat stays confined.
type osDirEntry struct {
	fs.DirEntry
	root *os.Root
	name string
}

func (e *osDirEntry) Info() (fs.FileInfo, error) { return e.root.Lstat(e.name) }

func (o *osFS) Stat(name string) (fs.FileInfo, error) {
	if err := checkName("stat", name); err != nil {
		return nil, err
	}
	return o.root.Stat(name)
}

func (o *osFS) SyncDir(name string) error {
	if err := checkName("syncdir", name); err != nil {
		return err
	}
	d, err := o.root.Open(name)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

func (o *osFS) Seal(name string) error {
	if err := checkName("seal", name); err != nil {
		return err
	}
	return o.seal(name)
}

func (o *osFS) isImmutable(name string) (bool, error) {
	if err := checkName("getflags", name); err != nil {
		return false, err
	}
	return o.getImmutable(name)
}
