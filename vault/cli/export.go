package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"drawbridge/vault/export"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"

	"drawbridge/vault/units"
)

// cmdExport writes the plain-file export of DESIGN.md §7.
func cmdExport(ctx context.Context, c *call) error {
	if c.args.has("sealed") {
		return cmdExportSealed(ctx, c)
	}
	rd, err := c.openReading("export", "to")
	if err != nil {
		return err
	}
	defer rd.close()
	s, sn, root, path, r, to := rd.s, rd.sn, rd.root, rd.path, rd.r, rd.dir

	verifiers := c.args.get("verifiers")
	if verifiers == "" {
		verifiers = defaultVerifiers()
	}
	keys := s.Keys()
	if !keys.Identity.CanSign() {
		return exitError{1, "this store is a sealed export: it holds no signing key, so it cannot sign a plain export's MANIFEST; restore from it instead"}
	}
	var done atomic.Int64
	b := startBar(c.env.Stderr, c.quiet(), "export", done.Load, func() int64 { return sn.Bytes }, nil)
	rep, err := export.Export(ctx, r, root, path, to, export.Snapshot{
		VaultID: s.Info().VaultID, ID: sn.ID, Source: sn.Source, Time: sn.Time,
	}, export.Options{
		Identity:  keys.Identity,
		Verifiers: verifiers,
		Owners:    os.Geteuid() == 0,
		Progress:  func(n int64) { done.Add(n) },
	})
	b.finish()
	if err != nil {
		if errors.Is(err, export.ErrTargetNotEmpty) {
			return exitError{1, fmt.Sprintf("%v: export needs a missing or empty directory", err)}
		}
		return fmt.Errorf("export failed, the export has no MANIFEST and will not verify: %w", err)
	}
	for _, p := range rep.NotExported {
		fmt.Fprintf(c.env.Stderr, "not exported: %s: %s\n", p.Path, p.Reason)
	}
	for _, p := range rep.Damaged {
		fmt.Fprintf(c.env.Stderr, "damaged: %s: %s\n", p.Path, p.Reason)
	}
	if len(rep.Verifiers) == 0 && !c.quiet() {
		fmt.Fprintf(c.env.Stderr, "warning: no drawbridge-verify builds found in %q (give --verifiers DIR; `make build` puts them in bin/verify): the export carries no verifier, its README.txt says how to get one\n", verifiers)
	}
	rate := 0.0
	if rep.Seconds > 0 {
		rate = float64(rep.Bytes) / 1e6 / rep.Seconds
	}
	data := map[string]any{"snapshot": sn.ID, "target": to, "path": "/" + path, "entries": rep.Entries,
		"files": rep.Files, "dirs": rep.Dirs, "bytes": rep.Bytes, "not_exported": len(rep.NotExported),
		"damaged": len(rep.Damaged), "manifest_sha256": rep.ManifestSHA256}
	msg := fmt.Sprintf("snapshot %s exported to %s: %d files, %d bytes, %d not exported", sn.ID[:12], to, rep.Files, rep.Bytes, len(rep.NotExported))
	if _, err := s.Journal().Append(keys.Identity, time.Now().UTC(), "export", msg, data); err != nil {
		fmt.Fprintf(c.env.Stderr, "warning: the export was not journaled: %v\n", err)
	}
	if c.jsonOut() {
		ne := []map[string]string{}
		for _, p := range rep.NotExported {
			ne = append(ne, map[string]string{"path": p.Path, "reason": p.Reason})
		}
		data["not_exported"] = ne
		data["dir"] = rep.Dir
		data["identity"] = seal.Fingerprint(keys.Identity.Public())
		data["verifiers"] = rep.Verifiers
		data["seconds"] = rep.Seconds
		data["mb_per_s"] = rate
		if err := writeJSON(c, data); err != nil {
			return err
		}
	} else if !c.quiet() {
		w := c.env.Stdout
		fmt.Fprintf(w, "exported snapshot %s to %s: %d files, %d dirs, %d symlinks, %s, %.2f s, %.1f MB/s\n",
			sn.ID[:12], rep.Dir, rep.Files, rep.Dirs, rep.Symlinks, units.Bytes(rep.Bytes), rep.Seconds, rate)
		fmt.Fprintf(w, "identity key: %s\n", seal.Fingerprint(keys.Identity.Public()))
		fmt.Fprintf(w, "manifest sha256: %s\n", rep.ManifestSHA256)
	}
	if n := len(rep.NotExported) + len(rep.Damaged); n > 0 {
		return exitError{1, fmt.Sprintf("%d entries are not in the export (listed above and in its MANIFEST); everything else was exported and signed", n)}
	}
	return nil
}

