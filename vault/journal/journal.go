// Package journal keeps the store's hash-chained, signed, append-only
// journal (format.md §8): one sealed file per record under journal/, each
// signed with the vault's identity and naming the hash of the record before
// it, and state/journal-head, a lower bound on the journal's length that
// catches a truncated journal.
//
// Invariants: records are numbered 1, 2, … without gaps; a record is written
// durably and sealed before the head names it, so the head never points past
// a record that exists after a crash; a record is never rewritten.
package journal

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"drawbridge/vault/seal"
	"drawbridge/vault/vfs"
)

// ErrDamaged marks a journal that does not verify: a record missing,
// altered, out of place or foreign, a stray file, or a head that points past
// the records.
var ErrDamaged = errors.New("journal damaged")

// ErrReadOnly is returned by Append when the store's key file holds no
// signing key: a sealed export is read, never written to.
var ErrReadOnly = errors.New("this store holds no signing key (a sealed export): its journal can be read, not extended")

const (
	dirName  = "journal"
	stateDir = "state"
	headName = "state/journal-head"
	tmpDir   = "tmp"
	maxHead  = 128
)

// Journal appends to and reads one store's journal.
type Journal struct {
	fsys vfs.FS
	pub  []byte

	mu       sync.Mutex // serialises Append
	last     uint64
	lastHash [seal.HashSize]byte
	lastTime time.Time
	// ready is set once the directories exist and the last record is sealed
	// and durable; a failed Append clears it so the next one looks again.
	ready bool
}

// Open reads the journal of the store rooted at fsys. It checks only the
// last record and the head, so it is fast: the last record must verify, and
// the head must not point past it nor disagree with the record it names.
// A store without a journal yet opens empty.
func Open(fsys vfs.FS, identityPublic []byte) (*Journal, error) {
	if len(identityPublic) != 32 {
		return nil, errors.New("open journal: identity public key must be 32 bytes")
	}
	j := &Journal{fsys: fsys, pub: bytes.Clone(identityPublic)}
	last, err := lastSeq(fsys)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if last > 0 {
		rec, err := j.readRecord(last, nil)
		if err != nil {
			return nil, fmt.Errorf("open journal: %w", err)
		}
		j.last, j.lastHash, j.lastTime = last, rec.Hash, rec.Time
	}
	h, ok, err := readHead(fsys)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if ok {
		if err := checkHead(fsys, h, j.last, j.lastHash); err != nil {
			return nil, fmt.Errorf("open journal: %w", err)
		}
	}
	return j, nil
}

// Last returns the newest record's seq and time; 0 and the zero time for an
// empty journal.
func (j *Journal) Last() (seq uint64, t time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.last, j.lastTime
}

// Append writes record last+1, signed with id, durably and sealed, then
// updates state/journal-head. It returns once the record is durable.
//
// If the record was written but the head could not be updated, Append
// returns the record and an error: the record is part of the journal (the
// head is only a lower bound) and the next Append rewrites the head. If
// Append fails after the record file reached its name (syncing the
// directory, sealing), the record may still be in the journal; the next
// Append finds it, seals it and continues the chain after it.
func (j *Journal) Append(id *seal.Identity, now time.Time, typ, message string, data any) (Record, error) {
	if !bytes.Equal(id.Public(), j.pub) {
		return Record{}, errors.New("append journal record: identity does not match the store's public key")
	}
	if !id.CanSign() {
		return Record{}, fmt.Errorf("append %s record: %w", typ, ErrReadOnly)
	}
	if typ == "" {
		return Record{}, errors.New("append journal record: empty type")
	}
	raw := []byte("{}")
	if data != nil {
		var err error
		if raw, err = json.Marshal(data); err != nil {
			return Record{}, fmt.Errorf("append %s record: data: %w", typ, err)
		}
		if len(raw) == 0 || raw[0] != '{' {
			return Record{}, fmt.Errorf("append %s record: data must be a JSON object", typ)
		}
	}

	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.ready {
		if err := j.prepare(); err != nil {
			return Record{}, fmt.Errorf("append %s record: %w", typ, err)
		}
	}
	t := now.UTC().Round(0)
	seq := j.last + 1
	prev := ""
	if j.last > 0 {
		prev = hex.EncodeToString(j.lastHash[:])
	}
	bd, err := json.Marshal(body{Seq: seq, Time: t.Format(timeLayout), Type: typ, Message: message, Prev: prev, Data: raw})
	if err != nil {
		return Record{}, fmt.Errorf("append %s record: %w", typ, err)
	}
	if len(bd) > MaxBody {
		return Record{}, fmt.Errorf("append %s record: body is %d bytes, over the 1 MiB cap", typ, len(bd))
	}
	file := Encode(bd, id.Sign(signDomain, bd))
	if err := vfs.WriteSealed(j.fsys, tmpDir, recordName(seq), file); err != nil {
		j.ready = false
		return Record{}, fmt.Errorf("append %s record %d: %w", typ, seq, err)
	}
	rec := Record{Seq: seq, Time: t, Type: typ, Message: message, Prev: prev, Data: raw, Hash: seal.Hash(file)}
	j.last, j.lastHash, j.lastTime = seq, rec.Hash, t
	if err := vfs.Replace(j.fsys, tmpDir, headName, head{seq, rec.Hash}.encode()); err != nil {
		return rec, fmt.Errorf("record %d written; update journal head: %w", seq, err)
	}
	return rec, nil
}

