// Package importer brings a configuration from a USB drive into the vault
// (DESIGN.md §7): it finds drawbridge.toml at the top of the drives plugged
// in, shows what would change, and installs the file only with the admin
// passphrase. The command line (drawbridge config import) and the console
// use the same functions.
//
// Invariants: nothing on a drive runs, and nothing on it is read but that
// one file, through config.ReadFromDrive; every drive is mounted read-only
// with nosuid, nodev and noexec, only while it is searched, and unmounted
// before Scan returns. A configuration is installed only after the admin
// passphrase was checked, durably (the previous one kept), and journaled
// as config-imported with the changes.
//
// From the console:
//
//	found, err := importer.Wait(ctx, usb.Local(), mountDir, show) // or Scan, to look once
//	f := found[i]                                                 // the person picked it
//	p, err := importer.NewPlan("/data/drawbridge.toml", "/data/store", "USB drive "+f.String(), f.Config, f.Data)
//	show(p.Lines()) …                                             // confirmed, passphrase typed
//	err = p.Apply(ctx, s, admin.ForStore(s, admin.Options{}), pass) // admin.ErrWrong: refused, journaled
package importer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"drawbridge/hw/usb"
	"drawbridge/vault/admin"
	"drawbridge/vault/config"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
)

// RecordImported is the journal record type of an import.
const RecordImported = "config-imported"

// Drives is what the importer needs of hw/usb; *usb.Ports is one.
type Drives interface {
	List() ([]usb.Drive, error)
	Mount(part usb.Partition, dir string, readOnly bool) (*usb.Mounted, error)
}

// Found is what one partition of a drive holds.
type Found struct {
	Drive     usb.Drive
	Partition usb.Partition
	Config    *config.Config // the checked configuration; nil when Err is set
	Data      []byte         // the file's bytes, what an import installs
	// Err says why there is no configuration: errors.Is(Err,
	// fs.ErrNotExist) when the partition has no drawbridge.toml, else why
	// the drive or its file was refused.
	Err error
}

// String names where the file is for a person: "sdb1 on sdb SanDisk Ultra
// 57.3 GiB".
func (f Found) String() string {
	if f.Partition.Name == f.Drive.Name {
		return f.Drive.String()
	}
	return f.Partition.Name + " on " + f.Drive.String()
}

// Scan looks for drawbridge.toml on every partition of every drive: each
// is mounted read-only under mountDir (which must exist), the one file is
// read and checked, and the partition is unmounted at once. It returns one
// Found per partition; a listing error is returned with what was listed.
func Scan(d Drives, mountDir string) ([]Found, error) {
	drives, lerr := d.List()
	var out []Found
	for _, dr := range drives {
		for _, part := range dr.Partitions {
			out = append(out, scanOne(d, dr, part, mountDir))
		}
	}
	return out, lerr
}

func scanOne(d Drives, dr usb.Drive, part usb.Partition, mountDir string) Found {
	f := Found{Drive: dr, Partition: part}
	dir := filepath.Join(mountDir, part.Name)
	m, err := d.Mount(part, dir, true)
	if err != nil {
		os.Remove(dir)
		f.Err = err
		return f
	}
	defer func() {
		if err := m.Unmount(); err != nil && f.Err == nil {
			f.Config, f.Data, f.Err = nil, nil, fmt.Errorf("unmount %s: %w", part.Name, err)
		}
		os.Remove(dir)
	}()
	root, err := os.OpenRoot(m.Root())
	if err != nil {
		f.Err = err
		return f
	}
	defer root.Close()
	f.Config, f.Data, f.Err = config.ReadFromDrive(root, config.DriveFile)
	return f
}

// Valid returns the partitions that hold a configuration that passed every
// check.
func Valid(found []Found) []Found {
	var out []Found
	for _, f := range found {
		if f.Err == nil {
			out = append(out, f)
		}
	}
	return out
}

