package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"drawbridge/vault/journal"
	"drawbridge/vault/restore"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"

	"drawbridge/vault/units"
)

func cmdInit(_ context.Context, c *call) error {
	if len(c.args.pos) > 0 {
		return usagef("init takes no arguments")
	}
	dir, err := c.storeDir()
	if err != nil {
		return err
	}
	var minRet time.Duration
	if v := c.args.get("min-retention"); v != "" {
		if minRet, err = parseDuration(v); err != nil {
			return usagef("--min-retention %q: %v", v, err)
		}
	}
	pass, err := c.passphrase(true)
	if err != nil {
		return err
	}
	s, err := store.Init(dir, pass, store.InitOptions{MinRetention: minRet})
	if err != nil {
		return err
	}
	defer s.Close()
	info, keys := s.Info(), s.Keys()
	if c.jsonOut() {
		return writeJSON(c, map[string]any{"store": dir, "vault_id": info.VaultID,
			"identity": seal.Fingerprint(keys.Identity.Public()), "ssh_public_key": keys.SSHAuthorizedKey()})
	}
	w := c.env.Stdout
	fmt.Fprintf(w, "Created a Drawbridge store in %s\n", dir)
	fmt.Fprintf(w, "vault id:      %s\n", info.VaultID)
	fmt.Fprintf(w, "identity key:  %s\n", seal.Fingerprint(keys.Identity.Public()))
	fmt.Fprintf(w, "min retention: %s\n", minRet)
	fmt.Fprintln(w, "SSH client key (for the sources' authorized_keys):")
	fmt.Fprintln(w, keys.SSHAuthorizedKey())
	fmt.Fprintln(w, "Keep the restore passphrase safe: without it nothing stored can be read.")
	return nil
}

// parseDuration accepts Go durations plus d (days) and w (weeks).
func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseUint(n, 10, 32)
		return time.Duration(v) * 24 * time.Hour, err
	}
	if n, ok := strings.CutSuffix(s, "w"); ok {
		v, err := strconv.ParseUint(n, 10, 32)
		return time.Duration(v) * 7 * 24 * time.Hour, err
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		return 0, errors.New("must not be negative")
	}
	return d, err
}

func cmdBackup(ctx context.Context, c *call) error {
	source := c.args.get("source")
	if source == "" {
		return usagef("backup needs --source NAME")
	}
	if err := store.ValidSourceName(source); err != nil {
		return usagef("%v", err)
	}
	if len(c.args.pos) == 0 {
		return usagef("backup needs at least one PATH")
	}
	s, err := c.open()
	if err != nil {
		return err
	}
	defer s.Close()
	prog := &store.Progress{}
	var total atomic.Int64
	tty := !c.quiet() && isTerminal(c.env.Stderr)
	if tty {
		go func() { total.Store(scanSize(ctx, c.args.pos)) }()
	}
	b := startBar(c.env.Stderr, c.quiet(), "backup", prog.Bytes.Load, total.Load, func() string {
		return fmt.Sprintf("%d files", prog.Files.Load())
	})
	warn := func(path string, err error) {
		if !c.quiet() {
			fmt.Fprintf(c.env.Stderr, "\r\033[Kwarning: skipped %s: %v\n", path, err)
		}
	}
	snap, err := s.Backup(ctx, source, c.args.pos, store.BackupOptions{Progress: prog, Warn: warn})
	b.finish()
	if err != nil {
		return fmt.Errorf("backup failed, no snapshot was made: %w", err)
	}
	rate := 0.0
	if snap.Seconds > 0 {
		rate = float64(snap.Bytes) / 1e6 / snap.Seconds
	}
	if c.jsonOut() {
		return writeJSON(c, map[string]any{"id": snap.ID, "source": snap.Source, "time": snap.Time,
			"files": snap.Files, "dirs": snap.Dirs, "bytes": snap.Bytes, "new_bytes": snap.NewBytes,
			"stored_bytes": snap.StoredBytes, "errors": snap.Errors, "seconds": snap.Seconds, "mb_per_s": rate,
			"status": snap.Status})
	}
	w := c.env.Stdout
	fmt.Fprintf(w, "snapshot %s saved (source %s, %s)\n", snap.ID, snap.Source, snap.Status)
	fmt.Fprintf(w, "files %d, dirs %d, read %s, new %s, stored %s, %.2f s, %.1f MB/s\n",
		snap.Files, snap.Dirs, units.Bytes(snap.Bytes), units.Bytes(snap.NewBytes), units.Bytes(snap.StoredBytes), snap.Seconds, rate)
	if snap.Errors > 0 {
		return exitError{1, fmt.Sprintf("%d files could not be read; the snapshot is partial", snap.Errors)}
	}
	return nil
}

