// Package todrive restores snapshot files onto a drive a person plugged in
// and picked at the console: files, a directory or a whole snapshot, into
// a new directory on the mounted drive.
//
// Before writing anything it checks that the drive has room (the files'
// sizes rounded up to the drive's block size, plus a margin) and refuses
// with both numbers otherwise. While writing it reports progress (bytes,
// rate, ETA) and flushes the drive four times a second, so that a drive
// pulled out is noticed within a second, as ErrDriveGone, rather than at
// the end. Every file is read back from the drive (O_DIRECT, not from the
// page cache) and compared with the hash taken while writing; files that
// differ are listed by path. A file is read back as soon as a flush has
// put it on the drive, while later ones are written, so the drive reads
// while the vault decrypts; what the last flush put there is read back
// after it.
//
// The console calls it with a drive mounted by hw/usb:
//
//	m, err := ports.Mount(part, dir, false)
//	rep, err := todrive.Restore(ctx, reader, root, subpath, m.Root(), todrive.DirName(snap.ID, now),
//		todrive.Options{Progress: show, Present: m.Present})
//	switch {
//	case errors.Is(err, todrive.ErrDriveGone): // "the drive was pulled out: what is on it is incomplete"
//	case errors.Is(err, todrive.ErrNoSpace):   // err names both sizes
//	case errors.Is(err, todrive.ErrVerify):    // rep.Mismatches lists the files
//	}
//	// rep.Damaged: snapshot damage; rep.Skipped: what the drive's filesystem refused
//	m.Unmount()
//
// The directory name is a single path component created exclusively
// through an os.Root opened on the drive, so a symlink the stick carries
// under that name is never followed. Everything else is vault/restore's:
// the same rules for hostile snapshot data, and damage in the snapshot
// listed in the report while the rest is restored. What the drive's
// filesystem cannot hold (symlinks and devices on FAT and exFAT, names it
// refuses or that clash by case) is left out and listed in Report.Skipped.
package todrive

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/readback"
	"drawbridge/vault/restore"
	"drawbridge/vault/tree"

	"drawbridge/vault/units"
)

var (
	// ErrDriveGone: the drive stopped answering (pulled out, or failing):
	// an I/O error, the device gone, or its filesystem turned read-only
	// after errors. What is on it is incomplete.
	ErrDriveGone = errors.New("the drive went away or failed; what is on it is incomplete")
	// ErrNoSpace: the drive has too little room, found before writing or
	// when it filled up.
	ErrNoSpace = errors.New("not enough free space on the drive")
	// ErrVerify: files read back from the drive differ from what was
	// written; Report.Mismatches lists them.
	ErrVerify = errors.New("files read back from the drive differ from what was written")
	// ErrTooLarge: a file is larger than the drive's filesystem can hold
	// (FAT32: 4 GiB less a byte).
	ErrTooLarge = errors.New("a file is too large for the drive's filesystem")
	// ErrReadOnly: the drive is mounted read-only.
	ErrReadOnly = errors.New("the drive is mounted read-only")
)

// maxFAT is the largest file FAT32 holds.
const maxFAT = 1<<32 - 1

// Phases of Progress.
const (
	PhaseWrite  = "write"
	PhaseVerify = "verify"
)

// Progress is one report on a running restore.
type Progress struct {
	Phase string        // PhaseWrite, then PhaseVerify
	Done  int64         // bytes written, or read back, so far
	Total int64         // bytes of the phase
	Rate  float64       // bytes per second since the phase started
	ETA   time.Duration // time left in this phase at Rate; 0 when unknown
}

// Options tune a restore to a drive.
type Options struct {
	// Progress is called from one goroutine every Interval, and once at
	// the end of each phase. It may be nil.
	Progress func(Progress)
	Interval time.Duration // 0 means 250ms
	// Owners chowns files to the snapshot's owners; a drive taken to
	// another machine usually wants them owned by nobody in particular,
	// so it is off by default.
	Owners  bool
	Workers int // 0 means GOMAXPROCS
	// SyncEvery is how many bytes may be written between flushes of the
	// drive; 0 means 64 MiB. A flush also runs every FlushInterval of
	// writing.
	SyncEvery int64
	// FlushInterval is the longest time written data waits for a flush;
	// 0 means 250ms. Frequent flushes keep the drive writing while the
	// vault reads and decrypts, and leave little to write at the end.
	FlushInterval time.Duration
	// NoVerify skips the read-back (for a benchmark of writing alone).
	NoVerify bool
	// Present, when set, reports whether the drive is still plugged in
	// (usb.Mounted.Present). After a failure it turns any error into
	// ErrDriveGone when the drive is gone, whatever the filesystem's
	// driver made of it.
	Present func() bool
	Now     func() time.Time
}