// Wait scans the drives every second until at least one holds a valid
// configuration, and returns those. It tells say what it waits for, and why
// each file it found was refused, once each time the drives plugged in
// change. It ends early only with ctx.
func Wait(ctx context.Context, d Drives, mountDir string, say func(string)) ([]Found, error) {
	var last []usb.Drive
	first := true
	for {
		drives, _ := d.List()
		if first || !sameDrives(last, drives) {
			first, last = false, drives
			found, _ := Scan(d, mountDir)
			if ok := Valid(found); len(ok) > 0 {
				return ok, nil
			}
			say(waiting(drives, found))
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// waiting says what Wait is waiting for, and why what it found does not do.
func waiting(drives []usb.Drive, found []Found) string {
	if len(drives) == 0 {
		return "Waiting for a USB drive with " + config.DriveFile + " at its top: plug one in."
	}
	var b strings.Builder
	for _, dr := range drives {
		if len(dr.Partitions) == 0 {
			fmt.Fprintf(&b, "%s: no filesystem Drawbridge can read (vfat, exfat or ext4)\n", dr)
		}
	}
	for _, f := range found {
		switch {
		case errors.Is(f.Err, fs.ErrNotExist):
			fmt.Fprintf(&b, "%s: no %s at its top\n", f, config.DriveFile)
		default:
			fmt.Fprintf(&b, "%s: refused, nothing changed:\n  %s\n", f, strings.ReplaceAll(f.Err.Error(), "\n", "\n  "))
		}
	}
	b.WriteString("Waiting for a USB drive with a valid " + config.DriveFile + ": fix the file, or plug in another drive.")
	return b.String()
}

func sameDrives(a, b []usb.Drive) bool {
	return slices.EqualFunc(a, b, func(x, y usb.Drive) bool {
		return x.Name == y.Name && x.Serial == y.Serial && x.Size == y.Size && slices.Equal(x.Partitions, y.Partitions)
	})
}

// Plan is an import shown to a person before it is applied.
type Plan struct {
	From    string         // where the file came from, for people and the journal
	Data    []byte         // the file's bytes
	Next    *config.Config // what they configure
	Current string         // the installed configuration file
	Old     *config.Config // what is installed now; nil when nothing is
	// OldErr is why the installed file could not be read (then Old is nil
	// and the diff shows everything as added): an import replaces it.
	OldErr  error
	Changes []config.Change
	// Clock gives the time of the journal record; nil means time.Now.
	Clock func() time.Time
}

// NewPlan compares next (read from from) with the configuration installed
// at current. When storeDir is given, next must name that store: the vault
// would not find its store otherwise.
func NewPlan(current, storeDir, from string, next *config.Config, data []byte) (*Plan, error) {
	if storeDir != "" {
		abs, err := filepath.Abs(storeDir)
		if err != nil {
			return nil, err
		}
		if next.Store != abs {
			return nil, fmt.Errorf("%s names the store %q, but this vault's store is %q: nothing changed", from, next.Store, abs)
		}
	}
	p := &Plan{From: from, Data: data, Next: next, Current: current}
	p.Old, p.OldErr = config.LoadCurrent(current)
	if p.OldErr != nil {
		p.Old = nil
	}
	p.Changes = config.Diff(p.Old, next)
	return p, nil
}

// Lines are the changes as text, one per line.
func (p *Plan) Lines() []string {
	out := make([]string, len(p.Changes))
	for i, c := range p.Changes {
		out[i] = c.String()
	}
	return out
}

// Apply checks the admin passphrase with g (a wrong one gives an error
// wrapping admin.ErrWrong, and nothing changes), installs the file at
// p.Current and journals config-imported in s with the changes.
func (p *Plan) Apply(ctx context.Context, s *store.Store, g *admin.Guard, adminPass []byte) error {
	if err := g.Check(ctx, adminPass); err != nil {
		return err
	}
	if err := config.Install(p.Current, p.Data); err != nil {
		return err
	}
	clock := p.Clock
	if clock == nil {
		clock = time.Now
	}
	h := seal.Hash(p.Data)
	msg := fmt.Sprintf("configuration imported from %s into %s: %d changes", p.From, p.Current, len(p.Changes))
	_, err := s.Journal().Append(s.Keys().Identity, clock().UTC(), RecordImported, msg, map[string]any{
		"from": p.From, "file": p.Current, "hash": hex.EncodeToString(h[:]), "changes": p.Lines()})
	if err != nil {
		return fmt.Errorf("the configuration was installed but not journaled: %w", err)
	}
	return nil
}
