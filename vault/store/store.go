// Package store ties the store's parts together and is the API the rest of
// Drawbridge uses: Init and Open a store directory, Backup local paths as a
// snapshot, list snapshots from the journal, Unlock a Reader with the
// restore passphrase, Verify, and rebuild the index.
//
// Invariants: sealed files (packs, journal records, snapshot reference
// lists, store.json, keys.json) are written once through vfs and never
// changed; a snapshot exists exactly when its journal record is durable;
// everything an index entry names is already durable.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"drawbridge/vault/chunk"
	"drawbridge/vault/index"
	"drawbridge/vault/journal"
	"drawbridge/vault/pack"
	"drawbridge/vault/seal"
	"drawbridge/vault/vfs"
)

// Sentinel errors callers branch on.
var (
	ErrDamaged    = errors.New("damage found")
	ErrNotAStore  = errors.New("not a drawbridge store")
	ErrNotEmpty   = errors.New("directory is not empty")
	ErrBusy       = errors.New("the store is in use by another drawbridge process")
	ErrNoSnapshot = errors.New("no such snapshot")
	ErrAmbiguous  = errors.New("snapshot prefix is ambiguous")
)

// Version is the store format version this code reads and writes.
const Version = 1

const (
	infoFile = "store.json"
	keysFile = "keys.json"
	tmpDir   = "tmp"
	refsDir  = "refs"
)

// Info is store.json.
type Info struct {
	Format              string       `json:"format"`
	Version             int          `json:"version"`
	VaultID             string       `json:"vault_id"`
	Created             time.Time    `json:"created"`
	MinRetentionSeconds int64        `json:"min_retention_seconds"`
	Chunker             chunk.Params `json:"chunker"`
	PackTarget          int          `json:"pack_target"`
}

// Options configure Open.
type Options struct {
	// FS is the filesystem seam; nil means the real directory.
	FS vfs.FS
	// MemoryIndex keeps the index in memory (tests through a fake FS).
	MemoryIndex bool
	// Clock gives the time; nil means time.Now.
	Clock func() time.Time
	// Workers is the number of ingest workers; 0 means GOMAXPROCS.
	Workers int
	// Log receives diagnostics; nil means slog.Default().
	Log *slog.Logger
	// JournalOnly opens just enough to read the journal and the snapshot
	// list: no lock, no index, nothing written. It works while another
	// process (the daemon) holds the store.
	JournalOnly bool
}

// Store is an open store.
type Store struct {
	dir     string
	fs      vfs.FS
	info    Info
	keys    *seal.Keys
	idx     *index.Index
	jr      *journal.Journal
	lock    *os.File
	ownFS   bool // fs was opened here from dir, and Close closes it
	clock   func() time.Time
	workers int
	log     *slog.Logger
}

// InitOptions configure Init.
type InitOptions struct {
	Options
	MinRetention time.Duration
	KDF          seal.KDFParams
	PackTarget   int
}

// Init creates a new store in dir, which must be missing or empty.
func Init(dir string, passphrase []byte, o InitOptions) (*Store, error) {
	fsys := o.FS
	if fsys == nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create store directory: %w", err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("read store directory: %w", err)
		}
		if len(ents) > 0 {
			return nil, fmt.Errorf("init %s: %w", dir, ErrNotEmpty)
		}
		fsys, err = vfs.OS(dir)
		if err != nil {
			return nil, err
		}
		defer vfs.Close(fsys) // Open below opens the directory again
	}
	if o.KDF == (seal.KDFParams{}) {
		o.KDF = seal.DefaultKDF
	}
	if o.PackTarget == 0 {
		o.PackTarget = 16 << 20
	}
	clock := o.Clock
	if clock == nil {
		clock = time.Now
	}
	keys, err := seal.NewKeys(passphrase, o.KDF)
	if err != nil {
		return nil, err
	}
	vid, err := pack.NewID()
	if err != nil {
		return nil, err
	}
	info := Info{Format: "drawbridge-store", Version: Version, VaultID: vid.String(), Created: clock().UTC(),
		MinRetentionSeconds: int64(o.MinRetention / time.Second), Chunker: chunk.Default, PackTarget: o.PackTarget}
	for _, d := range []string{tmpDir, "state", "journal", refsDir, "packs"} {
		if err := fsys.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
	}
	for i := 0; i < 256; i++ {
		if err := fsys.MkdirAll(fmt.Sprintf("packs/%02x", i), 0o700); err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
	}
	if err := fsys.SyncDir("packs"); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if err := fsys.SyncDir("."); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	kb, err := keys.Marshal()
	if err != nil {
		return nil, err
	}
	if err := vfs.WriteSealed(fsys, tmpDir, keysFile, kb); err != nil {
		return nil, fmt.Errorf("write key file: %w", err)
	}
	ib, _ := json.MarshalIndent(info, "", "  ")
	// store.json last: a directory without it is not a store yet.
	if err := vfs.WriteSealed(fsys, tmpDir, infoFile, ib); err != nil {
		return nil, fmt.Errorf("write store.json: %w", err)
	}
	s, err := Open(dir, o.Options)
	if err != nil {
		return nil, err
	}
	if _, err := s.jr.Append(s.keys.Identity, s.now(), "init", "store created", map[string]any{
		"vault_id": info.VaultID, "identity": seal.Fingerprint(keys.Identity.Public()),
		"min_retention_seconds": info.MinRetentionSeconds}); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Open opens an existing store for reading and writing.
