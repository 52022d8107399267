package export

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"drawbridge/vault/journal"
	"drawbridge/vault/pack"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/vfs"
)

// A sealed export (docs/export-format.md, "Sealed export") is a store of its
// own on the drive: the chosen snapshots' reference lists, every pack they
// name copied whole and still encrypted, a key file without any private key
// but the passphrase-sealed one, and a journal of its own signed by the
// vault. drawbridge reads it with --store and the restore passphrase.
// store.json is written last: until it exists the directory is not a store,
// and IncompleteSealed says why.

// SealedReadme is the name of the text file a sealed export starts with.
const SealedReadme = "README-drawbridge.txt"

// MaxSealedSnapshots caps the snapshots of one sealed export, so that their
// list fits one journal record.
const MaxSealedSnapshots = 4096

// SealedOptions tune a sealed export.
type SealedOptions struct {
	Now      func() time.Time
	Progress func(n int64) // pack bytes copied; may be nil
	Total    func(n int64) // told the pack bytes to copy, before copying; may be nil
}

// SealedReport says what a sealed export wrote.
type SealedReport struct {
	Dir       string
	Snapshots []string // ids, in journal order
	Packs     int
	Bytes     int64 // bytes of the packs copied
	Seconds   float64
	// Record is H of the sealed-export record, the first of the copy's
	// journal, for the vault's own journal to name.
	Record string
}

