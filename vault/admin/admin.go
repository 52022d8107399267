// Package admin keeps the admin passphrase, which guards what changes the
// vault's settings and keys at the console and from a USB stick (DESIGN.md
// §7). It is not the restore passphrase: it reads nothing, it authorises.
//
// Invariants: only an argon2id verifier of the passphrase is stored
// (state/admin.json, replaced durably), never the passphrase; every refusal
// (admin-refused) and every change (admin-passphrase-set) is journaled; after
// a refusal the next check waits, longer after each refusal in a row, and
// the count survives a restart (state/admin-refusals).
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"time"

	"drawbridge/vault/journal"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/vfs"
)

// Sentinel errors callers branch on.
var (
	ErrWrong  = errors.New("wrong admin passphrase")
	ErrNotSet = errors.New("no admin passphrase is set yet")
	// ErrAlreadySet: Set without the current passphrase when one is set.
	ErrAlreadySet = errors.New("an admin passphrase is already set: give the current one to change it")
)

// File names, relative to the store root (format.md §1: state/ is where
// the store's few mutable files live).
const (
	File         = "state/admin.json"
	RefusalsFile = "state/admin-refusals"
	maxFile      = 4096
)

// Journal record types.
const (
	RecordRefused = "admin-refused"
	RecordSet     = "admin-passphrase-set"
)

// Options tune a Guard.
type Options struct {
	// Clock gives the time of journal records; nil means time.Now.
	Clock func() time.Time
	// Sleep waits before a check after refusals; nil means a timer that
	// ctx cancels.
	Sleep func(ctx context.Context, d time.Duration) error
	// KDF is what a new verifier costs; zero means seal.DefaultKDF.
	KDF seal.KDFParams
}

// Guard checks and sets the admin passphrase of one store.
type Guard struct {
	fsys vfs.FS
	jr   *journal.Journal
	id   *seal.Identity
	o    Options
	mu   sync.Mutex
}

// New returns the Guard of the store rooted at fsys, journaling to jr
// signed by id.
func New(fsys vfs.FS, jr *journal.Journal, id *seal.Identity, o Options) *Guard {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.KDF == (seal.KDFParams{}) {
		o.KDF = seal.DefaultKDF
	}
	return &Guard{fsys: fsys, jr: jr, id: id, o: o}
}

// ForStore returns the Guard of an open store.
func ForStore(s *store.Store, o Options) *Guard {
	return New(s.FS(), s.Journal(), s.Keys().Identity, o)
}

type fileJSON struct {
	Version  int           `json:"version"`
	Set      time.Time     `json:"set"`
	Verifier seal.Verifier `json:"verifier"`
}

// IsSet says whether an admin passphrase has been set.
func (g *Guard) IsSet() (bool, error) {
	_, ok, err := g.read()
	return ok, err
}

func (g *Guard) read() (seal.Verifier, bool, error) {
	b, err := readCapped(g.fsys, File)
	if errors.Is(err, fs.ErrNotExist) {
		return seal.Verifier{}, false, nil
	}
	if err != nil {
		return seal.Verifier{}, false, fmt.Errorf("read %s: %w", File, err)
	}
	var f fileJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil || f.Version != 1 {
		return seal.Verifier{}, false, fmt.Errorf("%s is damaged: %v", File, err)
	}
	if err := f.Verifier.Valid(); err != nil || len(f.Verifier.Hash) != 32 {
		return seal.Verifier{}, false, fmt.Errorf("%s is damaged: %v", File, err)
	}
	return f.Verifier, true, nil
}

// Delay is how long a check waits after n refusals in a row: nothing, then
// 1 s, doubling to at most a minute. With argon2id's own cost this keeps a
// person guessing at the console to about one try a minute.
func Delay(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	if n > 7 {
		return time.Minute
	}
	return min(time.Second<<(n-1), time.Minute)
}

// Pending returns the refusals in a row so far and how long the next check
// will wait because of them, for a person to be told before typing.
func (g *Guard) Pending() (refusals int, wait time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.refusals()
	return n, Delay(n)
}

// Check accepts the admin passphrase or refuses it with ErrWrong (journaled,
// and counted for the delay). With none set it returns ErrNotSet.
func (g *Guard) Check(ctx context.Context, pass []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.check(ctx, pass)
}

func (g *Guard) check(ctx context.Context, pass []byte) error {
	v, ok, err := g.read()
	if err != nil {
		return err
	}
	if !ok {
		return ErrNotSet
	}
	n := g.refusals()
	if err := g.o.Sleep(ctx, Delay(n)); err != nil {
		return err
	}
	if v.Matches(pass) {
		if n > 0 {
			if err := vfs.Replace(g.fsys, "tmp", RefusalsFile, []byte("0\n")); err != nil {
				return fmt.Errorf("reset the refusal count: %w", err)
			}
		}
		return nil
	}
	n++
	werr := vfs.Replace(g.fsys, "tmp", RefusalsFile, []byte(strconv.Itoa(n)+"\n"))
	_, jerr := g.jr.Append(g.id, g.o.Clock().UTC(), RecordRefused,
		fmt.Sprintf("wrong admin passphrase (%d in a row)", n), map[string]any{"refusals": n})
	if err := errors.Join(werr, jerr); err != nil {
		return fmt.Errorf("%w (and it could not be recorded: %v)", ErrWrong, err)
	}
	return ErrWrong
}

// Set sets the admin passphrase to next. The first time old is ignored;
// after that old must be the current one (checked as Check does).
func (g *Guard) Set(ctx context.Context, old, next []byte) error {
	if len(next) == 0 {
		return errors.New("the admin passphrase must not be empty")
	}
	if !g.id.CanSign() {
		return fmt.Errorf("set the admin passphrase: %w", journal.ErrReadOnly)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	_, set, err := g.read()
	if err != nil {
		return err
	}
	if set {
		if old == nil {
			return ErrAlreadySet
		}
		if err := g.check(ctx, old); err != nil {
			return err
		}
	}
	v, err := seal.NewVerifier(next, g.o.KDF)
	if err != nil {
		return err
	}
	now := g.o.Clock().UTC()
	b, err := json.MarshalIndent(fileJSON{Version: 1, Set: now, Verifier: v}, "", "  ")
	if err != nil {
		return err
	}
	if err := g.fsys.MkdirAll("state", 0o700); err != nil {
		return err
	}
	if err := vfs.Replace(g.fsys, "tmp", File, b); err != nil {
		return fmt.Errorf("write %s: %w", File, err)
	}
	msg := "admin passphrase changed"
	if !set {
		msg = "admin passphrase set for the first time"
	}
	if _, err := g.jr.Append(g.id, now, RecordSet, msg, map[string]any{"first": !set}); err != nil {
		return fmt.Errorf("the admin passphrase was set but not journaled: %w", err)
	}
	return nil
}

// refusals reads the count of refusals in a row: 0 when there is no
// count, and the longest delay's when it cannot be read, so that damaging
// the file does not lift the delay.
func (g *Guard) refusals() int {
	b, err := readCapped(g.fsys, RefusalsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	n, perr := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || perr != nil || n < 0 {
		return 7
	}
	return n
}

func readCapped(fsys vfs.FS, name string) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("larger than %d bytes", maxFile)
	}
	return b, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
