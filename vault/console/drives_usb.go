package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/hw/usb"
	"drawbridge/vault/admin"
	"drawbridge/vault/config/importer"
	"drawbridge/vault/export"
	"drawbridge/vault/export/manifest"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/todrive"
	"drawbridge/vault/tree"

	"drawbridge/vault/units"
)

// USBDrives is the console's Drives on real hardware: hw/usb finds and
// mounts the drives (nosuid, nodev, noexec, only once a person picked one),
// vault/todrive restores to them, vault/export exports to them, and
// vault/config/importer reads a configuration from them.
type USBDrives struct {
	Ports *usb.Ports
	// MountDir is where a picked partition is mounted, in a directory of
	// its own; it is created with mode 0700.
	MountDir string
	Store    *store.Store // the vault's store: the sealed export, the export's signature, the import's journal
	StoreDir string       // the store's directory, which an imported configuration must name
	// ConfigPath is the installed configuration an import replaces; ""
	// when there is none, and then the import says so.
	ConfigPath string
	Admin      *admin.Guard // checks the admin passphrase of an import
	Verifiers  string       // drawbridge-verify builds the plain export carries; "" for none
	// Keys is the text WriteKeys puts on a drive: each source's
	// authorized_keys line; nil offers none.
	Keys  func() (string, error)
	Clock func() time.Time
}

func (u *USBDrives) now() time.Time {
	if u.Clock != nil {
		return u.Clock()
	}
	return time.Now()
}

// List lists the drives plugged in.
func (u *USBDrives) List() ([]usb.Drive, error) {
	return u.Ports.List()
}

// Mount mounts part under dir (importer.Drives).
func (u *USBDrives) Mount(part usb.Partition, dir string, readOnly bool) (*usb.Mounted, error) {
	return u.Ports.Mount(part, dir, readOnly)
}

// Format erases d; Ports.Format checks the confirmation.
func (u *USBDrives) Format(ctx context.Context, d usb.Drive, fstype, label, confirm string) error {
	return u.Ports.Format(ctx, d, fstype, label, confirm)
}

// mount mounts part in a directory of its own under MountDir.
func (u *USBDrives) mount(part usb.Partition, readOnly bool) (*usb.Mounted, error) {
	if err := os.MkdirAll(u.MountDir, 0o700); err != nil {
		return nil, fmt.Errorf("mount directory: %w", err)
	}
	return u.Ports.Mount(part, filepath.Join(u.MountDir, part.Name), readOnly)
}

// unmount flushes and unmounts m and says so in rep.
func unmount(m *usb.Mounted, rep *DriveReport) {
	err := m.Unmount()
	if err != nil {
		rep.UnmountErr = err.Error()
	} else {
		rep.Unmounted = true
	}
	os.Remove(m.Root())
}

// gone turns err into todrive.ErrDriveGone when the drive is no longer
// plugged in, whatever its filesystem made of it.
func gone(m *usb.Mounted, err error) error {
	if err != nil && !errors.Is(err, todrive.ErrDriveGone) && !m.Present() {
		return fmt.Errorf("%w (%v)", todrive.ErrDriveGone, err)
	}
	return err
}

// watchPresent cancels ctx once the drive is pulled out, so that work
// writing to it stops within a second rather than at its next I/O error.
func watchPresent(ctx context.Context, m *usb.Mounted) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if !m.Present() {
					cancel(todrive.ErrDriveGone)
					return
				}
			}
		}
	}()
	return ctx, func() { close(stop); cancel(nil) }
}

// cause is ctx's cause when it ended because the drive went away.
func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); errors.Is(c, todrive.ErrDriveGone) {
		return c
	}
	return err
}