// defaultVerifiers is the verify/ directory next to the drawbridge binary.
func defaultVerifiers() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Join(filepath.Dir(exe), "verify")
}

// cmdExportSealed writes a sealed export: the chosen snapshots as a store of
// their own, still encrypted (docs/export-format.md). It decrypts nothing
// and so needs no passphrase.
func cmdExportSealed(ctx context.Context, c *call) error {
	if len(c.args.pos) == 0 {
		return usagef("export --sealed needs at least one SNAP")
	}
	to := c.args.get("to")
	if to == "" {
		return usagef("export needs --to DIR")
	}
	if c.args.get("verifiers") != "" {
		return usagef("--verifiers is for the plain export; a sealed export is read with drawbridge itself")
	}
	s, err := c.open()
	if err != nil {
		return err
	}
	defer s.Close()
	all, err := s.Snapshots()
	if err != nil {
		return err
	}
	var snaps []store.Snapshot
	seen := map[string]bool{}
	for _, name := range c.args.pos {
		if strings.Contains(name, ":") {
			return usagef("a sealed export copies whole snapshots: %q names a path", name)
		}
		sn, err := store.FindIn(all, name)
		if err != nil {
			return err
		}
		if !seen[sn.ID] {
			seen[sn.ID] = true
			snaps = append(snaps, *sn)
		}
	}
	var done, total atomic.Int64
	b := startBar(c.env.Stderr, c.quiet(), "export", done.Load, total.Load, nil)
	rep, err := export.Sealed(ctx, s, snaps, to, export.SealedOptions{
		Progress: func(n int64) { done.Add(n) },
		Total:    func(n int64) { total.Store(n) },
	})
	b.finish()
	if err != nil {
		if errors.Is(err, export.ErrTargetNotEmpty) {
			return exitError{1, fmt.Sprintf("%v: export needs a missing or empty directory", err)}
		}
		return fmt.Errorf("sealed export failed; the copy has no store.json and will not open: %w", err)
	}
	keys := s.Keys()
	data := map[string]any{"sealed": true, "snapshots": rep.Snapshots, "target": to, "packs": rep.Packs,
		"bytes": rep.Bytes, "record": rep.Record}
	msg := fmt.Sprintf("sealed export of %d snapshots to %s: %d packs, %d bytes", len(rep.Snapshots), to, rep.Packs, rep.Bytes)
	if _, err := s.Journal().Append(keys.Identity, time.Now().UTC(), "export", msg, data); err != nil {
		fmt.Fprintf(c.env.Stderr, "warning: the export was not journaled: %v\n", err)
	}
	rate := 0.0
	if rep.Seconds > 0 {
		rate = float64(rep.Bytes) / 1e6 / rep.Seconds
	}
	if c.jsonOut() {
		data["identity"] = seal.Fingerprint(keys.Identity.Public())
		data["seconds"] = rep.Seconds
		data["mb_per_s"] = rate
		return writeJSON(c, data)
	}
	if !c.quiet() {
		w := c.env.Stdout
		fmt.Fprintf(w, "sealed export of %d snapshots to %s: %d packs, %s, %.2f s, %.1f MB/s\n",
			len(rep.Snapshots), rep.Dir, rep.Packs, units.Bytes(rep.Bytes), rep.Seconds, rate)
		for _, id := range rep.Snapshots {
			fmt.Fprintf(w, "  %s\n", id)
		}
		fmt.Fprintf(w, "identity key: %s\n", seal.Fingerprint(keys.Identity.Public()))
		fmt.Fprintf(w, "read it with: drawbridge snapshots --store %s (restore needs the restore passphrase)\n", rep.Dir)
	}
	return nil
}
