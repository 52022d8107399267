package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/admin"
	"drawbridge/vault/daemon"
	"drawbridge/vault/journal"
	"drawbridge/vault/restore"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

// Daemon is the running daemon a console inside `drawbridge run` shares
// the store with (*daemon.Daemon).
type Daemon interface {
	Started() <-chan struct{}
	Status() daemon.Status
	OpenNow(length time.Duration)
	WhileIdle(ctx context.Context, fn func(ctx context.Context) error) error
}

// startWait bounds how long Status waits for the daemon's start-up.
const startWait = 30 * time.Second

// StoreBackend is the Backend of a store directory.
type StoreBackend struct {
	Store *store.Store
	Dir   string
	// Writable is false when the store was opened JournalOnly because the
	// daemon holds it: then nothing can be journaled, and so nothing read.
	Writable bool
	Clock    func() time.Time // nil means time.Now

	// Daemon is the daemon that opened Store, when the console runs inside
	// it: its status is read from it, back up now asks it for a window,
	// and verify runs only outside windows.
	Daemon Daemon
	// NowLength is how long back up now keeps the window open; 0 means
	// an hour.
	NowLength time.Duration
	// PowerOff and Reboot act on the appliance (they signal PID 1); nil
	// elsewhere.
	PowerOff, Reboot func() error
	// Admin checks the admin passphrase (admin.ForStore), and journals
	// refusals; nil, or no passphrase set, keeps the settings shut.
	Admin *admin.Guard
	// Config returns the configuration the settings screen shows.
	Config func() ([]string, error)
	// USB is what the drive screens work with; nil offers none (a restore
	// then goes to a typed directory).
	USB Drives

	mu     sync.Mutex // journal appends and what follows
	scanMu sync.Mutex // one reading of the journal at a time

	// What the journal said up to record seen (whose hash is seenHash):
	// only the records after it are read and checked again.
	seen       uint64
	seenHash   [seal.HashSize]byte
	seenSnap   []store.Snapshot
	seenTail   []journal.Record
	seenVerify *journal.Record
	scanAt     time.Time     // when the journal was last read
	scanTook   time.Duration // and how long that took
}

func (b *StoreBackend) now() time.Time {
	if b.Clock != nil {
		return b.Clock()
	}
	return time.Now()
}

// ReadOnly reports whether console actions cannot be journaled.
func (b *StoreBackend) ReadOnly() bool { return !b.Writable }

// Status gathers the status screen.
func (b *StoreBackend) Status(ctx context.Context) Status {
	st := Status{VaultID: b.Store.Info().VaultID, ReadOnly: !b.Writable}
	if b.Daemon != nil {
		// Until its start-up has read the journal, the daemon knows
		// nothing of earlier windows.
		select {
		case <-b.Daemon.Started():
		case <-ctx.Done():
		case <-time.After(startWait):
		}
		d := b.Daemon.Status()
		st.Daemon = &d
	} else if d, err := daemon.ReadStatus(b.Dir); err == nil {
		st.Daemon = &d
	} else {
		st.DaemonErr = err.Error()
	}
	s := b.Store
	if !b.Writable {
		// The daemon appends to the journal: open it again to see its end.
		if fresh, err := store.Open(b.Dir, store.Options{JournalOnly: true}); err == nil {
			defer fresh.Close()
			s = fresh
		}
	}
	st.Packs, st.PackBytes = packUsage(filepath.Join(b.Dir, "packs"))
	var fs unix.Statfs_t
	if unix.Statfs(b.Dir, &fs) == nil {
		st.DiskFree, st.DiskSize = fs.Bavail*uint64(fs.Bsize), fs.Blocks*uint64(fs.Bsize)
	}
	// Consoles on two terminals share the backend: one reads the journal,
	// the other waits and takes what it read.
	b.scanMu.Lock()
	defer b.scanMu.Unlock()
	b.mu.Lock()
	last, _ := s.Journal().Last()
	// While records keep coming (a window), the journal is read at most
	// every scanPause times what the last reading took, and the screen
	// shows the previous reading meanwhile.
	fresh := last != 0 && last == b.seen
	resting := b.seen != 0 && time.Since(b.scanAt) < scanPause*b.scanTook
	if fresh || resting {
		st.Snapshots, st.Journal, st.LastVerify = b.seenSnap, b.seenTail, b.seenVerify
		b.mu.Unlock()
		return st
	}
	// Only the records after those read before, added to what they said
	// (copies: earlier statuses still show the old slices).
	after, afterHash := b.seen, b.seenHash
	snaps, tail, lastVerify := slices.Clone(b.seenSnap), slices.Clone(b.seenTail), b.seenVerify
	if after > last {
		after, afterHash, snaps, tail, lastVerify = 0, [seal.HashSize]byte{}, nil, nil, nil
	}
	b.mu.Unlock()
	start := time.Now()
	seen, seenHash := after, afterHash
	read := func(r journal.Record) error {
		switch r.Type {
		case RecordVerify:
			r := r
			lastVerify = &r
		case "snapshot":
			var sn store.Snapshot
			if err := json.Unmarshal(r.Data, &sn); err != nil {
				st.SnapErr = fmt.Sprintf("journal record %d: bad snapshot data: %v", r.Seq, err)
				return nil
			}
			sn.Seq = r.Seq
			snaps = append(snaps, sn)
		}
		r.Data = nil
		tail = append(tail, r)
		if len(tail) > maxJournalShown {
			tail = tail[1:]
		}
		seen, seenHash = r.Seq, r.Hash
		return ctx.Err()
	}
	var err error
	if after == 0 {
		err = s.Journal().Scan(read) // the first reading also checks journal/ holds only records
	} else {
		err = s.Journal().ScanFrom(after, afterHash, read)
	}
	st.Snapshots, st.Journal, st.LastVerify = snaps, tail, lastVerify
	if err != nil {
		st.JournalErr = "journal: " + err.Error()
	}
	if st.SnapErr == "" && st.JournalErr == "" {
		b.mu.Lock()
		b.seen, b.seenHash, b.seenSnap, b.seenTail, b.seenVerify = seen, seenHash, snaps, tail, lastVerify
		b.scanAt, b.scanTook = time.Now(), time.Since(start)
		b.mu.Unlock()
	}
	return st
}