// scanSize adds up the sizes of the regular files under paths, for the ETA.
func scanSize(ctx context.Context, paths []string) int64 {
	var n int64
	for _, p := range paths {
		filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
	}
	return n
}

func cmdSnapshots(_ context.Context, c *call) error {
	if len(c.args.pos) > 0 {
		return usagef("snapshots takes no arguments")
	}
	s, err := c.openJournal()
	if err != nil {
		return err
	}
	defer s.Close()
	all, err := s.Snapshots()
	if err != nil {
		return err
	}
	src := c.args.get("source")
	list := make([]store.Snapshot, 0, len(all))
	for _, sn := range all {
		if src == "" || sn.Source == src {
			list = append(list, sn)
		}
	}
	if c.jsonOut() {
		return writeJSON(c, list)
	}
	tw := tabwriter.NewWriter(c.env.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tTIME\tFILES\tBYTES\tNEW\tSTATUS")
	for _, sn := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", sn.ID[:16], sn.Source, sn.Time.Local().Format("2006-01-02 15:04:05"),
			sn.Files, units.Bytes(sn.Bytes), units.Bytes(sn.NewBytes), sn.Status)
	}
	tw.Flush()
	fmt.Fprintf(c.env.Stdout, "%d snapshots\n", len(list))
	return nil
}

// snapRoot resolves SNAP[:PATH].
func snapRoot(s *store.Store, arg string) (*store.Snapshot, tree.ID, string, error) {
	name, path, _ := strings.Cut(arg, ":")
	sn, err := s.Find(name)
	if err != nil {
		return nil, tree.ID{}, "", err
	}
	var root tree.ID
	b, err := hex.DecodeString(sn.Root)
	if err != nil || len(b) != len(root) {
		return nil, root, "", fmt.Errorf("snapshot %s has a bad root id", sn.ID[:12])
	}
	copy(root[:], b)
	return sn, root, path, nil
}

func cmdLs(ctx context.Context, c *call) error {
	if len(c.args.pos) < 1 || len(c.args.pos) > 2 {
		return usagef("ls needs SNAP [PATH]")
	}
	s, err := c.open()
	if err != nil {
		return err
	}
	defer s.Close()
	_, root, path, err := snapRoot(s, c.args.pos[0])
	if err != nil {
		return err
	}
	if len(c.args.pos) == 2 {
		path = c.args.pos[1]
	}
	r, err := c.unlock(s)
	if err != nil {
		return err
	}
	defer r.Close()
	return listTree(ctx, c, r, root, path)
}

