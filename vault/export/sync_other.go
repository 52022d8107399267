//go:build !linux

package export

// syncDir flushes what was written. Without syncfs, the directory's own
// fsync is all that is portable; the store, and so export, runs on Linux.
func syncDir(dir string) error { return syncPath(dir) }