// scanPause is how many times the last reading of the journal the status
// waits before reading it again.
const scanPause = 4

// packUsage counts the pack files under dir and the bytes they hold on disk.
func packUsage(dir string) (n int, size int64) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".pack" {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n++
			size += fi.Size()
		}
		return nil
	})
	return n, size
}

// Unlock checks the restore passphrase; a refusal is journaled.
func (b *StoreBackend) Unlock(ctx context.Context, passphrase []byte) (Reader, error) {
	if !b.Writable {
		return nil, ErrReadOnly
	}
	r, err := b.Store.Unlock(passphrase)
	if errors.Is(err, seal.ErrPassphrase) {
		if jerr := b.Journal("console-unlock-failed", "console: a wrong restore passphrase was refused", nil); jerr != nil {
			return nil, fmt.Errorf("%w (and it could not be journaled: %v)", ErrPassphrase, jerr)
		}
		return nil, ErrPassphrase
	}
	if err != nil {
		return nil, err
	}
	if err := b.Journal("console-unlock", "console: the restore passphrase unlocked the store", nil); err != nil {
		r.Close()
		return nil, fmt.Errorf("unlocking is journaled, and the journal refused: %w", err)
	}
	return r, nil
}

// Restore restores root's subpath into target.
func (b *StoreBackend) Restore(ctx context.Context, r Reader, root tree.ID, subpath, target string, progress func(int64)) (*restore.Report, error) {
	return restore.Restore(ctx, r, root, subpath, target, restore.Options{Owners: os.Geteuid() == 0, Progress: progress})
}

// Journal appends a console record.
func (b *StoreBackend) Journal(typ, msg string, data any) error {
	if !b.Writable {
		return ErrReadOnly
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if data == nil {
		data = map[string]any{}
	}
	_, err := b.Store.Journal().Append(b.Store.Keys().Identity, b.now(), typ, msg, data)
	return err
}

// journalView opens the journal again when the daemon, in another process,
// appends to it; close is a no-op otherwise.
func (b *StoreBackend) journalView() (s *store.Store, close func()) {
	if b.Writable {
		return b.Store, func() {}
	}
	fresh, err := store.Open(b.Dir, store.Options{JournalOnly: true})
	if err != nil {
		return b.Store, func() {}
	}
	return fresh, func() { fresh.Close() }
}

// ScanJournal reads every record, oldest first.
func (b *StoreBackend) ScanJournal(ctx context.Context, last func(uint64), fn func(journal.Record) error) error {
	s, done := b.journalView()
	defer done()
	n, _ := s.Journal().Last()
	last(n)
	return s.Journal().Scan(func(r journal.Record) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(r)
	})
}