// RestoreTo mounts part, restores, reads back and unmounts.
func (u *USBDrives) RestoreTo(ctx context.Context, r Reader, sn store.Snapshot, root tree.ID, subpath string, part usb.Partition, progress func(todrive.Progress)) (*DriveReport, error) {
	m, err := u.mount(part, false)
	if err != nil {
		return nil, err
	}
	out := &DriveReport{Partition: part.Name}
	wctx, stop := watchPresent(ctx, m)
	rep, err := todrive.Restore(wctx, r, root, subpath, m.Root(), freeName(m.Root(), todrive.DirName(sn.ID, u.now())),
		todrive.Options{Progress: progress, Present: m.Present})
	err = gone(m, cause(wctx, err))
	stop()
	unmount(m, out)
	if err == nil && !out.Unmounted {
		err = gone(m, fmt.Errorf("flush the drive: %s", out.UnmountErr))
	}
	if rep != nil {
		out.Dir = filepath.Base(rep.Dir)
		out.Files, out.Bytes, out.Verified = rep.Files, rep.Bytes, rep.Verified
		for _, d := range rep.Damaged {
			out.Problems = append(out.Problems, fmt.Sprintf("damaged in the snapshot: %v", d))
		}
		for _, s := range rep.Skipped {
			out.Problems = append(out.Problems, fmt.Sprintf("the drive cannot hold: %v", s))
		}
		for _, x := range rep.Mismatches {
			out.Problems = append(out.Problems, fmt.Sprintf("read back differently: %s: %v", x.Path, x.Err))
		}
	}
	if errors.Is(err, todrive.ErrVerify) {
		err = nil // the mismatches are the report's problems
	}
	return out, err
}

// exportDirName is the new directory an export makes at the top of a
// drive: "drawbridge-export-3f2a9c01b7e4-20261127-1203", or
// "drawbridge-sealed-…" for a sealed copy.
func exportDirName(snapID string, t time.Time, sealed bool) string {
	kind := "drawbridge-export-"
	if sealed {
		kind = "drawbridge-sealed-"
	}
	return strings.Replace(todrive.DirName(snapID, t), "drawbridge-restore-", kind, 1)
}

// freeName is name, or name-2, name-3… when the drive already has it (a
// second restore within the minute).
func freeName(dir, name string) string {
	try := name
	for i := 2; i < 100; i++ {
		if _, err := os.Lstat(filepath.Join(dir, try)); errors.Is(err, os.ErrNotExist) {
			return try
		}
		try = fmt.Sprintf("%s-%d", name, i)
	}
	return try
}

// KeysFile is the name of the file WriteKeys writes at the top of a drive
// (with -2, -3 … when it is taken).
const KeysFile = "drawbridge-authorized-keys.txt"

// WriteKeys writes the vault's authorized_keys lines (Keys) into a new
// file at the top of part, unmounts, mounts the drive read-only and reads
// the file back.
func (u *USBDrives) WriteKeys(ctx context.Context, part usb.Partition) (*DriveReport, error) {
	if u.Keys == nil {
		return nil, errors.New("this console has no keys to write")
	}
	text, err := u.Keys()
	if err != nil {
		return nil, err
	}
	m, err := u.mount(part, false)
	if err != nil {
		return nil, err
	}
	out := &DriveReport{Partition: part.Name, Dir: freeName(m.Root(), KeysFile), Files: 1, Bytes: int64(len(text))}
	err = writeNew(m.Root(), out.Dir, []byte(text))
	unmount(m, out)
	if err == nil && !out.Unmounted {
		err = fmt.Errorf("flush the drive: %s", out.UnmountErr)
	}
	if err != nil {
		return out, gone(m, err)
	}
	wrote := m
	if m, err = u.mount(part, true); err != nil {
		return out, gone(wrote, fmt.Errorf("mount again to read back: %w", err))
	}
	if back, err := os.ReadFile(filepath.Join(m.Root(), out.Dir)); err != nil || string(back) != text {
		out.Problems = append(out.Problems, fmt.Sprintf("read back: %s differs (%v)", out.Dir, err))
	} else {
		out.Verified = 1
	}
	out.Unmounted, out.UnmountErr = false, ""
	unmount(m, out)
	return out, gone(m, ctx.Err())
}

