// Package console is the vault's full-screen terminal UI (DESIGN.md §7): a
// status screen, a snapshot browser and restore of a file or directory to a
// target directory (the USB drive on the appliance, any directory in hosted
// mode).
//
// The code is split in three: Model holds the state and handles keys and
// results of background work without touching a terminal (tests drive it
// directly); the view draws a Model onto a tcell screen, building only the
// rows that fit; Run is the loop between the two that runs every slow
// operation (unlocking, reading trees, restoring) in a goroutine, so a key
// press is never kept waiting behind the store.
//
// Invariants: the unlocked Reader is dropped after IdleTimeout without a key
// press; every action that reveals content or writes outside the store is
// journaled (console-unlock, console-unlock-failed, console-browse,
// console-restore), or the screen says that it could not be.
package console

import (
	"context"
	"errors"
	"time"

	"drawbridge/vault/daemon"
	"drawbridge/vault/journal"
	"drawbridge/vault/restore"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

// ErrReadOnly is returned by a Backend that cannot write the journal (the
// daemon holds the store) for actions that must be journaled.
var ErrReadOnly = errors.New("the store is held by the daemon: the console is read-only")

// ErrPassphrase is what a Backend's Unlock returns for a wrong passphrase.
var ErrPassphrase = errors.New("wrong restore passphrase")

// Reader reads a snapshot's content after the restore passphrase opened it.
type Reader interface {
	restore.Source
	Close()
}

// Status is what the status screen shows.
type Status struct {
	VaultID    string
	ReadOnly   bool
	Daemon     *daemon.Status // nil when no daemon status is present
	DaemonErr  string         // why it is absent, when it is
	Snapshots  []store.Snapshot
	SnapErr    string
	Packs      int
	PackBytes  int64
	Journal    []journal.Record // the last few, oldest first
	JournalErr string
}

// Backend is everything the console does with the store. The Model calls
// it only from background goroutines.
type Backend interface {
	Status(ctx context.Context) Status
	// Unlock checks the restore passphrase; a wrong one gives an error
	// wrapping ErrPassphrase (and is journaled when the store is writable).
	Unlock(ctx context.Context, passphrase []byte) (Reader, error)
	Restore(ctx context.Context, r Reader, root tree.ID, subpath, target string, progress func(int64)) (*restore.Report, error)
	// Journal appends a record of a console action; ErrReadOnly when the
	// store is not writable.
	Journal(typ, msg string, data any) error
	ReadOnly() bool
}

// maxJournalShown is how many journal records the status screen lists.
const maxJournalShown = 6

// IdleTimeout is how long the unlocked Reader outlives the last key press.
const IdleTimeout = 5 * time.Minute
