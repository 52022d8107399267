package store

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"drawbridge/vault/journal"
	"drawbridge/vault/pack"
	"drawbridge/vault/seal"
	"drawbridge/vault/vfs"
)

// commit writes the snapshot's reference list and then its journal record:
// the moment that record is durable the snapshot exists.
func (w *Writer) commit(root [32]byte, paths []string) (*Snapshot, error) {
	s, b, start := w.s, w, w.start
	now := s.now()
	if now.Before(start) {
		now = start
	}
	ids := make([]string, 0, len(b.in.used))
	for p := range b.in.used {
		ids = append(ids, p.String())
	}
	sort.Strings(ids)
	refs := []byte(strings.Join(ids, "\n") + "\n")
	if len(ids) == 0 {
		refs = nil
	}
	rootHex := hex.EncodeToString(root[:])
	tb, _ := now.MarshalText()
	sid := seal.Hash([]byte(b.source), []byte{0}, []byte(rootHex), []byte{0}, tb)
	snap := &Snapshot{
		ID:          hex.EncodeToString(sid[:]),
		Source:      b.source,
		Time:        now,
		Root:        rootHex,
		Paths:       paths,
		Files:       b.prog.Files.Load(),
		Dirs:        b.prog.Dirs.Load(),
		Bytes:       b.prog.Bytes.Load(),
		NewBytes:    b.in.newBytes.Load(),
		StoredBytes: b.in.storedBytes.Load(),
		Errors:      b.errors.Load(),
		Seconds:     now.Sub(start).Seconds(),
		Status:      "ok",
		Kind:        b.origin.Kind,
		Host:        b.origin.Host,
		HostKey:     b.origin.HostKey,
	}
	if snap.Kind == "" {
		snap.Kind = "local"
	}
	if snap.Errors > 0 {
		snap.Status = "partial"
	}
	rh := seal.Hash(refs)
	snap.Refs = hex.EncodeToString(rh[:])
	if err := vfs.WriteSealed(s.fs, tmpDir, refsPath(snap.ID), refs); err != nil {
		return nil, fmt.Errorf("write snapshot references: %w", err)
	}
	msg := fmt.Sprintf("snapshot %s of %s: %d files, %d bytes, %d new", snap.ID[:12], snap.Source, snap.Files, snap.Bytes, snap.NewBytes)
	rec, err := s.jr.Append(s.keys.Identity, now, "snapshot", msg, snap)
	if err != nil && rec.Seq == 0 {
		return nil, fmt.Errorf("commit snapshot: %w", err)
	}
	if err != nil {
		// The record is durable, so the snapshot exists; only the journal
		// head, a lower bound the next append rewrites, lags behind.
		s.log.Warn("snapshot committed; journal head not updated", "snapshot", snap.ID[:12], "err", err)
	}
	snap.Seq = rec.Seq
	b.commitSourceChunks()
	if err := s.idx.PutFiles(b.cache); err != nil {
		s.log.Warn("file cache not updated; the next backup reads every file", "err", err)
	}
	return snap, nil
}

func refsPath(id string) string { return refsDir + "/" + id }

// Snapshots lists committed snapshots, oldest first, from the journal. It
// stops with an error at the first damaged journal record.
func (s *Store) Snapshots() ([]Snapshot, error) {
	var out []Snapshot
	err := s.jr.Scan(func(r journal.Record) error {
		if r.Type != "snapshot" {
			return nil
		}
		var sn Snapshot
		if err := json.Unmarshal(r.Data, &sn); err != nil {
			return fmt.Errorf("journal record %d: bad snapshot data: %w", r.Seq, err)
		}
		sn.Seq = r.Seq
		out = append(out, sn)
		return nil
	})
	if err != nil {
		return out, err
	}
	return out, nil
}

// Find resolves a snapshot name: an id prefix of at least 8 hex digits,
// "latest", or "SOURCE/latest".
func (s *Store) Find(name string) (*Snapshot, error) {
	all, err := s.Snapshots()
	if err != nil {
		return nil, err
	}
	return FindIn(all, name)
}

// FindIn resolves a snapshot name among snaps.
func FindIn(snaps []Snapshot, name string) (*Snapshot, error) {
	if name == "latest" || strings.HasSuffix(name, "/latest") {
		src := strings.TrimSuffix(strings.TrimSuffix(name, "latest"), "/")
		for i := len(snaps) - 1; i >= 0; i-- {
			if src == "" || snaps[i].Source == src {
				return &snaps[i], nil
			}
		}
		return nil, fmt.Errorf("%w: %s", ErrNoSnapshot, name)
	}
	if len(name) < 8 {
		return nil, fmt.Errorf("snapshot %q: give at least 8 hex digits of its id, or latest", name)
	}
	if _, err := hex.DecodeString(name[:len(name)&^1]); err != nil {
		return nil, fmt.Errorf("snapshot %q: not a hex id", name)
	}
	var found *Snapshot
	for i := range snaps {
		if strings.HasPrefix(snaps[i].ID, strings.ToLower(name)) {
			if found != nil {
				return nil, fmt.Errorf("%w: %s", ErrAmbiguous, name)
			}
			found = &snaps[i]
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoSnapshot, name)
	}
	return found, nil
}

// snapshotPacks reads a snapshot's reference list and checks it against
// the hash its journal record holds.
func (s *Store) snapshotPacks(sn *Snapshot) ([]pack.ID, error) {
	b, err := readSmall(s.fs, refsPath(sn.ID), 64<<20)
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot %s: reference list: %v", ErrDamaged, sn.ID[:12], err)
	}
	h := seal.Hash(b)
	if hex.EncodeToString(h[:]) != sn.Refs {
		return nil, fmt.Errorf("%w: snapshot %s: reference list does not match its journal record", ErrDamaged, sn.ID[:12])
	}
	var out []pack.ID
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		id, err := pack.ParseID(line)
		if err != nil {
			return nil, fmt.Errorf("%w: snapshot %s: reference list: %v", ErrDamaged, sn.ID[:12], err)
		}
		out = append(out, id)
	}
	return out, nil
}

var errStop = errors.New("stop")
