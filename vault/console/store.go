package console

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"drawbridge/vault/daemon"
	"drawbridge/vault/journal"
	"drawbridge/vault/restore"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

// StoreBackend is the Backend of a store directory.
type StoreBackend struct {
	Store *store.Store
	Dir   string
	// Writable is false when the store was opened JournalOnly because the
	// daemon holds it: then nothing can be journaled, and so nothing read.
	Writable bool
	Clock    func() time.Time // nil means time.Now

	mu sync.Mutex // journal appends

	// What the journal said at its last record: scanning and checking every
	// record is skipped while no record is added.
	seen     uint64
	seenSnap []store.Snapshot
	seenTail []journal.Record
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
	if d, err := daemon.ReadStatus(b.Dir); err == nil {
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
	b.mu.Lock()
	last, _ := s.Journal().Last()
	if last != 0 && last == b.seen {
		st.Snapshots, st.Journal = b.seenSnap, b.seenTail
		b.mu.Unlock()
		return st
	}
	b.mu.Unlock()
	snaps, err := s.Snapshots()
	st.Snapshots = snaps
	if err != nil {
		st.SnapErr = err.Error()
	}
	var tail []journal.Record
	err = s.Journal().Scan(func(r journal.Record) error {
		r.Data = nil
		tail = append(tail, r)
		if len(tail) > maxJournalShown {
			tail = tail[1:]
		}
		return ctx.Err()
	})
	st.Journal = tail
	if err != nil {
		st.JournalErr = "journal: " + err.Error()
	}
	if st.SnapErr == "" && st.JournalErr == "" {
		b.mu.Lock()
		b.seen, b.seenSnap, b.seenTail = last, snaps, tail
		b.mu.Unlock()
	}
	return st
}

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