// Mismatch is a file that did not read back as written.
type Mismatch = readback.Mismatch

// Report says what a restore to a drive did.
type Report struct {
	restore.Report            // what was written, snapshot damage, what the drive refused
	Dir            string     // the restore directory on the drive
	Size           Size       // what the snapshot's trees said would be written
	Needed, Free   int64      // the space check: bytes needed (estimate) and free before starting
	Verified       int64      // files read back identical
	VerifiedBytes  int64      // their bytes
	Mismatches     []Mismatch // files that read back differently, sorted by Path
	WriteSeconds   float64    // writing, with the flushes
	VerifySeconds  float64    // reading back what was left after writing
	// ReadWhileWriting is how many bytes were read back while writing:
	// files a flush had put on the drive, checked while later ones were
	// written.
	ReadWhileWriting int64
}

// Restore writes the subtree at subpath of the snapshot tree root into a
// new directory name (one path component) on the drive mounted at drive.
// It fails with ErrNoSpace before writing anything if the drive has too
// little room, ErrDriveGone if the drive goes away, and ErrVerify if a
// file reads back differently; the report covers what was done.
func Restore(ctx context.Context, src restore.Source, root tree.ID, subpath, drive, name string, o Options) (*Report, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = 250 * time.Millisecond
	}
	if o.SyncEvery <= 0 {
		o.SyncEvery = 64 << 20
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 250 * time.Millisecond
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return nil, fmt.Errorf("restore to drive: %q is not a directory name", name)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(drive, &st); err != nil {
		return nil, fmt.Errorf("restore to drive: %w", classify(err))
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return nil, fmt.Errorf("restore to drive: %w", ErrReadOnly)
	}
	free, bsize := int64(st.Bavail)*st.Bsize, st.Bsize
	size, err := Measure(ctx, src, root, subpath)
	if err != nil {
		return nil, fmt.Errorf("restore to drive: %w", err)
	}
	need := size.OnDisk(bsize)
	rep := &Report{Size: size, Needed: need, Free: free}
	if st.Type == unix.MSDOS_SUPER_MAGIC && size.Largest > maxFAT {
		return rep, fmt.Errorf("%w: %q is %s and a FAT drive holds files up to 4 GiB; format the drive as exFAT or ext4",
			ErrTooLarge, size.LargestPath, units.Bytes(size.Largest))
	}
	if need > free {
		return rep, fmt.Errorf("%w: the restore needs about %s (%s, %s of data), the drive has %s free",
			ErrNoSpace, units.Bytes(need), units.Count(size.Files, "file"), units.Bytes(size.Bytes), units.Bytes(free))
	}

	dr, err := os.OpenRoot(drive)
	if err != nil {
		return nil, fmt.Errorf("restore to drive: %w", classify(err))
	}
	defer dr.Close()
	if err := dr.Mkdir(name, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return rep, fmt.Errorf("restore to drive: %q already exists on the drive", name)
		}
		return rep, fmt.Errorf("restore to drive: %w", classify(err))
	}
	target := filepath.Join(drive, name)
	rep.Dir = target

	// Write, flushing as it goes and reading back what the flushes put
	// on the drive; the rest after the last flush.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var done atomic.Int64
	c, err := readback.Start(ctx, cancel, target, readback.Options{
		SyncEvery:     o.SyncEvery,
		FlushInterval: o.FlushInterval,
		Gone:          func(err error) bool { return errors.Is(o.classify(err), ErrDriveGone) },
		Classify:      o.classify,
		NoReadBack:    o.NoVerify,
		Now:           o.Now,
	})
	if err != nil {
		return rep, fmt.Errorf("restore to drive: %w", classify(err))
	}
	defer c.Close()
	stopProgress := o.report(PhaseWrite, size.Bytes, done.Load)
	start := o.Now()
	var total int64
	res, err := restore.Restore(ctx, src, root, subpath, target, restore.Options{
		Owners:   o.Owners,
		Workers:  o.Workers,
		Lenient:  true, // FAT and exFAT hold no symlinks, modes or owners
		Progress: func(n int64) { done.Add(n); c.Wrote(n) },
		Hash:     readback.NewHash,
		Written: func(rel string, size int64, sum []byte) {
			atomic.AddInt64(&total, size)
			c.Add(readback.File{Rel: rel, Size: size, Sum: sum})
		},
	})
	syncErr := c.StopFlushing()
	if res != nil {
		rep.Report = *res
	}
	if err == nil {
		err = syncErr
	}
	rep.WriteSeconds = o.Now().Sub(start).Seconds()
	rep.ReadWhileWriting = c.ReadBytes()
	stopProgress(err == nil)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrDriveGone) {
			err = cause
		}
		return rep, fmt.Errorf("restore to drive: %w", o.classify(err))
	}
	if o.NoVerify {
		return rep, nil
	}

	// Read back what no flush covered while writing, with several readers.
	stopProgress = o.report(PhaseVerify, atomic.LoadInt64(&total), c.ReadBytes)
	start = o.Now()
	found, err := c.Finish(o.Workers)
	rep.Verified, rep.VerifiedBytes = found.Files, found.Bytes
	rep.Mismatches = found.Mismatches
	rep.VerifySeconds = o.Now().Sub(start).Seconds()
	stopProgress(err == nil)
	if err != nil {
		return rep, fmt.Errorf("verify the restore on the drive: %w", o.classify(err))
	}
	if len(rep.Mismatches) > 0 {
		return rep, fmt.Errorf("%w: %d files, the first %q: %v", ErrVerify, len(rep.Mismatches), rep.Mismatches[0].Path, rep.Mismatches[0].Err)
	}
	return rep, nil
}