// Sealed writes snaps of s (committed snapshots, from s.Snapshots) as a
// sealed export into target, which must be missing, empty, or hold only
// lost+found. It needs no passphrase: the reference lists name the packs,
// and nothing is decrypted.
func Sealed(ctx context.Context, s *store.Store, snaps []store.Snapshot, target string, o SealedOptions) (*SealedReport, error) {
	if len(snaps) == 0 || len(snaps) > MaxSealedSnapshots {
		return nil, fmt.Errorf("sealed export: choose 1 to %d snapshots", MaxSealedSnapshots)
	}
	id := s.Keys().Identity
	if !id.CanSign() {
		return nil, fmt.Errorf("sealed export: %w", journal.ErrReadOnly)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	start := time.Now()
	src := s.FS()
	want := map[string]bool{}
	for _, sn := range snaps {
		want[sn.ID] = true
	}

	// The snapshots' journal records, verbatim, and the packs they need.
	records := map[string]json.RawMessage{}
	var order []string
	err := s.Journal().Scan(func(r journal.Record) error {
		if r.Type != "snapshot" {
			return nil
		}
		var sn struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(r.Data, &sn) == nil && want[sn.ID] && records[sn.ID] == nil {
			records[sn.ID] = r.Data
			order = append(order, sn.ID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sealed export: read the journal: %w", err)
	}
	refs := map[string][]byte{}
	packSet := map[pack.ID]bool{}
	for _, sn := range snaps {
		if records[sn.ID] == nil {
			return nil, fmt.Errorf("sealed export: snapshot %s: %w", short(sn.ID), store.ErrNoSnapshot)
		}
		b, ids, err := readRefs(src, &sn)
		if err != nil {
			return nil, err
		}
		refs[sn.ID] = b
		for _, p := range ids {
			packSet[p] = true
		}
	}
	packs := make([]pack.ID, 0, len(packSet))
	for p := range packSet {
		packs = append(packs, p)
	}
	sort.Slice(packs, func(i, j int) bool { return packs[i].String() < packs[j].String() })
	info, err := readSmall(src, "store.json", 1<<20)
	if err != nil {
		return nil, fmt.Errorf("sealed export: read store.json: %w", err)
	}
	keys, err := s.Keys().MarshalPublic()
	if err != nil {
		return nil, fmt.Errorf("sealed export: %w", err)
	}

	if err := checkTarget(target); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return nil, fmt.Errorf("create export directory: %w", err)
	}
	fp := seal.Fingerprint(id.Public())
	if err := writeFile(filepath.Join(target, SealedReadme), []byte(sealedReadme(fp)), 0o644); err != nil {
		return nil, err
	}
	osfs, err := vfs.OS(target)
	if err != nil {
		return nil, err
	}
	defer vfs.Close(osfs)
	dst := driveFS{osfs}
	dirs := []string{"tmp", "state", "journal", "refs", "packs"}
	for _, p := range packs {
		dirs = append(dirs, path.Dir(p.Path()))
	}
	for _, d := range dirs {
		if err := dst.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("sealed export: %w", noSpace(err))
		}
	}
	for _, d := range []string{"packs", "."} {
		if err := dst.SyncDir(d); err != nil {
			return nil, fmt.Errorf("sealed export: %w", err)
		}
	}

	if o.Total != nil {
		var total int64
		for _, p := range packs {
			if fi, err := src.Stat(p.Path()); err == nil {
				total += fi.Size()
			}
		}
		o.Total(total)
	}
	rep := &SealedReport{Dir: target, Snapshots: order, Packs: len(packs)}
	files := map[string]string{} // name → hex H, for the sealed-export record
	for _, p := range packs {
		n, h, err := copyPack(ctx, src, dst, p, o.Progress)
		if err != nil {
			return nil, err
		}
		rep.Bytes += n
		files[p.Path()] = h
	}
	put := func(name string, b []byte) error {
		if err := vfs.WriteSealed(dst, "tmp", name, b); err != nil {
			return fmt.Errorf("sealed export: %w", noSpace(err))
		}
		h := seal.Hash(b)
		files[name] = hex.EncodeToString(h[:])
		return nil
	}
	for _, sid := range order {
		if err := put("refs/"+sid, refs[sid]); err != nil {
			return nil, err
		}
	}
	if err := put("keys.json", keys); err != nil {
		return nil, err
	}
	h := seal.Hash(info)
	files["store.json"] = hex.EncodeToString(h[:]) // written last, below

	jr, err := journal.Open(dst, id.Public())
	if err != nil {
		return nil, fmt.Errorf("sealed export: %w", err)
	}
	if last, _ := jr.Last(); last != 0 {
		return nil, fmt.Errorf("sealed export: %s already holds a journal", target)
	}
	var vault struct {
		VaultID string `json:"vault_id"`
	}
	json.Unmarshal(info, &vault)
	srcSeq, _ := s.Journal().Last()
	now := o.Now().UTC()
	msg := fmt.Sprintf("sealed export of %d snapshots (%d packs) from vault %s, identity %s", len(order), len(packs), vault.VaultID, fp)
	// The file list goes into as many records as it needs: a record body is
	// capped at 1 MiB, and an entry takes about 130 bytes.
	names := sortedNames(files)
	for part := 0; part == 0 || len(names) > 0; part++ {
		batch := names[:min(len(names), filesPerRecord)]
		names = names[len(batch):]
		fm := make(map[string]string, len(batch))
		for _, n := range batch {
			fm[n] = files[n]
		}
		data := map[string]any{"part": part + 1, "files": fm}
		m := fmt.Sprintf("sealed export, file list part %d", part+1)
		if part == 0 {
			data["vault_id"], data["identity"], data["snapshots"], data["vault_journal_seq"] = vault.VaultID, fp, order, srcSeq
			m = msg
		}
		rec, err := jr.Append(id, now, "sealed-export", m, data)
		if err != nil {
			return nil, fmt.Errorf("sealed export: %w", noSpace(err))
		}
		if part == 0 {
			rep.Record = hex.EncodeToString(rec.Hash[:])
		}
	}
	for _, sid := range order {
		var sn store.Snapshot
		json.Unmarshal(records[sid], &sn)
		m := fmt.Sprintf("snapshot %s of %s: %d files, %d bytes (exported)", short(sid), sn.Source, sn.Files, sn.Bytes)
		if _, err := jr.Append(id, now, "snapshot", m, records[sid]); err != nil {
			return nil, fmt.Errorf("sealed export: %w", noSpace(err))
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The commit point: from here on DIR is a store.
	if err := vfs.WriteSealed(dst, "tmp", "store.json", info); err != nil {
		return nil, fmt.Errorf("sealed export: %w", noSpace(err))
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// IncompleteSealed says whether dir holds a sealed export that was cut
// short: its README is there, store.json is not.
func IncompleteSealed(dir string) bool {
	if _, err := os.Lstat(filepath.Join(dir, SealedReadme)); err != nil {
		return false
	}
	_, err := os.Lstat(filepath.Join(dir, "store.json"))
	return errors.Is(err, fs.ErrNotExist)
}

// readRefs reads a snapshot's reference list and checks it against the
// hash its journal record holds (format.md §8).
func readRefs(fsys vfs.FS, sn *store.Snapshot) ([]byte, []pack.ID, error) {
	b, err := readSmall(fsys, "refs/"+sn.ID, 64<<20)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot %s: reference list: %w: %v", short(sn.ID), store.ErrDamaged, err)
	}
	h := seal.Hash(b)
	if hex.EncodeToString(h[:]) != sn.Refs {
		return nil, nil, fmt.Errorf("snapshot %s: %w: its reference list does not match its journal record", short(sn.ID), store.ErrDamaged)
	}
	var ids []pack.ID
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		p, err := pack.ParseID(line)
		if err != nil {
			return nil, nil, fmt.Errorf("snapshot %s: reference list: %w: %v", short(sn.ID), store.ErrDamaged, err)
		}
		ids = append(ids, p)
	}
	return b, ids, nil
}

// copyPack copies one pack file byte for byte, durably and sealed, and
// returns its size and hex H.
func copyPack(ctx context.Context, src, dst vfs.FS, p pack.ID, progress func(int64)) (int64, string, error) {
	in, err := src.OpenFile(p.Path(), os.O_RDONLY, 0)
	if err != nil {
		return 0, "", fmt.Errorf("pack %s: %w: %v", p, store.ErrDamaged, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return 0, "", fmt.Errorf("pack %s: %w", p, err)
	}
	if fi.Size() > pack.MaxPackSize {
		return 0, "", fmt.Errorf("pack %s: %w: %d bytes, over the pack limit", p, store.ErrDamaged, fi.Size())
	}
	out, err := vfs.Create(dst, "tmp")
	if err != nil {
		return 0, "", fmt.Errorf("sealed export: %w", noSpace(err))
	}
	h := seal.NewHash()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			out.Abort()
			return n, "", err
		}
		k, rerr := in.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, err := out.Write(buf[:k]); err != nil {
				out.Abort()
				return n, "", fmt.Errorf("copy pack %s: %w", p, noSpace(err))
			}
			n += int64(k)
			if progress != nil {
				progress(int64(k))
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			out.Abort()
			return n, "", fmt.Errorf("read pack %s: %w", p, rerr)
		}
	}
	if n != fi.Size() {
		out.Abort()
		return n, "", fmt.Errorf("pack %s changed while it was copied", p)
	}
	if err := out.Commit(p.Path()); err != nil {
		return n, "", fmt.Errorf("copy pack %s: %w", p, noSpace(err))
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// driveFS seals files where the drive's filesystem can, and goes on where
// it cannot: FAT through a FUSE driver has no chmod, and no USB filesystem
// but ext4 has the immutable flag. The copy's integrity rests on the hashes
// its signed journal holds, not on the flags.
type driveFS struct{ vfs.FS }

func (d driveFS) Seal(name string) error {
	err := d.FS.Seal(name)
	if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTTY) {
		return nil
	}
	return err
}

// filesPerRecord keeps a sealed-export record well under the 1 MiB cap.
const filesPerRecord = 4000

func sortedNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func readSmall(fsys vfs.FS, name string, limit int64) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func sealedReadme(fingerprint string) string {
	return `This drive holds a sealed Drawbridge export: a copy of chosen snapshots,
still encrypted, that only drawbridge with the vault's restore passphrase
can read. Nothing on it runs by itself.

  drawbridge snapshots --store DIR
  drawbridge verify    --store DIR      (checks every file against the
                                         vault's signed journal)
  drawbridge restore SNAP --store DIR --target EMPTY-DIR

where DIR is the folder holding this file. drawbridge writes a lock file
and an index (a cache) into DIR when it reads it.

The vault's identity key fingerprint is ` + fingerprint + `.
Compare it with the one the vault's console shows: the journal here is
signed with that key, and a doctored drive cannot carry that signature.

If store.json is missing next to this file, the export was interrupted
before it finished and holds no usable snapshot: export again to an empty
drive.

The packs are copied whole: a pack shared with a snapshot that was not
exported carries that snapshot's encrypted chunks too (readable, as chunks
without names, only with the restore passphrase).
`
}
