// Package index is the store's cache of where every blob lives, kept in
// badger. It is the one place that opens badger, with every option written
// out. Nothing in it is authoritative: the packs are the truth, and Rebuild
// recreates the index from them alone.
//
// Keys: 'c' ‖ blob id → pack location; 'p' ‖ pack id → blob count;
// 'f' ‖ file key → file cache entry; 's' ‖ source chunk key → chunk id and
// length (format.md §9).
package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"drawbridge/vault/pack"
)

// ErrNotFound is returned when a blob is not in the index.
var ErrNotFound = errors.New("not in index")

// Index wraps badger.
type Index struct {
	db *badger.DB
}

// Open opens (creating) the index in dir.
func Open(dir string) (*Index, error) {
	if err := dropEmptyLogs(dir); err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	return open(badger.DefaultOptions(dir), 1<<10, 4<<20)
}

// dropEmptyLogs removes empty memtable (.mem) and value log (.vlog) files.
// Badger creates one on every open and whenever a memtable fills, then sizes
// it; a process killed in between leaves it empty. An empty one holds
// nothing, yet badger refuses to open a directory that has one
// (dgraph-io/badger#2207), which would stop every later command.
func dropEmptyLogs(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if ext := filepath.Ext(e.Name()); !e.Type().IsRegular() || ext != ".mem" && ext != ".vlog" {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// OpenMemory opens an index that lives only in memory (tests).
func OpenMemory() (*Index, error) {
	return open(badger.DefaultOptions("").WithInMemory(true), 1<<20, 8<<20)
}

// open sets every option; valueThreshold is the size above which values go
// to the value log (in memory there is none, so it must hold every value).
// Badger refuses a threshold above its largest write batch, 15% of
// memTable.
func open(o badger.Options, valueThreshold, memTable int64) (*Index, error) {
	o = o.
		WithSyncWrites(true). // an entry names a sealed pack only once it is durable
		WithChecksumVerificationMode(options.OnTableAndBlockRead).
		WithVerifyValueChecksum(true).
		WithCompression(options.None). // ids are random bytes
		WithDetectConflicts(false).    // one writer; batches never conflict
		WithMetricsEnabled(false).
		WithNumVersionsToKeep(1).
		WithNumGoroutines(2).
		WithNumCompactors(2).
		WithMemTableSize(memTable).
		WithNumMemtables(2).
		WithBaseTableSize(2 << 20).
		WithBaseLevelSize(10 << 20).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(8).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(64 << 20).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithBloomFalsePositive(0.01).
		WithCompactL0OnClose(false).
		WithLogger(logger{})
	db, err := badger.Open(o)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	return &Index{db: db}, nil
}

// Close flushes and closes the index.
func (x *Index) Close() error { return x.db.Close() }

func blobKey(id [32]byte) []byte { return append([]byte{'c'}, id[:]...) }
func packKey(id pack.ID) []byte  { return append([]byte{'p'}, id[:]...) }

// Lookup returns where a blob lives.
func (x *Index) Lookup(id [32]byte) (pack.Entry, error) {
	var e pack.Entry
	err := x.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(blobKey(id))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			e, err = pack.UnmarshalLocation(id, v)
			return err
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return e, ErrNotFound
	}
	if err != nil {
		return e, fmt.Errorf("index lookup %x: %w", id[:8], err)
	}
	return e, nil
}

// Has says whether a blob is indexed.
func (x *Index) Has(id [32]byte) (bool, error) {
	_, err := x.Lookup(id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// AddPack records every blob of a sealed pack, and the pack itself, in one
// synchronous batch.
func (x *Index) AddPack(id pack.ID, entries []pack.Entry) error {
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	for _, e := range entries {
		if err := wb.Set(blobKey(e.ID), e.MarshalLocation()); err != nil {
			return fmt.Errorf("index pack %s: %w", id, err)
		}
	}
	if err := wb.Set(packKey(id), binary.LittleEndian.AppendUint64(nil, uint64(len(entries)))); err != nil {
		return fmt.Errorf("index pack %s: %w", id, err)
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("index pack %s: %w", id, err)
	}
	return nil
}

// Packs returns every pack the index knows.
func (x *Index) Packs() (map[pack.ID]bool, error) {
	out := map[pack.ID]bool{}
	err := x.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = []byte{'p'}
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 1+len(pack.ID{}) {
				continue
			}
			var id pack.ID
			copy(id[:], k[1:])
			out[id] = true
		}
		return nil
	})
	return out, err
}

// Blobs calls fn for every indexed blob.
func (x *Index) Blobs(fn func(pack.Entry) error) error {
	return x.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte{'c'}
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 33 {
				return fmt.Errorf("index: bad key of %d bytes", len(k))
			}
			var id [32]byte
			copy(id[:], k[1:])
			var e pack.Entry
			err := it.Item().Value(func(v []byte) error {
				var err error
				e, err = pack.UnmarshalLocation(id, v)
				return err
			})
			if err != nil {
				return err
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// GetFile returns a file cache entry, or nil.
func (x *Index) GetFile(key []byte) ([]byte, error) { return x.get('f', key) }

// PutFiles stores file cache entries in one batch.
func (x *Index) PutFiles(entries map[string][]byte) error { return x.putAll('f', entries) }

type logger struct{}

func (logger) Errorf(f string, a ...any)   { slog.Error(fmt.Sprintf("index: "+f, a...)) }
func (logger) Warningf(f string, a ...any) { slog.Debug(fmt.Sprintf("index: "+f, a...)) }
func (logger) Infof(string, ...any)        {}
func (logger) Debugf(string, ...any)       {}

// DropAll empties the index.
func (x *Index) DropAll() error { return x.db.DropAll() }

// GetSourceChunk returns what a source's chunk hash maps to, or nil.
func (x *Index) GetSourceChunk(key []byte) ([]byte, error) { return x.get('s', key) }

// PutSourceChunks stores source chunk map entries in one batch.
func (x *Index) PutSourceChunks(entries map[string][]byte) error { return x.putAll('s', entries) }

// DeleteSourceChunks deletes source chunk map entries in one batch.
func (x *Index) DeleteSourceChunks(keys map[string]struct{}) error {
	if len(keys) == 0 {
		return nil
	}
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	for k := range keys {
		if err := wb.Delete(append([]byte{'s'}, k...)); err != nil {
			return fmt.Errorf("index: %w", err)
		}
	}
	return wb.Flush()
}

func (x *Index) get(prefix byte, key []byte) ([]byte, error) {
	var out []byte
	err := x.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(append([]byte{prefix}, key...))
		if err != nil {
			return err
		}
		out, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	return out, err
}

func (x *Index) putAll(prefix byte, entries map[string][]byte) error {
	if len(entries) == 0 {
		return nil
	}
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	for k, v := range entries {
		if err := wb.Set(append([]byte{prefix}, k...), v); err != nil {
			return fmt.Errorf("index: %w", err)
		}
	}
	return wb.Flush()
}