// writeNew writes a new file name in dir, durably.
func writeNew(dir, name string, b []byte) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ExportTo writes the plain or sealed export of sn into a new directory on
// part, then unmounts, mounts the drive read-only and checks what it
// reads back: the plain export's signed MANIFEST and every entry's
// presence and size (the export itself read every file's content back
// before signing), or the sealed copy's packs.
func (u *USBDrives) ExportTo(ctx context.Context, r Reader, sn store.Snapshot, part usb.Partition, sealed bool, progress func(todrive.Progress)) (*DriveReport, error) {
	if u.Store == nil {
		return nil, errors.New("export: this console has no store to export from")
	}
	root, err := parseRoot(sn.Root)
	if err != nil {
		return nil, fmt.Errorf("export: snapshot %s: %w", short(sn.ID, 12), err)
	}
	m, err := u.mount(part, false)
	if err != nil {
		return nil, err
	}
	out := &DriveReport{Partition: part.Name, Dir: freeName(m.Root(), exportDirName(sn.ID, u.now(), sealed))}
	wctx, stop := watchPresent(ctx, m)
	err = u.write(wctx, m, r, sn, root, sealed, out, progress)
	err = gone(m, cause(wctx, err))
	stop()
	unmount(m, out)
	if err == nil && !out.Unmounted {
		err = gone(m, fmt.Errorf("flush the drive: %s", out.UnmountErr))
	}
	if err != nil {
		return out, err
	}
	// Read back from the drive itself, not the page cache: mounted
	// again, read-only.
	progress(todrive.Progress{Phase: todrive.PhaseVerify, Total: out.Bytes})
	wrote := m
	m, err = u.mount(part, true)
	if err != nil {
		return out, gone(wrote, fmt.Errorf("mount again to read back: %w", err))
	}
	err = u.readBack(ctx, m, out, sealed, progress)
	out.Unmounted, out.UnmountErr = false, ""
	unmount(m, out)
	if err == nil && !out.Unmounted {
		err = fmt.Errorf("unmount after reading back: %s", out.UnmountErr)
	}
	return out, gone(m, err)
}

// readBack checks the export on the drive mounted read-only: the plain
// export's files against its signed MANIFEST (names, types and sizes),
// the sealed copy's packs byte for byte against the store's.
func (u *USBDrives) readBack(ctx context.Context, m *usb.Mounted, out *DriveReport, sealed bool, progress func(todrive.Progress)) error {
	dir := filepath.Join(m.Root(), out.Dir)
	if !sealed {
		// The export read every file back from the drive before it
		// signed the MANIFEST (out.Verified counts them); what is left
		// is to see the drive as another machine will: the signature,
		// and every entry there with its size, nothing else.
		res, err := manifest.VerifyLayout(filepath.Join(dir, manifest.Dir), seal.Fingerprint(u.Store.Keys().Identity.Public()))
		if err != nil {
			return fmt.Errorf("read back: %w", err)
		}
		for _, p := range res.Problems {
			out.Problems = append(out.Problems, "read back: "+p)
		}
		return nil
	}
	if export.IncompleteSealed(dir) {
		out.Problems = append(out.Problems, "the sealed copy reads back incomplete")
	}
	drive, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	defer drive.Close()
	var done int64
	err = fs.WalkDir(drive.FS(), "packs", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || !strings.HasSuffix(p, ".pack") {
			return ctx.Err()
		}
		n, same, err := samePack(drive, p, filepath.Join(u.StoreDir, filepath.FromSlash(p)))
		if err != nil {
			return err
		}
		done += n
		progress(todrive.Progress{Phase: todrive.PhaseVerify, Done: done, Total: out.Bytes})
		if same {
			out.Verified++
		} else {
			out.Problems = append(out.Problems, "read back differently: "+p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if out.Verified != out.Files {
		out.Problems = append(out.Problems, fmt.Sprintf("%d packs read back whole, %d were written", out.Verified, out.Files))
	}
	return nil
}

// samePack compares the pack p on the drive with the store's copy.
func samePack(drive *os.Root, p, storePath string) (int64, bool, error) {
	a, err := drive.Open(p)
	if err != nil {
		return 0, false, err
	}
	defer a.Close()
	b, err := os.Open(storePath)
	if err != nil {
		return 0, false, err
	}
	defer b.Close()
	ha, hb := sha256.New(), sha256.New()
	n, err := io.Copy(ha, a)
	if err != nil {
		return n, false, err
	}
	if _, err := io.Copy(hb, b); err != nil {
		return n, false, err
	}
	return n, bytes.Equal(ha.Sum(nil), hb.Sum(nil)), nil
}

// write is the export proper, with progress and a free-space check.
func (u *USBDrives) write(ctx context.Context, m *usb.Mounted, r Reader, sn store.Snapshot, root tree.ID, sealed bool, out *DriveReport, progress func(todrive.Progress)) error {
	free, _, err := m.Space()
	if err != nil {
		return err
	}
	dr, err := os.OpenRoot(m.Root())
	if err != nil {
		return err
	}
	// Made here, exclusively: a symlink the drive carries under this
	// name is never followed.
	err = dr.Mkdir(out.Dir, 0o755)
	dr.Close()
	if err != nil {
		return fmt.Errorf("make %s on the drive: %w", out.Dir, err)
	}
	target := filepath.Join(m.Root(), out.Dir)

	var done, total atomic.Int64
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	report := func() {
		p := todrive.Progress{Phase: todrive.PhaseWrite, Done: done.Load(), Total: total.Load()}
		if el := time.Since(start).Seconds(); el > 0 {
			p.Rate = float64(p.Done) / el
		}
		if p.Rate > 0 && p.Total > p.Done {
			p.ETA = time.Duration(float64(p.Total-p.Done) / p.Rate * float64(time.Second))
		}
		progress(p)
	}
	tick := make(chan struct{})
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-tick:
				return
			case <-t.C:
				report()
			}
		}
	}()
	defer func() { close(tick); report() }()

	if sealed {
		rep, err := export.Sealed(ctx, u.Store, []store.Snapshot{sn}, target, export.SealedOptions{
			Progress: func(n int64) { done.Add(n) },
			Total: func(n int64) {
				total.Store(n)
				if n > free {
					cancel(fmt.Errorf("%w: the sealed copy needs %s, the drive has %s free", todrive.ErrNoSpace, units.Bytes(n), units.Bytes(free)))
				}
			},
		})
		if c := context.Cause(ctx); err != nil && errors.Is(c, todrive.ErrNoSpace) {
			return c
		}
		if err != nil {
			return err
		}
		out.Files, out.Bytes = int64(rep.Packs), rep.Bytes
		return nil
	}
	if r == nil {
		return errors.New("export: the plain export needs the restore passphrase")
	}
	size, err := todrive.Measure(ctx, r, root, "")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	total.Store(size.Bytes)
	var st unix.Statfs_t
	if err := unix.Statfs(m.Root(), &st); err != nil {
		return fmt.Errorf("free space on %s: %w", m.Partition.Name, err)
	}
	if need := size.OnDisk(st.Bsize); need > free {
		return fmt.Errorf("%w: the export needs about %s (%s), the drive has %s free", todrive.ErrNoSpace, units.Bytes(need), units.Count(size.Files, "file"), units.Bytes(free))
	}
	id := u.Store.Keys().Identity
	rep, err := export.Export(ctx, r, root, "", target, export.Snapshot{VaultID: u.Store.Info().VaultID, ID: sn.ID, Source: sn.Source, Time: sn.Time},
		export.Options{Identity: id, Verifiers: u.Verifiers, Progress: func(n int64) { done.Add(n) }})
	if rep != nil {
		out.Files, out.Bytes, out.Verified = rep.Files, rep.Bytes, rep.ReadBack
		for _, p := range rep.Mismatches {
			out.Problems = append(out.Problems, fmt.Sprintf("read back: %s differs: %v", p.Path, p.Err))
		}
		for _, p := range rep.Damaged {
			out.Problems = append(out.Problems, fmt.Sprintf("damaged in the snapshot: %s: %s", p.Path, p.Reason))
		}
		for _, p := range rep.NotExported {
			out.Problems = append(out.Problems, fmt.Sprintf("not exported (listed in the MANIFEST): %s: %s", p.Path, p.Reason))
		}
	}
	return err
}

