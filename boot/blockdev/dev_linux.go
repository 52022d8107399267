package blockdev

import (
	"io"
	"os"
	"path/filepath"
)

// DevDir opens device nodes in a directory, normally /dev.
type DevDir string

// Open implements Opener.
func (d DevDir) Open(name string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(string(d), filepath.Base(name)))
}
