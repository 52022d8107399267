package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// DriveFile is the configuration file looked for at the top of a drive.
const DriveFile = "drawbridge.toml"

// DriveMaxSize caps a configuration file read from a drive. Real files are a
// few KiB; the cap is checked before anything is read.
const DriveMaxSize = 64 << 10

// ReadFromDrive reads, parses and checks the configuration file name inside
// root, a directory on a drive nobody vouches for (a mounted USB stick). It
// returns the checked configuration and the file's bytes, which are what an
// import installs. It refuses, with an Error wrapping ErrInvalid and without
// reading it: a symbolic link (nothing on a drive is followed), anything
// but a regular file, and a file over DriveMaxSize (a sparse 2^40-byte file
// is refused at once). Then the content must be UTF-8 TOML with known keys
// only that passes every check Parse makes. A read error (a damaged
// filesystem) wraps the operating system's error.
func ReadFromDrive(root *os.Root, name string) (*Config, []byte, error) {
	if !filepath.IsLocal(name) {
		return nil, nil, &Error{File: name, Msg: "not a name inside the drive"}
	}
	fi, err := root.Lstat(name)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	if err := driveFileOK(name, fi); err != nil {
		return nil, nil, err
	}
	// O_NOFOLLOW and O_NONBLOCK: if the name was swapped for a link or a
	// FIFO since Lstat, the open fails or returns at once instead of
	// following or blocking; the Stat below then refuses it.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, nil, &Error{File: name, Msg: "is a symbolic link; nothing on a drive is followed, copy the file itself onto it"}
		}
		return nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	ofi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	if err := driveFileOK(name, ofi); err != nil {
		return nil, nil, err
	}
	if !os.SameFile(fi, ofi) {
		return nil, nil, &Error{File: name, Msg: "changed while it was being read; plug the drive in again"}
	}
	data, err := io.ReadAll(io.LimitReader(f, DriveMaxSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > DriveMaxSize {
		return nil, nil, &Error{File: name, Msg: fmt.Sprintf("is larger than %d KiB; expected a small TOML text file", DriveMaxSize>>10)}
	}
	c, err := Parse(name, data)
	if err != nil {
		return nil, nil, err
	}
	return c, data, nil
}

func driveFileOK(name string, fi fs.FileInfo) error {
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		return &Error{File: name, Msg: "is a symbolic link; nothing on a drive is followed, copy the file itself onto it"}
	case m.IsDir():
		return &Error{File: name, Msg: "is a directory, expected a TOML text file"}
	case !m.IsRegular():
		return &Error{File: name, Msg: "is not a regular file (a device, FIFO or socket), expected a TOML text file"}
	case fi.Size() > DriveMaxSize:
		return &Error{File: name, Msg: fmt.Sprintf("is %d bytes, larger than %d KiB; expected a small TOML text file", fi.Size(), DriveMaxSize>>10)}
	}
	return nil
}
