// Package console is the vault's full-screen terminal UI (DESIGN.md §7): a
// status screen, a snapshot browser, restore of a file or directory to a
// USB drive picked from the live list (or a typed directory), export of a
// snapshot to a drive, formatting a drive, a diff between two snapshots,
// the journal, verify and deep verify, back up now, power off and reboot,
// and the settings behind the admin passphrase, with the import of a
// configuration from a drive. It runs on the appliance's terminals inside the daemon
// (OpenTTY), sharing its store, and in a terminal in hosted mode.
//
// The code is split in three: Model holds the state and handles keys and
// results of background work without touching a terminal (tests drive it
// directly); the view draws a Model onto a tcell screen, building only the
// rows that fit; Run is the loop between the two that runs every slow
// operation (unlocking, reading trees, restoring) in a goroutine, so a key
// press is never kept waiting behind the store.
//
// Invariants: the unlocked Reader is dropped after IdleTimeout without a key
// press, once no restore, deep verify or diff uses it; every action that reveals content or writes outside the store is
// journaled (console-unlock, console-unlock-failed, console-browse,
// console-restore, console-restore-drive, console-export, console-format,
// console-diff, console-verify, console-backup-now, console-poweroff,
// console-reboot, console-settings, and the importer's config-imported), or
// the screen says that it could not be. Nothing on a drive runs.
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

// ErrNoDaemon is what BackUpNow returns when no daemon runs beside the
// console (hosted mode without drawbridge run).
var ErrNoDaemon = errors.New("no daemon runs this store: back up now needs the console of drawbridge run (or drawbridge run --window-now)")

// ErrNoPower is what Power returns off the appliance.
var ErrNoPower = errors.New("power off and reboot are for the appliance's own console")

// ErrNoAdmin is what Settings returns while the vault has no admin
// passphrase to check.
var ErrNoAdmin = errors.New("the settings need the admin passphrase, and none is set on this vault")

// ErrAdminPassphrase is what Settings returns for a wrong admin passphrase.
var ErrAdminPassphrase = errors.New("wrong admin passphrase")

// Reader reads a snapshot's content after the restore passphrase opened it.
type Reader interface {
	restore.Source
	Close()
}

// Status is what the status screen shows.
type Status struct {
	VaultID   string
	ReadOnly  bool
	Daemon    *daemon.Status // nil when no daemon status is present
	DaemonErr string         // why it is absent, when it is
	Snapshots []store.Snapshot
	SnapErr   string
	Packs     int
	PackBytes int64
	// DiskFree and DiskSize are the store's filesystem's free and whole
	// bytes; 0 when unknown.
	DiskFree, DiskSize uint64
	Journal            []journal.Record // the last few, oldest first
	JournalErr         string
	// LastVerify is the newest console-verify record; nil when none.
	LastVerify *journal.Record
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

	// ScanJournal calls fn with every record, oldest first, and returns
	// the number of the last one it knew of at the start through last
	// before the first call.
	ScanJournal(ctx context.Context, last func(uint64), fn func(journal.Record) error) error
	// Verify checks the store; with a Reader it is a deep verify.
	// progress gets pack bytes done and in all.
	Verify(ctx context.Context, deep Reader, progress func(done, total int64)) (*store.VerifyReport, error)
	// BackUpNow journals console-backup-now and has the daemon open a
	// window at once, and says for how long; ErrNoDaemon without one.
	BackUpNow(ctx context.Context) (time.Duration, error)
	// Power journals console-poweroff or console-reboot and powers the
	// appliance off, or reboots it; ErrNoPower elsewhere.
	Power(reboot bool) error
	// HasAdmin says whether Settings can check an admin passphrase.
	HasAdmin() bool
	// Settings checks the admin passphrase and returns the configuration
	// to show, one line each: ErrNoAdmin, ErrAdminPassphrase (the Backend
	// journals the refusal).
	Settings(ctx context.Context, adminPassphrase []byte) ([]string, error)
	// SetAdmin changes the admin passphrase from old to next:
	// ErrAdminPassphrase when old is wrong (journaled as a refusal), and
	// the change is journaled.
	SetAdmin(ctx context.Context, old, next []byte) error
}

// maxJournalShown is how many journal records the status screen lists.
const maxJournalShown = 6

// IdleTimeout is how long the unlocked Reader outlives the last key press.
const IdleTimeout = 5 * time.Minute
