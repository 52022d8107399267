package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"drawbridge/vault/index"
	"drawbridge/vault/journal"
	"drawbridge/vault/pack"
	"drawbridge/vault/seal"
	"drawbridge/vault/tree"
)

// Problem is one piece of damage verify found.
type Problem struct {
	Pack      string   `json:"pack,omitempty"`
	Blob      string   `json:"blob,omitempty"`
	Snapshot  string   `json:"snapshot,omitempty"`
	Path      string   `json:"path,omitempty"`
	Message   string   `json:"message"`
	Snapshots []string `json:"affected_snapshots,omitempty"`
}

func (p Problem) String() string {
	s := ""
	switch {
	case p.Pack != "" && p.Blob != "":
		s = "pack " + p.Pack + " blob " + p.Blob + ": "
	case p.Pack != "":
		s = "pack " + p.Pack + ": "
	case p.Snapshot != "" && p.Path != "":
		s = "snapshot " + short(p.Snapshot) + " " + p.Path + ": "
	case p.Snapshot != "":
		s = "snapshot " + short(p.Snapshot) + ": "
	}
	s += p.Message
	if len(p.Snapshots) > 0 {
		s += " (affects snapshots"
		for _, id := range p.Snapshots {
			s += " " + short(id)
		}
		s += ")"
	}
	return s
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// VerifyReport is what Verify checked and found.
type VerifyReport struct {
	Packs      int       `json:"packs"`
	Blobs      int       `json:"blobs"`
	Records    int       `json:"journal_records"`
	Snapshots  int       `json:"snapshots"`
	DeepBlobs  int       `json:"deep_blobs,omitempty"`
	DeepFiles  int       `json:"deep_files,omitempty"`
	Problems   []Problem `json:"problems"`
	mu         sync.Mutex
	bad        map[[32]byte]bool
	packSnaps  map[pack.ID][]string
	seenTree   map[[32]byte]bool
	totalBytes int64
}

func (v *VerifyReport) add(p Problem) {
	v.mu.Lock()
	v.Problems = append(v.Problems, p)
	v.mu.Unlock()
}

// VerifyProgress reports verify's progress in pack bytes.
type VerifyProgress func(done, total int64)

// Verify checks every pack's outer checksums, the journal's chain and
// signatures, every snapshot's reference list, and the index against the
// packs. With a Reader it also decrypts and re-hashes every blob and walks
// every snapshot (a deep verify). It needs no passphrase otherwise.
func (s *Store) Verify(ctx context.Context, deep *Reader, progress VerifyProgress) (*VerifyReport, error) {
	v := &VerifyReport{bad: map[[32]byte]bool{}, packSnaps: map[pack.ID][]string{}, seenTree: map[[32]byte]bool{}}

	// The journal: every record, chain and signature.
	for _, err := range journal.Verify(s.fs, s.keys.Identity.Public()) {
		v.add(Problem{Message: "journal: " + err.Error()})
	}
	snaps, err := s.Snapshots()
	if err != nil && !errors.Is(err, journal.ErrDamaged) {
		return nil, err
	}
	v.Snapshots = len(snaps)
	last, _ := s.jr.Last()
	v.Records = int(last)

	// Which snapshots depend on which packs, from their reference lists.
	for i := range snaps {
		ids, err := s.snapshotPacks(&snaps[i])
		if err != nil {
			v.add(Problem{Snapshot: snaps[i].ID, Message: err.Error()})
			continue
		}
		for _, id := range ids {
			v.packSnaps[id] = append(v.packSnaps[id], snaps[i].ID)
		}
	}

	// A sealed export's journal names the hash of every file copied; the
	// outer checksums only catch damage, these catch tampering too.
	signed, err := s.sealedFiles()
	if err != nil {
		v.add(Problem{Message: "journal: " + err.Error()})
	}
	for name, want := range signed {
		if strings.HasPrefix(name, "packs/") {
			continue // checked below, as each pack is read
		}
		b, err := readSmall(s.fs, name, 64<<20)
		if err != nil {
			v.add(Problem{Message: fmt.Sprintf("%s: %v (a sealed export signed it)", name, err)})
		} else if h := seal.Hash(b); h != want {
			v.add(Problem{Message: name + ": differs from the file the sealed export signed"})
		}
	}

	// Every pack: outer checksums, without the passphrase.
	files, err := s.packFiles()
	if err != nil {
		return nil, err
	}
	onDisk := map[pack.ID]bool{}
	for _, id := range files {
		onDisk[id] = true
		if fi, err := s.fs.Stat(id.Path()); err == nil {
			v.totalBytes += fi.Size()
		}
	}
	indexed, err := s.idx.Packs()
	if err != nil {
		return nil, err
	}
	missing := map[pack.ID]bool{}
	for id := range indexed {
		if !onDisk[id] {
			missing[id] = true
		}
	}
	for id := range v.packSnaps {
		if !onDisk[id] {
			missing[id] = true
		}
	}
	for name := range signed {
		if id, ok := packOfPath(name); ok && !onDisk[id] {
			missing[id] = true
		}
	}
	for id := range missing {
		v.add(Problem{Pack: id.String(), Message: "pack is missing", Snapshots: v.packSnaps[id]})
	}

	good := map[pack.ID]map[uint64][32]byte{}
	var done int64
	for _, id := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, err := s.readPack(id)
		if err != nil {
			v.add(Problem{Pack: id.String(), Message: "cannot read: " + err.Error(), Snapshots: v.packSnaps[id]})
			continue
		}
		v.Packs++
		if want, ok := signed[id.Path()]; ok && seal.Hash(b) != want {
			v.add(Problem{Pack: id.String(), Message: "differs from the pack the sealed export signed", Snapshots: v.packSnaps[id]})
		} else if !ok && len(signed) > 0 {
			v.add(Problem{Pack: id.String(), Message: "is not one of the packs the sealed export signed"})
		}
		res := pack.Scan(id, b)
		offs := make(map[uint64][32]byte, len(res.Entries))
		for _, e := range res.Entries {
			offs[e.Offset] = e.ID
		}
		good[id] = offs
		v.Blobs += len(res.Entries)
		if res.BadHeader != nil {
			v.add(Problem{Pack: id.String(), Message: "header: " + res.BadHeader.Error(), Snapshots: v.packSnaps[id]})
		}
		for _, d := range res.Damage {
			v.add(Problem{Pack: id.String(), Message: fmt.Sprintf("bytes %d-%d: %v", d.Offset, d.Offset+d.Length, d.Err), Snapshots: v.packSnaps[id]})
		}
		if res.Truncated {
			v.add(Problem{Pack: id.String(), Message: "truncated: no valid trailer", Snapshots: v.packSnaps[id]})
		}
		if deep != nil {
			s.deepPack(ctx, deep, id, res, v)
		}
		done += int64(len(b))
		if progress != nil {
			progress(done, v.totalBytes)
		}
	}

	// The index against the packs: every entry must name a good record.
	badIndex := 0
	err = s.idx.Blobs(func(e pack.Entry) error {
		offs, ok := good[e.Pack]
		if !ok {
			if !missing[e.Pack] {
				badIndex++
			}
			return nil
		}
		if id, ok := offs[e.Offset]; !ok || id != e.ID {
			badIndex++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if badIndex > 0 {
		v.add(Problem{Message: fmt.Sprintf("index: %d entries name no valid blob (run 'drawbridge index rebuild' once the damage is dealt with)", badIndex)})
	}

	if deep != nil {
		for i := range snaps {
			s.deepSnapshot(ctx, deep, &snaps[i], v)
		}
	}
	return v, ctx.Err()
}

// deepPack decrypts and re-hashes every good blob of one pack.
func (s *Store) deepPack(ctx context.Context, r *Reader, id pack.ID, res *pack.ScanResult, v *VerifyReport) {
	if res.BadHeader != nil {
		for _, e := range res.Entries {
			v.bad[e.ID] = true
		}
		return
	}
	work := make(chan pack.Entry)
	var wg sync.WaitGroup
	for i := 0; i < s.workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for e := range work {
				var err error
				buf, err = r.blobAt(e, buf)
				v.mu.Lock()
				v.DeepBlobs++
				if err != nil {
					v.bad[e.ID] = true
					v.Problems = append(v.Problems, Problem{Pack: id.String(), Blob: hex.EncodeToString(e.ID[:]), Message: err.Error(), Snapshots: v.packSnaps[id]})
				}
				v.mu.Unlock()
			}
		}()
	}
	for _, e := range res.Entries {
		if ctx.Err() != nil {
			break
		}
		work <- e
	}
	close(work)
	wg.Wait()
}

// deepSnapshot walks one snapshot and checks that every tree decodes and
// every chunk it names is stored, readable and of the right length.
func (s *Store) deepSnapshot(ctx context.Context, r *Reader, sn *Snapshot, v *VerifyReport) {
	root, err := hex.DecodeString(sn.Root)
	if err != nil || len(root) != 32 {
		v.add(Problem{Snapshot: sn.ID, Message: "bad root tree id"})
		return
	}
	var id [32]byte
	copy(id[:], root)
	s.deepTree(ctx, r, sn, id, "/", v)
}

func (s *Store) deepTree(ctx context.Context, r *Reader, sn *Snapshot, id [32]byte, path string, v *VerifyReport) {
	if ctx.Err() != nil || v.seenTree[id] {
		return
	}
	v.seenTree[id] = true
	t, err := r.Tree(ctx, id)
	if err != nil {
		v.add(Problem{Snapshot: sn.ID, Path: path, Message: "directory unreadable: " + err.Error()})
		return
	}
	for _, e := range t.Entries {
		p := path + e.Name
		switch e.Kind {
		case tree.Dir:
			s.deepTree(ctx, r, sn, e.Subtree, p+"/", v)
		case tree.File:
			v.DeepFiles++
			if msg := s.checkFile(ctx, r, &e, v); msg != "" {
				v.add(Problem{Snapshot: sn.ID, Path: p, Message: msg})
			}
		}
	}
}

func (s *Store) checkFile(ctx context.Context, r *Reader, e *tree.Entry, v *VerifyReport) string {
	refs := e.Chunks
	if e.Layout == tree.LayoutIndirect {
		refs = nil
		for _, l := range e.Lists {
			lr, err := r.List(ctx, l)
			if err != nil {
				return "chunk list unreadable: " + err.Error()
			}
			refs = append(refs, lr...)
		}
	}
	var total uint64
	for _, c := range refs {
		total += c.Length
		if v.bad[c.ID] {
			return fmt.Sprintf("chunk %x is damaged", c.ID[:8])
		}
		loc, err := s.idx.Lookup(c.ID)
		if errors.Is(err, index.ErrNotFound) {
			return fmt.Sprintf("chunk %x is missing", c.ID[:8])
		}
		if err != nil {
			return err.Error()
		}
		if uint64(loc.Raw) != c.Length {
			return fmt.Sprintf("chunk %x has %d bytes, the tree says %d", c.ID[:8], loc.Raw, c.Length)
		}
	}
	if total != e.Size {
		return fmt.Sprintf("chunks add up to %d bytes, the file has %d", total, e.Size)
	}
	return ""
}

// Damaged says whether verify found anything wrong.
func (v *VerifyReport) Damaged() bool { return len(v.Problems) > 0 }

// Sort orders problems for stable output.
func (v *VerifyReport) Sort() {
	sort.SliceStable(v.Problems, func(i, j int) bool { return v.Problems[i].String() < v.Problems[j].String() })
}

// RebuildIndex recreates the index from the packs alone.
func (s *Store) RebuildIndex(ctx context.Context) (packs int, err error) {
	// The store is locked; the index is only a cache, so it is safe to drop.
	if err := s.idx.DropAll(); err != nil {
		return 0, err
	}
	n, err := s.indexUnknownPacks()
	if err != nil {
		return n, err
	}
	if !s.keys.Identity.CanSign() {
		return n, nil // a sealed export: read-only, its journal stays as signed
	}
	_, err = s.jr.Append(s.keys.Identity, s.now(), "index-rebuild", fmt.Sprintf("index rebuilt from %d packs", n), map[string]any{"packs": n})
	return n, err
}

// sealedFiles collects, from every sealed-export record of the journal, the
// files that export copied and the hash H of each (format.md §8).
func (s *Store) sealedFiles() (map[string][32]byte, error) {
	out := map[string][32]byte{}
	err := s.jr.Scan(func(r journal.Record) error {
		if r.Type != "sealed-export" {
			return nil
		}
		var d struct {
			Files map[string]string `json:"files"`
		}
		if err := json.Unmarshal(r.Data, &d); err != nil {
			return fmt.Errorf("record %d: bad sealed-export data: %w", r.Seq, err)
		}
		for name, hx := range d.Files {
			b, err := hex.DecodeString(hx)
			if err != nil || len(b) != 32 || !fs.ValidPath(name) {
				return fmt.Errorf("record %d: bad sealed-export file entry %q", r.Seq, name)
			}
			out[name] = [32]byte(b)
		}
		return nil
	})
	if errors.Is(err, journal.ErrDamaged) {
		err = nil // reported by journal.Verify
	}
	return out, err
}

// packOfPath returns the pack a name such as packs/ab/ab….pack stands for.
func packOfPath(name string) (pack.ID, bool) {
	rest, ok := strings.CutPrefix(name, "packs/")
	if !ok || len(rest) < 3 {
		return pack.ID{}, false
	}
	hx, ok := strings.CutSuffix(rest[3:], ".pack")
	if !ok {
		return pack.ID{}, false
	}
	id, err := pack.ParseID(hx)
	return id, err == nil && id.Path() == name
}