// prepare makes sure the directories exist and are durable, and that the
// last record is sealed and durable before anything is chained onto it. A
// record left by an Append that failed after its rename is adopted here when
// it continues the chain. j.mu held.
func (j *Journal) prepare() error {
	for _, d := range []string{dirName, stateDir, tmpDir} {
		if err := j.fsys.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := j.fsys.SyncDir("."); err != nil {
		return err
	}
	last, err := lastSeq(j.fsys)
	if err != nil {
		return err
	}
	switch {
	case last == j.last+1:
		rec, err := j.readRecord(last, &j.lastHash)
		if err != nil {
			return err
		}
		j.last, j.lastHash, j.lastTime = last, rec.Hash, rec.Time
	case last != j.last:
		return fmt.Errorf("%w: journal/ ends at record %d, expected %d", ErrDamaged, last, j.last)
	}
	if j.last > 0 {
		if err := j.fsys.Seal(recordName(j.last)); err != nil {
			return err
		}
		if err := j.fsys.SyncDir(dirName); err != nil {
			return err
		}
	}
	j.ready = true
	return nil
}

// Scan reads records 1 through the last one known, verifying each record's
// signature, seq and link to its predecessor, and calls fn for each good
// one. It stops at the first problem with an error wrapping ErrDamaged that
// names the record, or with fn's error. A file in journal/ that is not a
// record is damage too.
func (j *Journal) Scan(fn func(Record) error) error {
	j.mu.Lock()
	last, lastHash := j.last, j.lastHash
	j.mu.Unlock()

	ents, err := j.fsys.ReadDir(dirName)
	if err != nil && !(errors.Is(err, fs.ErrNotExist) && last == 0) {
		return fmt.Errorf("scan journal: %w", err)
	}
	for _, e := range ents {
		if _, ok := parseName(e.Name()); !ok || !e.Type().IsRegular() {
			return fmt.Errorf("%s/%s: %w: not a journal record", dirName, e.Name(), ErrDamaged)
		}
	}
	return j.scan(0, [seal.HashSize]byte{}, last, lastHash, fn)
}

// ScanFrom is Scan of only the records after record number after, whose
// hash the caller read before as afterHash (0 and the zero hash: from the
// start): what a reader that keeps up with a growing journal has not seen
// yet. Record after+1 must link to afterHash, so a journal changed under
// the reader is damage. Unlike Scan it does not list journal/.
func (j *Journal) ScanFrom(after uint64, afterHash [seal.HashSize]byte, fn func(Record) error) error {
	j.mu.Lock()
	last, lastHash := j.last, j.lastHash
	j.mu.Unlock()
	if after > last {
		return fmt.Errorf("scan journal: %w: it ends at record %d, before record %d that was read", ErrDamaged, last, after)
	}
	return j.scan(after, afterHash, last, lastHash, fn)
}

// scan reads records after+1 through last, the first linking to afterHash
// and the last having lastHash.
func (j *Journal) scan(after uint64, afterHash [seal.HashSize]byte, last uint64, lastHash [seal.HashSize]byte, fn func(Record) error) error {
	prev := afterHash
	for s := after + 1; s <= last; s++ {
		rec, err := j.readRecord(s, &prev)
		if err != nil {
			return err
		}
		if s == last && rec.Hash != lastHash {
			return damaged(s, errors.New("changed since the journal was opened"))
		}
		if err := fn(rec); err != nil {
			return err
		}
		prev = rec.Hash
	}
	return nil
}

// Verify checks the whole journal of the store rooted at fsys: every record
// from 1 to the highest present (signature, seq, chain), the head, and that
// journal/ holds nothing but records. It returns every problem found, each
// wrapping ErrDamaged unless it is an I/O error; nil means the journal is
// whole.
func Verify(fsys vfs.FS, identityPublic []byte) []error {
	if len(identityPublic) != 32 {
		return []error{errors.New("verify journal: identity public key must be 32 bytes")}
	}
	var problems []error
	ents, err := fsys.ReadDir(dirName)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return []error{fmt.Errorf("verify journal: %w", err)}
	}
	present := map[uint64]bool{}
	var last uint64
	for _, e := range ents {
		s, ok := parseName(e.Name())
		switch {
		case !ok:
			problems = append(problems, fmt.Errorf("%s/%s: %w: not a journal record name", dirName, e.Name(), ErrDamaged))
		case !e.Type().IsRegular():
			problems = append(problems, fmt.Errorf("%s/%s: %w: not a regular file", dirName, e.Name(), ErrDamaged))
		default:
			present[s] = true
			last = max(last, s)
		}
	}

	var prev *[seal.HashSize]byte
	hashes := map[uint64][seal.HashSize]byte{} // of every readable record
	for s := uint64(1); s <= last; s++ {
		if !present[s] {
			problems = append(problems, damaged(s, errors.New("missing")))
			prev = nil
			continue
		}
		b, err := readCapped(fsys, recordName(s), maxRecord)
		if err != nil {
			problems = append(problems, damaged(s, err))
			prev = nil
			continue
		}
		h := seal.Hash(b)
		if s == 1 {
			prev = &[seal.HashSize]byte{} // record 1 must have prev ""
		}
		if _, err := parseRecord(b, identityPublic, s, prev); err != nil {
			problems = append(problems, damaged(s, err))
		}
		prev, hashes[s] = &h, h
	}

	hd, ok, err := readHead(fsys)
	switch {
	case err != nil:
		problems = append(problems, err)
	case ok && hd.seq > last:
		problems = append(problems, fmt.Errorf("%s: %w: names record %d but the journal ends at record %d", headName, ErrDamaged, hd.seq, last))
	case ok:
		// A missing or unreadable record named by the head is reported above.
		if h, read := hashes[hd.seq]; read && h != hd.hash {
			problems = append(problems, fmt.Errorf("%s: %w: names record %d with a different hash", headName, ErrDamaged, hd.seq))
		}
	}
	return problems
}

