// Package restore writes a snapshot tree into a target directory.
//
// Tree data is untrusted: every write goes through an *os.Root opened on the
// target (or through a directory opened by it, for the *at calls os.Root
// lacks), names are checked again here even though tree.Decode already did,
// entries are created exclusively so that nothing is written through a
// symlink the snapshot placed, and a hardlink may only point at a regular file
// this run restored earlier. Damage in the snapshot (an unreadable chunk,
// list or tree, or an entry that breaks the rules) is reported per path and
// the restore goes on; an error writing to the target ends it, except that
// with Options.Lenient what the target's filesystem refuses to hold (a
// symlink on FAT, say) is skipped and listed.
package restore

import (
	"context"
	"errors"
	"fmt"
	"hash"

	"drawbridge/vault/tree"
)

// Source supplies a snapshot's blobs, decrypted and verified.
type Source interface {
	Tree(ctx context.Context, id tree.ID) (*tree.Tree, error)
	List(ctx context.Context, id tree.ID) ([]tree.ChunkRef, error)
	// Chunk appends the chunk's plaintext to dst[:0]. It is called from
	// several goroutines at once.
	Chunk(ctx context.Context, id tree.ID, dst []byte) ([]byte, error)
}

// Options tune a restore.
type Options struct {
	Owners   bool          // chown to the snapshot's UID/GID (set when running as root)
	Progress func(n int64) // called with the file bytes just restored, from any goroutine; may be nil
	Workers  int           // goroutines writing file content; 0 means runtime.GOMAXPROCS(0)
	// Hash, with Written, has each worker hash a file's content as it
	// writes it (holes included). Written is then called, from any
	// goroutine, for every regular file whose content was restored
	// without damage: its slash path in the target, its size and the
	// hash. Read-back verification of a drive is built on it.
	Hash    func() hash.Hash
	Written func(rel string, size int64, sum []byte)
	// Lenient is for a target whose filesystem cannot hold all a snapshot
	// can (FAT and exFAT on a USB drive): an entry it refuses (a symlink,
	// device, fifo or hardlink, a name it does not take or that clashes
	// with another by case) is left out and listed in Report.Skipped, and
	// modes, owners and times it refuses are dropped.
	Lenient bool
}

// Damage is one snapshot path that was not restored, or not completely.
type Damage struct {
	Path string // slash path of the entry from the snapshot root; names are raw bytes
	Err  error
}

func (d Damage) String() string { return fmt.Sprintf("%q: %v", d.Path, d.Err) }

// Report says what a restore did.
type Report struct {
	Files    int64 // regular files, including hardlinks
	Dirs     int64 // directories created (the target itself is not counted)
	Symlinks int64
	Other    int64    // fifos, devices, and sockets (which are skipped)
	Bytes    int64    // file content restored, holes included
	Damaged  []Damage // sorted by Path
	Skipped  []Damage // entries the target refused (Options.Lenient), sorted by Path
}

var (
	// ErrTargetNotEmpty: the target exists and is not an empty directory.
	ErrTargetNotEmpty = errors.New("restore target exists and is not an empty directory")
	// ErrMismatch: a file's content does not agree with its entry (a chunk
	// of the wrong length, chunk lengths not adding up to the size).
	ErrMismatch = errors.New("content does not match its tree entry")
)