func Open(dir string, o Options) (*Store, error) {
	fsys := o.FS
	s := &Store{dir: dir, clock: o.Clock, workers: o.Workers, log: o.Log}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.workers <= 0 {
		s.workers = runtime.GOMAXPROCS(0)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if fsys == nil {
		if _, err := os.Stat(filepath.Join(dir, infoFile)); err != nil {
			return nil, fmt.Errorf("open %s: %w", dir, ErrNotAStore)
		}
		var err error
		if fsys, err = vfs.OS(dir); err != nil {
			return nil, err
		}
		s.fs, s.ownFS = fsys, true
		if !o.JournalOnly {
			if s.lock, err = lockDir(dir); err != nil {
				s.Close()
				return nil, err
			}
		}
	}
	s.fs = fsys
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	var err error
	if o.JournalOnly {
		if s.jr, err = journal.Open(fsys, s.keys.Identity.Public()); err != nil {
			return nil, fmt.Errorf("open journal: %w", err)
		}
		return s, nil
	}
	if o.MemoryIndex || o.FS != nil {
		s.idx, err = index.OpenMemory()
	} else {
		s.idx, err = index.Open(filepath.Join(dir, "index"))
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	if s.jr, err = journal.Open(fsys, s.keys.Identity.Public()); err != nil {
		s.Close()
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if err := s.cleanTmp(); err != nil {
		s.Close()
		return nil, err
	}
	if _, err := s.indexUnknownPacks(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
	ib, err := readSmall(s.fs, infoFile, 1<<20)
	if err != nil {
		return fmt.Errorf("open store: %w: %v", ErrNotAStore, err)
	}
	if err := json.Unmarshal(ib, &s.info); err != nil || s.info.Format != "drawbridge-store" {
		return fmt.Errorf("open store: %w: bad store.json", ErrNotAStore)
	}
	if s.info.Version != Version {
		return fmt.Errorf("open store: format version %d is not supported (this drawbridge reads %d)", s.info.Version, Version)
	}
	if err := s.info.Chunker.Validate(); err != nil {
		return fmt.Errorf("open store: store.json chunker: %w", err)
	}
	if s.info.PackTarget < 1<<20 || s.info.PackTarget > pack.MaxPackSize/2 {
		return fmt.Errorf("open store: store.json pack_target %d out of range", s.info.PackTarget)
	}
	kb, err := readSmall(s.fs, keysFile, seal.MaxKeyFile)
	if err != nil {
		return fmt.Errorf("open store: read key file: %w", err)
	}
	if s.keys, err = seal.ParseKeys(kb); err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	return nil
}

func readSmall(fsys vfs.FS, name string, max int64) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, max)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil && fi.Size() > 0 {
		return nil, err
	}
	return b, nil
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock store: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, fmt.Errorf("lock store: %w", err)
	}
	return f, nil
}

// cleanTmp removes leftovers of writes a crash interrupted.
func (s *Store) cleanTmp() error {
	ents, err := s.fs.ReadDir(tmpDir)
	if errors.Is(err, fs.ErrNotExist) {
		return s.fs.MkdirAll(tmpDir, 0o700)
	}
	if err != nil {
		return fmt.Errorf("list tmp: %w", err)
	}
	for _, e := range ents {
		if err := s.fs.Remove(tmpDir + "/" + e.Name()); err != nil {
			s.log.Warn("cannot remove leftover temporary file", "name", e.Name(), "err", err)
		}
	}
	return nil
}

// packFiles lists every pack file in the store.
func (s *Store) packFiles() ([]pack.ID, error) {
	var out []pack.ID
	fans, err := s.fs.ReadDir("packs")
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	for _, fan := range fans {
		if !fan.IsDir() {
			continue
		}
		ents, err := s.fs.ReadDir("packs/" + fan.Name())
		if err != nil {
			return nil, fmt.Errorf("list packs: %w", err)
		}
		for _, e := range ents {
			name, ok := strings.CutSuffix(e.Name(), ".pack")
			if !ok {
				continue
			}
			id, err := pack.ParseID(name)
			if err != nil || id.String()[:2] != fan.Name() {
				continue
			}
			out = append(out, id)
		}
	}
	return out, nil
}

// readPack reads a whole pack file, capped.
func (s *Store) readPack(id pack.ID) ([]byte, error) {
	return readSmall(s.fs, id.Path(), pack.MaxPackSize)
}

// indexUnknownPacks adds every pack on disk that the index does not know:
// packs sealed by a writer that crashed before indexing them, or all of
// them after the index was deleted.
func (s *Store) indexUnknownPacks() (int, error) {
	known, err := s.idx.Packs()
	if err != nil {
		return 0, err
	}
	ids, err := s.packFiles()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if known[id] {
			continue
		}
		// A crash between a pack's rename and its seal leaves it complete
		// but writable: seal it now (sealing twice is harmless).
		if err := s.fs.Seal(id.Path()); err != nil {
			s.log.Warn("cannot seal pack", "pack", id, "err", err)
		}
		b, err := s.readPack(id)
		if err != nil {
			s.log.Warn("cannot read pack", "pack", id, "err", err)
			continue
		}
		res := pack.Scan(id, b)
		if res.Damaged() {
			s.log.Warn("pack is damaged; indexing its good blobs", "pack", id)
		}
		if err := s.idx.AddPack(id, res.Entries); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Close releases the store.
func (s *Store) Close() error {
	var err error
	if s.idx != nil {
		err = s.idx.Close()
		s.idx = nil
	}
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	if s.ownFS {
		vfs.Close(s.fs)
		s.ownFS = false
	}
	return err
}

func (s *Store) now() time.Time { return s.clock().UTC() }

// Info returns store.json.
func (s *Store) Info() Info { return s.info }

// Keys returns the store's plain keys.
func (s *Store) Keys() *seal.Keys { return s.keys }

// Journal returns the store's journal.
func (s *Store) Journal() *journal.Journal { return s.jr }

// FS returns the filesystem seam the store writes through.
func (s *Store) FS() vfs.FS { return s.fs }
