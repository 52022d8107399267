package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"drawbridge/vault/vfs"
)

// PreviousSuffix names the copy Install keeps of the file it replaced.
const PreviousSuffix = ".previous"

// Install makes data the configuration file at path, durably: the file it
// replaces (if any) is first kept as path.previous, then data goes in
// through a temporary file, fsync, rename and an fsync of the directory. A
// crash leaves path holding either the old or the new content. The
// directory must exist. Install does not check data: callers parse it first.
func Install(path string, data []byte) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	fsys, err := vfs.OS(dir)
	if err != nil {
		return fmt.Errorf("install configuration: %w", err)
	}
	defer vfs.Close(fsys)
	old, err := readCurrent(fsys, name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("install configuration: keep the current one: %w", err)
	default:
		if err := vfs.Replace(fsys, ".", name+PreviousSuffix, old); err != nil {
			return fmt.Errorf("install configuration: keep the current one: %w", err)
		}
	}
	if err := vfs.Replace(fsys, ".", name, data); err != nil {
		return fmt.Errorf("install configuration: %w", err)
	}
	return nil
}

// LoadCurrent reads the configuration installed at path: nil without error
// when there is none yet.
func LoadCurrent(path string) (*Config, error) {
	c, err := Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return c, err
}

func readCurrent(fsys vfs.FS, name string) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, MaxSize)
	}
	return b, nil
}
