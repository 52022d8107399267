// Package vfs is the filesystem seam every store file is written through, and
// the one durable-write helper (format.md §7).
//
// Names are slash-separated and relative to the FS's root; an absolute name,
// an empty element or ".." is refused, so nothing read from data can reach
// outside the store. OS confines a real directory with os.Root; MemFS is a
// strict in-memory FS for tests that keeps only what was made durable and can
// fail at the N-th operation.
//
// The invariant the helper keeps: a sealed name either does not exist or
// holds its final content, and once sealed it is never rewritten or removed.
package vfs

import (
	"errors"
	"io"
	"io/fs"
)

// FS is a directory tree addressed by slash-separated relative names.
type FS interface {
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Rename moves oldname to newname, replacing newname if it is a file.
	Rename(oldname, newname string) error
	// Remove removes a file or an empty directory.
	Remove(name string) error
	MkdirAll(name string, perm fs.FileMode) error
	// ReadDir lists a directory, sorted by name.
	ReadDir(name string) ([]fs.DirEntry, error)
	Stat(name string) (fs.FileInfo, error)
	// SyncDir makes the directory's entries (creates, renames, removes)
	// durable.
	SyncDir(name string) error
	// Seal makes a file read-only (mode 0444) and, where the filesystem
	// supports it, immutable. Sealing a sealed file is not an error.
	Seal(name string) error
}

// Close releases what fsys holds open, if anything: an FS from OS holds its
// directory, which keeps a drive busy until it is closed. Every FS that a
// caller made with OS is closed by that caller.
func Close(fsys FS) error {
	if c, ok := fsys.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// File is an open file of an FS.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.Seeker
	Sync() error
	Close() error
	Stat() (fs.FileInfo, error)
}

// ErrInjected is the error MemFS fails an operation with when told to.
var ErrInjected = errors.New("vfs: injected fault")

// IsImmutable reports whether name carries the immutable flag. It is false
// where the filesystem (or FS implementation) has no such flag.
func IsImmutable(fsys FS, name string) (bool, error) {
	if c, ok := fsys.(immutableChecker); ok {
		return c.isImmutable(name)
	}
	return false, nil
}

type immutableChecker interface {
	isImmutable(name string) (bool, error)
}

// noReplaceRenamer is implemented by FSs that can rename without replacing
// atomically. Commit falls back to a Stat check for others; the store has a
// single writer, so the check is only a guard against its own mistakes.
type noReplaceRenamer interface {
	renameNoReplace(oldname, newname string) error
}

// checkName refuses names that could leave the root.
func checkName(op, name string) error {
	if !fs.ValidPath(name) {
		return &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	return nil
}
