package export

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// syncDir flushes the whole filesystem holding dir: one syncfs instead of an
// fsync per exported file, which on a USB drive costs a round trip each.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
