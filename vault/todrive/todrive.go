// Package todrive restores snapshot files onto a drive a person plugged in
// and picked at the console: files, a directory or a whole snapshot, into
// a new directory on the mounted drive.
//
// Before writing anything it checks that the drive has room (the files'
// sizes rounded up to the drive's block size, plus a margin) and refuses
// with both numbers otherwise. While writing it reports progress (bytes,
// rate, ETA) and flushes the drive every few seconds, so that a drive
// pulled out is noticed within seconds, as ErrDriveGone, rather than at
// the end. At the end it flushes, drops the written files from the page
// cache and reads every one back, comparing it with the hash taken while
// writing; files that differ are listed by path.
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
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

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
	// drive; 0 means 64 MiB. A flush also runs every second of writing.
	SyncEvery int64
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
type Mismatch struct {
	Path string // slash path under the restore directory
	Err  error
}

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
	VerifySeconds  float64    // reading back
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
		return rep, fmt.Errorf("%w: the restore needs about %s (%d files, %s of data), the drive has %s free",
			ErrNoSpace, units.Bytes(need), size.Files, units.Bytes(size.Bytes), units.Bytes(free))
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

	// Write, flushing as it goes.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var done atomic.Int64
	var mu sync.Mutex
	var written []writtenFile
	stopProgress := o.report(PhaseWrite, size.Bytes, done.Load)
	stopSync := flusher(ctx, cancel, target, &done, o.SyncEvery, o.classify)
	start := o.Now()
	res, err := restore.Restore(ctx, src, root, subpath, target, restore.Options{
		Owners:   o.Owners,
		Workers:  o.Workers,
		Lenient:  true, // FAT and exFAT hold no symlinks, modes or owners
		Progress: func(n int64) { done.Add(n) },
		Hash:     func() hash.Hash { return xxhash.New() },
		Written: func(rel string, size int64, sum []byte) {
			mu.Lock()
			written = append(written, writtenFile{rel, size, sum})
			mu.Unlock()
		},
	})
	syncErr := stopSync()
	if res != nil {
		rep.Report = *res
	}
	if err == nil {
		err = syncErr
	}
	if err == nil {
		err = syncfs(target)
	}
	rep.WriteSeconds = o.Now().Sub(start).Seconds()
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

	// Read everything back from the drive.
	slices.SortFunc(written, func(a, b writtenFile) int { return strings.Compare(a.rel, b.rel) })
	var total int64
	for _, w := range written {
		total += w.size
	}
	done.Store(0)
	stopProgress = o.report(PhaseVerify, total, done.Load)
	start = o.Now()
	err = verify(ctx, target, written, o.Workers, &done, rep, o.classify)
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

type writtenFile struct {
	rel  string
	size int64
	sum  []byte
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
	case errors.Is(err, unix.EIO), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO),
		errors.Is(err, unix.ENOTCONN), errors.Is(err, unix.ESHUTDOWN), errors.Is(err, unix.EROFS):
		// EROFS: the filesystem was mounted read-write (Restore checks)
		// and turned read-only after I/O errors. ENOTCONN: a FUSE
		// driver whose device went away.
		return fmt.Errorf("%w: %w", ErrDriveGone, err)
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	case errors.Is(err, unix.EFBIG):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return err
}

func syncfs(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("flush the drive: %w", err)
	}
	return nil
}

// flusher flushes the drive whenever every more bytes were written, and
// each second while something was, so a pulled drive is noticed early and
// the page cache never holds much that the drive does not. A failed flush
// cancels the restore with ErrDriveGone (or whatever classify makes of
// it). The returned function stops it and returns that error.
func flusher(ctx context.Context, cancel context.CancelCauseFunc, dir string, done *atomic.Int64, every int64, classify func(error) error) func() error {
	stop := make(chan struct{})
	finished := make(chan error, 1)
	go func() {
		var flushed int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				finished <- nil
				return
			case <-ctx.Done():
				finished <- nil
				return
			case <-t.C:
			}
			n := done.Load()
			if n-flushed < every && (n == flushed || time.Since(last) < time.Second) {
				continue
			}
			if err := syncfs(dir); err != nil {
				err = classify(err)
				cancel(err)
				finished <- err
				return
			}
			flushed, last = n, time.Now()
		}
	}()
	return func() error {
		close(stop)
		return <-finished
	}
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

// verify reads every written file back from the drive, after dropping it
// from the page cache, and compares size and hash.
func verify(ctx context.Context, target string, files []writtenFile, workers int, done *atomic.Int64, rep *Report, classify func(error) error) error {
	r, err := os.OpenRoot(target)
	if err != nil {
		return err
	}
	defer r.Close()
	jobs := make(chan int)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for i := range jobs {
				f := files[i]
				err := readBack(ctx, r, f, buf, done)
				mu.Lock()
				switch {
				case err == nil:
					rep.Verified++
					rep.VerifiedBytes += f.size
				case errors.Is(classify(err), ErrDriveGone), ctx.Err() != nil:
					if firstErr == nil {
						firstErr = err
					}
					cancel()
				default:
					rep.Mismatches = append(rep.Mismatches, Mismatch{Path: f.rel, Err: err})
				}
				mu.Unlock()
			}
		})
	}
	for i := range files {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	slices.SortFunc(rep.Mismatches, func(a, b Mismatch) int { return strings.Compare(a.Path, b.Path) })
	if firstErr == nil && ctx.Err() != nil {
		firstErr = context.Cause(ctx)
	}
	return firstErr
}

func readBack(ctx context.Context, r *os.Root, w writtenFile, buf []byte, done *atomic.Int64) error {
	f, err := r.OpenFile(w.rel, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	// The pages are clean after the flush; dropping them makes the reads
	// below come from the drive. Dropped again after, to leave the cache
	// to the vault.
	unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	defer unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	h := xxhash.New()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := f.Read(buf)
		if m > 0 {
			h.Write(buf[:m])
			n += int64(m)
			done.Add(int64(m))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != w.size {
		return fmt.Errorf("read back %d bytes, wrote %d", n, w.size)
	}
	if !slices.Equal(h.Sum(nil), w.sum) {
		return errors.New("content read back differs from what was written")
	}
	return nil
}