type lsEntry struct {
	Path   string    `json:"path"`
	Type   string    `json:"type"`
	Mode   string    `json:"mode"`
	Size   uint64    `json:"size"`
	Mtime  time.Time `json:"mtime"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Target string    `json:"target,omitempty"`
}

func listTree(ctx context.Context, c *call, r *store.Reader, root tree.ID, path string) error {
	start, prefix, err := walkTo(ctx, r, root, path)
	if err != nil {
		return err
	}
	out := c.env.Stdout
	first := true
	if c.jsonOut() {
		fmt.Fprint(out, "[")
	}
	emit := func(p string, e *tree.Entry) {
		le := lsEntry{Path: p, Type: e.Kind.String(), Mode: modeString(e), Size: e.Size,
			Mtime: time.Unix(e.MtimeSec, int64(e.MtimeNsec)).UTC(), UID: e.UID, GID: e.GID, Target: e.Target}
		if c.jsonOut() {
			b, _ := json.Marshal(le)
			if !first {
				fmt.Fprint(out, ",")
			}
			fmt.Fprintf(out, "\n%s", b)
		} else {
			line := fmt.Sprintf("%s %5d %5d %12d %s %s", le.Mode, e.UID, e.GID, e.Size, le.Mtime.Local().Format("2006-01-02 15:04:05"), strconv.Quote(p)[1:len(strconv.Quote(p))-1])
			if e.Kind == tree.Symlink {
				line += " -> " + e.Target
			}
			fmt.Fprintln(out, line)
		}
		first = false
	}
	var walk func(id tree.ID, p string) error
	walk = func(id tree.ID, p string) error {
		t, err := r.Tree(ctx, id)
		if err != nil {
			return err
		}
		for i := range t.Entries {
			e := &t.Entries[i]
			ep := p + "/" + e.Name
			emit(ep, e)
			if e.Kind == tree.Dir {
				if err := walk(e.Subtree, ep); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if start.Kind == tree.Dir {
		err = walk(start.Subtree, prefix)
	} else {
		emit(prefix, &start)
	}
	if c.jsonOut() {
		fmt.Fprintln(out, "\n]")
	}
	return err
}

// walkTo finds the entry at path inside the snapshot; the root itself is a
// directory entry.
func walkTo(ctx context.Context, r *store.Reader, root tree.ID, path string) (tree.Entry, string, error) {
	cur := tree.Entry{Kind: tree.Dir, Subtree: root}
	prefix := ""
	for _, part := range strings.Split(path, "/") {
		if part == "" || part == "." {
			continue
		}
		if cur.Kind != tree.Dir {
			return cur, "", fmt.Errorf("%s: not a directory in the snapshot", prefix)
		}
		t, err := r.Tree(ctx, cur.Subtree)
		if err != nil {
			return cur, "", err
		}
		found := false
		for _, e := range t.Entries {
			if e.Name == part {
				cur, found = e, true
				break
			}
		}
		prefix += "/" + part
		if !found {
			return cur, "", fmt.Errorf("%s: no such file in the snapshot", prefix)
		}
	}
	return cur, prefix, nil
}

func modeString(e *tree.Entry) string {
	m := fs.FileMode(e.Mode & 0o777)
	if e.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if e.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if e.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch e.Kind {
	case tree.Dir:
		m |= fs.ModeDir
	case tree.Symlink:
		m |= fs.ModeSymlink
	case tree.FIFO:
		m |= fs.ModeNamedPipe
	case tree.CharDev:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case tree.BlockDev:
		m |= fs.ModeDevice
	case tree.Socket:
		m |= fs.ModeSocket
	}
	return m.String()
}

// reading is a snapshot opened for reading: SNAP[:PATH] resolved, the
// store unlocked with the restore passphrase, and the DIR the command
// writes to.
type reading struct {
	s    *store.Store
	sn   *store.Snapshot
	root tree.ID
	path string
	r    *store.Reader
	dir  string
}

func (rd *reading) close() {
	rd.r.Close()
	rd.s.Close()
}

// openReading checks `VERB SNAP[:PATH] --FLAG DIR`, opens the store, finds
// the snapshot and unlocks it.
func (c *call) openReading(verb, flag string) (*reading, error) {
	if len(c.args.pos) != 1 {
		return nil, usagef("%s needs SNAP[:PATH]", verb)
	}
	dir := c.args.get(flag)
	if dir == "" {
		return nil, usagef("%s needs --%s DIR", verb, flag)
	}
	s, err := c.open()
	if err != nil {
		return nil, err
	}
	sn, root, path, err := snapRoot(s, c.args.pos[0])
	if err != nil {
		s.Close()
		return nil, err
	}
	r, err := c.unlock(s)
	if err != nil {
		s.Close()
		return nil, err
	}
	return &reading{s: s, sn: sn, root: root, path: path, r: r, dir: dir}, nil
}

func cmdRestore(ctx context.Context, c *call) error {
	rd, err := c.openReading("restore", "target")
	if err != nil {
		return err
	}
	defer rd.close()
	sn, root, path, r, target := rd.sn, rd.root, rd.path, rd.r, rd.dir
	var done atomic.Int64
	b := startBar(c.env.Stderr, c.quiet(), "restore", done.Load, func() int64 { return sn.Bytes }, nil)
	rep, err := restore.Restore(ctx, r, root, path, target, restore.Options{
		Owners:   os.Geteuid() == 0,
		Progress: func(n int64) { done.Add(n) },
	})
	b.finish()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, d := range rep.Damaged {
		fmt.Fprintf(c.env.Stderr, "damaged: %s: %v\n", d.Path, d.Err)
	}
	if c.jsonOut() {
		dam := []map[string]string{}
		for _, d := range rep.Damaged {
			dam = append(dam, map[string]string{"path": d.Path, "error": d.Err.Error()})
		}
		if err := writeJSON(c, map[string]any{"snapshot": sn.ID, "files": rep.Files, "dirs": rep.Dirs,
			"bytes": rep.Bytes, "damaged": dam}); err != nil {
			return err
		}
	} else if !c.quiet() {
		fmt.Fprintf(c.env.Stdout, "restored snapshot %s to %s: %d files, %d dirs, %s\n", sn.ID[:12], target, rep.Files, rep.Dirs, units.Bytes(rep.Bytes))
	}
	if len(rep.Damaged) > 0 {
		return exitError{1, fmt.Sprintf("%d entries could not be restored intact; every other file was restored", len(rep.Damaged))}
	}
	return nil
}

func cmdVerify(ctx context.Context, c *call) error {
	if len(c.args.pos) > 0 {
		return usagef("verify takes no arguments")
	}
	s, err := c.open()
	if err != nil {
		return err
	}
	defer s.Close()
	var r *store.Reader
	if c.args.has("deep") {
		if r, err = c.unlock(s); err != nil {
			return err
		}
		defer r.Close()
	}
	var done, total atomic.Int64
	b := startBar(c.env.Stderr, c.quiet(), "verify", done.Load, total.Load, nil)
	rep, err := s.Verify(ctx, r, func(d, t int64) { done.Store(d); total.Store(t) })
	b.finish()
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	rep.Sort()
	if c.jsonOut() {
		if rep.Problems == nil {
			rep.Problems = []store.Problem{}
		}
		if err := writeJSON(c, rep); err != nil {
			return err
		}
	} else {
		for _, p := range rep.Problems {
			fmt.Fprintf(c.env.Stdout, "DAMAGE %s\n", p)
		}
		kind := "verify"
		if r != nil {
			kind = "deep verify"
		}
		fmt.Fprintf(c.env.Stdout, "%s: %d packs, %d blobs, %d journal records, %d snapshots", kind, rep.Packs, rep.Blobs, rep.Records, rep.Snapshots)
		if r != nil {
			fmt.Fprintf(c.env.Stdout, ", %d blobs decrypted, %d files checked", rep.DeepBlobs, rep.DeepFiles)
		}
		fmt.Fprintf(c.env.Stdout, ": %d problems\n", len(rep.Problems))
	}
	if rep.Damaged() {
		return exitError{1, fmt.Sprintf("damage found (%d problems)", len(rep.Problems))}
	}
	return nil
}

func cmdJournal(_ context.Context, c *call) error {
	if len(c.args.pos) > 0 {
		return usagef("journal takes no arguments")
	}
	s, err := c.openJournal()
	if err != nil {
		return err
	}
	defer s.Close()
	enc := json.NewEncoder(c.env.Stdout)
	err = s.Journal().Scan(func(r journal.Record) error {
		if c.jsonOut() {
			return enc.Encode(map[string]any{"seq": r.Seq, "time": r.Time, "type": r.Type, "message": r.Message,
				"hash": hex.EncodeToString(r.Hash[:]), "data": r.Data})
		}
		_, err := fmt.Fprintf(c.env.Stdout, "%6d  %s  %-14s %s\n", r.Seq, r.Time.Local().Format("2006-01-02 15:04:05"), r.Type, r.Message)
		return err
	})
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

func cmdIndex(ctx context.Context, c *call) error {
	if len(c.args.pos) != 1 || c.args.pos[0] != "rebuild" {
		return usagef("the index command is: index rebuild")
	}
	s, err := c.open()
	if err != nil {
		return err
	}
	defer s.Close()
	n, err := s.RebuildIndex(ctx)
	if err != nil {
		return fmt.Errorf("index rebuild: %w", err)
	}
	if c.jsonOut() {
		return writeJSON(c, map[string]any{"packs": n})
	}
	fmt.Fprintf(c.env.Stdout, "index rebuilt from %d packs\n", n)
	return nil
}

func writeJSON(c *call, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.env.Stdout, "%s\n", b)
	return err
}