// DirName is a name for the restore directory of snapshot snapID made at
// t, as the console offers it: "drawbridge-restore-3f2a9c01b7e4-20261127-1203".
// Every filesystem a drive may carry takes it.
func DirName(snapID string, t time.Time) string {
	id := snapID
	if len(id) > 12 {
		id = id[:12]
	}
	id = strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' {
			return r
		}
		return '_'
	}, id)
	return "drawbridge-restore-" + id + "-" + t.UTC().Format("20060102-1504")
}

// classify is the package's classify, and ErrDriveGone for any error once
// Present says the drive is gone.
func (o *Options) classify(err error) error {
	err = classify(err)
	if err != nil && !errors.Is(err, ErrDriveGone) && o.Present != nil && !o.Present() {
		return fmt.Errorf("%w: %w", ErrDriveGone, err)
	}
	return err
}

// classify marks an error that means the drive went away or failed as
// ErrDriveGone, and a full drive as ErrNoSpace.
func classify(err error) error {
	switch {
	case err == nil || errors.Is(err, ErrDriveGone) || errors.Is(err, ErrNoSpace):
		return err
	case readback.DriveError(err):
		return fmt.Errorf("%w: %w", ErrDriveGone, err)
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	case errors.Is(err, unix.EFBIG):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return err
}

// report calls o.Progress every Interval until the returned function is
// called, which reports once more and returns when no call is running.
// When the phase completed, that last report has Total equal to Done
// (Total was an estimate: entries the drive refused are not written).
func (o *Options) report(phase string, total int64, done func() int64) func(complete bool) {
	if o.Progress == nil {
		return func(bool) {}
	}
	start := o.Now()
	at := func() Progress {
		p := Progress{Phase: phase, Done: done(), Total: total}
		if secs := o.Now().Sub(start).Seconds(); secs > 0 {
			p.Rate = float64(p.Done) / secs
		}
		if p.Rate > 0 && p.Total > p.Done {
			p.ETA = time.Duration(float64(p.Total-p.Done) / p.Rate * float64(time.Second))
		}
		return p
	}
	stop := make(chan bool)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(o.Interval)
		defer t.Stop()
		for {
			select {
			case complete := <-stop:
				p := at()
				if complete {
					p.Total, p.ETA = p.Done, 0
				}
				o.Progress(p)
				return
			case <-t.C:
				o.Progress(at())
			}
		}
	}()
	return func(complete bool) {
		stop <- complete
		<-stopped
	}
}