// Verify checks the store, outside windows when a daemon shares it: a
// window that opens stops the verify (daemon.ErrWindowOpen).
func (b *StoreBackend) Verify(ctx context.Context, deep Reader, progress func(done, total int64)) (*store.VerifyReport, error) {
	if !b.Writable {
		return nil, ErrReadOnly
	}
	var r *store.Reader
	if deep != nil {
		sr, ok := deep.(*store.Reader)
		if !ok {
			return nil, errors.New("deep verify: not a reader of this store")
		}
		r = sr
	}
	var rep *store.VerifyReport
	run := func(ctx context.Context) error {
		var err error
		rep, err = b.Store.Verify(ctx, r, progress)
		return err
	}
	var err error
	if b.Daemon != nil {
		err = b.Daemon.WhileIdle(ctx, run)
	} else {
		err = run(ctx)
	}
	if err != nil {
		return nil, err
	}
	rep.Sort()
	return rep, nil
}

// BackUpNow journals console-backup-now, then asks the daemon for a
// window of NowLength.
func (b *StoreBackend) BackUpNow(context.Context) (time.Duration, error) {
	if b.Daemon == nil && !b.Writable {
		return 0, fmt.Errorf("%w: back up now is on the daemon's own console", ErrReadOnly)
	}
	if b.Daemon == nil {
		return 0, ErrNoDaemon
	}
	if o := b.Daemon.Status().Open; o != nil {
		return 0, fmt.Errorf("a backup window is open now, until %s: its pulls are running", o.End.UTC().Format(shortFmt))
	}
	n := b.NowLength
	if n <= 0 {
		n = time.Hour
	}
	if err := b.Journal(RecordBackupNow, fmt.Sprintf("console: back up now asked for a window of %s", n), map[string]any{"length_seconds": n.Seconds()}); err != nil {
		return 0, fmt.Errorf("not journaled, so not done: %w", err)
	}
	b.Daemon.OpenNow(n)
	return n, nil
}

// Power journals console-poweroff or console-reboot, then powers off or
// reboots through PowerOff and Reboot.
func (b *StoreBackend) Power(reboot bool) error {
	f, typ, what := b.PowerOff, RecordPowerOff, "power off"
	if reboot {
		f, typ, what = b.Reboot, RecordReboot, "reboot"
	}
	if f == nil {
		return ErrNoPower
	}
	// Journaled first: afterwards there may be no one to write it. A
	// journal that refuses does not keep the box from powering off.
	_ = b.Journal(typ, "console: "+what, nil)
	return f()
}

// HasAdmin says whether an admin passphrase is set to be checked.
func (b *StoreBackend) HasAdmin() bool {
	if b.Admin == nil {
		return false
	}
	ok, err := b.Admin.IsSet()
	return ok && err == nil
}

// Settings checks the admin passphrase, then returns the configuration.
func (b *StoreBackend) Settings(ctx context.Context, passphrase []byte) ([]string, error) {
	if b.Admin == nil {
		return nil, ErrNoAdmin
	}
	switch err := b.Admin.Check(ctx, passphrase); {
	case errors.Is(err, admin.ErrNotSet):
		return nil, ErrNoAdmin
	case errors.Is(err, admin.ErrWrong):
		return nil, fmt.Errorf("%w: %v", ErrAdminPassphrase, err)
	case err != nil:
		return nil, err
	}
	if b.Config == nil {
		return []string{"(no configuration: this console runs without drawbridge run --config)"}, nil
	}
	return b.Config()
}

// SetAdmin changes the admin passphrase; the guard journals the change, or
// the refusal of a wrong current one.
func (b *StoreBackend) SetAdmin(ctx context.Context, old, next []byte) error {
	if b.Admin == nil || !b.HasAdmin() {
		return ErrNoAdmin
	}
	if !b.Writable {
		return ErrReadOnly
	}
	switch err := b.Admin.Set(ctx, old, next); {
	case errors.Is(err, admin.ErrWrong):
		return fmt.Errorf("%w: %v", ErrAdminPassphrase, err)
	default:
		return err
	}
}

// Drives returns the drives the console offers, nil when none.
func (b *StoreBackend) Drives() Drives { return b.USB }