// FindConfigs looks for drawbridge.toml on every partition.
func (u *USBDrives) FindConfigs(ctx context.Context) ([]importer.Found, error) {
	if err := os.MkdirAll(u.MountDir, 0o700); err != nil {
		return nil, fmt.Errorf("mount directory: %w", err)
	}
	return importer.Scan(u, u.MountDir)
}

// PlanImport compares f with the installed configuration.
func (u *USBDrives) PlanImport(f importer.Found) (*importer.Plan, error) {
	if u.ConfigPath == "" {
		return nil, errors.New("this console has no configuration file to replace (drawbridge console --config FILE names it)")
	}
	p, err := importer.NewPlan(u.ConfigPath, u.StoreDir, "USB drive "+f.String(), f.Config, f.Data)
	if err != nil {
		return nil, err
	}
	p.Clock = u.Clock
	return p, nil
}

// ApplyImport checks the admin passphrase and installs the file.
func (u *USBDrives) ApplyImport(ctx context.Context, p *importer.Plan, pass []byte) error {
	if u.Admin == nil || u.Store == nil {
		return ErrNoAdmin
	}
	switch err := p.Apply(ctx, u.Store, u.Admin, pass); {
	case errors.Is(err, admin.ErrWrong):
		return fmt.Errorf("%w: %v", ErrAdminPassphrase, err)
	case errors.Is(err, admin.ErrNotSet):
		return ErrNoAdmin
	default:
		return err
	}
}