// readRecord reads and checks record seq; prev as for parseRecord.
func (j *Journal) readRecord(seq uint64, prev *[seal.HashSize]byte) (Record, error) {
	b, err := readCapped(j.fsys, recordName(seq), maxRecord)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Record{}, damaged(seq, errors.New("missing"))
		}
		return Record{}, damaged(seq, err)
	}
	rec, err := parseRecord(b, j.pub, seq, prev)
	if err != nil {
		return Record{}, damaged(seq, err)
	}
	return rec, nil
}

// damaged names record seq in a problem: "record 3 (journal/…): journal
// damaged: bad signature".
func damaged(seq uint64, problem error) error {
	if errors.Is(problem, ErrDamaged) {
		return fmt.Errorf("record %d (%s): %w", seq, recordName(seq), problem)
	}
	return fmt.Errorf("record %d (%s): %w: %v", seq, recordName(seq), ErrDamaged, problem)
}

// lastSeq is the highest record number in journal/, 0 if none. Names that
// are not records are left to Verify.
func lastSeq(fsys vfs.FS) (uint64, error) {
	ents, err := fsys.ReadDir(dirName)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var last uint64
	for _, e := range ents {
		if s, ok := parseName(e.Name()); ok {
			last = max(last, s)
		}
	}
	return last, nil
}

func readHead(fsys vfs.FS) (head, bool, error) {
	b, err := readCapped(fsys, headName, maxHead)
	if errors.Is(err, fs.ErrNotExist) {
		// Only before the first record's head was written: no bound yet.
		return head{}, false, nil
	}
	if err != nil {
		return head{}, false, fmt.Errorf("%s: %w", headName, err)
	}
	h, err := parseHead(b)
	return h, err == nil, err
}

// checkHead compares the head with a journal ending at record last, whose
// hash is lastHash.
func checkHead(fsys vfs.FS, h head, last uint64, lastHash [seal.HashSize]byte) error {
	if h.seq > last {
		return fmt.Errorf("%s: %w: names record %d but the journal ends at record %d", headName, ErrDamaged, h.seq, last)
	}
	hash := lastHash
	if h.seq < last {
		b, err := readCapped(fsys, recordName(h.seq), maxRecord)
		if err != nil {
			return fmt.Errorf("%s: %w: names record %d: %v", headName, ErrDamaged, h.seq, err)
		}
		hash = seal.Hash(b)
	}
	if hash != h.hash {
		return fmt.Errorf("%s: %w: names record %d with a different hash", headName, ErrDamaged, h.seq)
	}
	return nil
}

// readCapped reads a whole file of at most limit bytes; a larger file is
// damage, refused before it is read.
func readCapped(fsys vfs.FS, name string, limit int) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrDamaged)
	}
	if fi.Size() > int64(limit) {
		return nil, fmt.Errorf("%w: %d bytes, over the %d cap", ErrDamaged, fi.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%w: over the %d cap", ErrDamaged, limit)
	}
	return b, nil
}
