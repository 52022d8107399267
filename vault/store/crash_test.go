package store

// Crash and fault tests through the filesystem seam (format.md §7): fail
// the N-th write, sync, rename or seal of a backup, drop every write that
// was not made durable, then reopen and check that nothing committed is
// lost and nothing half-written is visible.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/restore"
	"drawbridge/vault/vfs"
)

// crashPackTarget is small so that a few MB of source make several packs.
const crashPackTarget = 1 << 20

// guardTimeout bounds one store operation; a fault must never hang it.
const guardTimeout = 2 * time.Minute

// crashTree is a source tree that can be switched between two versions in
// place, so that the second backup of a store sees the same paths (and its
// file cache is used for the files that did not change), and two pristine
// copies of those versions to compare restores with.
type crashTree struct {
	src          string // switched between version 1 and 2
	want1, want2 string
	v1           bool // src holds version 1
}

const (
	crashDirMode  = 0o755
	crashMtime1   = 1700000000
	crashMtime2   = 1710000000
	crashFileSize = 512 << 10
)

func crashBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed*7+1))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func setMtime(t testing.TB, p string, sec int64) {
	t.Helper()
	ts := []unix.Timespec{{Sec: 1}, {Sec: sec, Nsec: 123}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func writeFileAt(t testing.TB, p string, data []byte, sec int64) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	setMtime(t, p, sec)
}

// genCrashTree writes version 1: a random tree of every kind of entry, and
// a few incompressible files of several chunks each.
func genCrashTree(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "data"), crashDirMode); err != nil {
		t.Fatal(err)
	}
	fixture.Random(filepath.Join(dir, "r"), 13)
	for i := 0; i < 4; i++ {
		writeFileAt(t, filepath.Join(dir, "data", fmt.Sprintf("f%d", i)), crashBytes(uint64(100+i), crashFileSize), crashMtime1)
	}
	setMtime(t, filepath.Join(dir, "data"), crashMtime1)
	if err := os.Chmod(dir, crashDirMode); err != nil {
		t.Fatal(err)
	}
}

// f1 of version 2: a region in the middle changed, so most chunks stay.
func crashF1v2() []byte {
	b := crashBytes(101, crashFileSize)
	copy(b[300<<10:], crashBytes(900, 40<<10))
	return b
}

// toV2 changes a version 1 tree into version 2: f1 edited in the middle,
// f3 removed, a new file added.
func toV2(t testing.TB, dir string) {
	t.Helper()
	d := filepath.Join(dir, "data")
	writeFileAt(t, filepath.Join(d, "f1"), crashF1v2(), crashMtime2)
	if err := os.Remove(filepath.Join(d, "f3")); err != nil {
		t.Fatal(err)
	}
	writeFileAt(t, filepath.Join(d, "new"), crashBytes(901, 2*crashPackTarget), crashMtime2)
	setMtime(t, d, crashMtime2)
}

// toV1 undoes toV2.
func toV1(t testing.TB, dir string) {
	t.Helper()
	d := filepath.Join(dir, "data")
	writeFileAt(t, filepath.Join(d, "f1"), crashBytes(101, crashFileSize), crashMtime1)
	writeFileAt(t, filepath.Join(d, "f3"), crashBytes(103, crashFileSize), crashMtime1)
	if err := os.Remove(filepath.Join(d, "new")); err != nil {
		t.Fatal(err)
	}
	setMtime(t, d, crashMtime1)
}

func newCrashTree(t testing.TB) *crashTree {
	t.Helper()
	base := t.TempDir()
	ct := &crashTree{src: filepath.Join(base, "src"), want1: filepath.Join(base, "want1"), want2: filepath.Join(base, "want2"), v1: true}
	genCrashTree(t, ct.src)
	genCrashTree(t, ct.want1)
	genCrashTree(t, ct.want2)
	toV2(t, ct.want2)
	if d := fixture.Compare(ct.want1, ct.src); len(d) > 0 {
		t.Fatalf("the tree generator is not deterministic: %v", d)
	}
	return ct
}

func (ct *crashTree) setVersion(t testing.TB, v int) {
	t.Helper()
	switch {
	case v == 2 && ct.v1:
		toV2(t, ct.src)
		ct.v1 = false
	case v == 1 && !ct.v1:
		toV1(t, ct.src)
		ct.v1 = true
	}
}

// guard runs f, turning a panic into an error and failing the test with
// every goroutine's stack if f does not return in time.
func guard(t testing.TB, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				done <- fmt.Errorf("%s panicked: %v\n%s", what, p, buf)
			}
		}()
		done <- f()
	}()
	timer := time.NewTimer(guardTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s did not return within %v:\n%s", what, guardTimeout, buf)
		return nil
	}
}

// isPanic tells a panic reported by guard from an ordinary error.
func isPanic(err error) bool { return err != nil && strings.Contains(err.Error(), " panicked: ") }

// guardedBackup backs up ct.src. Warnings about unreadable files would make
// the comparison with the pristine copies meaningless, so they are errors.
func guardedBackup(t testing.TB, ctx context.Context, s *Store, src string) (*Snapshot, error) {
	t.Helper()
	var sn *Snapshot
	var mu sync.Mutex
	var warns []string
	err := guard(t, "backup", func() error {
		var err error
		sn, err = s.Backup(ctx, "crash", []string{src}, BackupOptions{Warn: func(p string, err error) {
			mu.Lock()
			warns = append(warns, fmt.Sprintf("%s: %v", p, err))
			mu.Unlock()
		}})
		return err
	})
	if len(warns) > 0 {
		t.Errorf("backup warned: %v", warns)
	}
	return sn, err
}

func initMemStore(t testing.TB, m *vfs.MemFS) *Store {
	t.Helper()
	s, err := Init("", testPass, InitOptions{Options: Options{FS: m, MemoryIndex: true, Workers: 2, Log: quietLog},
		KDF: testKDF, PackTarget: crashPackTarget})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openMem(fsys vfs.FS) (*Store, error) {
	return Open("", Options{FS: fsys, MemoryIndex: true, Workers: 2, Log: quietLog})
}

// quietLog drops the warnings injected faults cause by the hundred.
var quietLog = slog.New(slog.DiscardHandler)

// checkStore verifies s shallow and deep, and restores every snapshot it
// lists, comparing each with want[snapshot id], or with other for a
// snapshot want does not name (none is allowed when other is ""). It
// returns the listed snapshots.
func checkStore(t testing.TB, s *Store, src string, want map[string]string, other string) ([]Snapshot, error) {
	t.Helper()
	ctx := context.Background()
	var snaps []Snapshot
	err := guard(t, "check", func() error {
		rep, err := s.Verify(ctx, nil, nil)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if rep.Damaged() {
			return fmt.Errorf("verify: %v", rep.Problems)
		}
		r, err := s.Unlock(testPass)
		if err != nil {
			return err
		}
		defer r.Close()
		rep, err = s.Verify(ctx, r, nil)
		if err != nil {
			return fmt.Errorf("deep verify: %w", err)
		}
		if rep.Damaged() {
			return fmt.Errorf("deep verify: %v", rep.Problems)
		}
		if snaps, err = s.Snapshots(); err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
		for _, sn := range snaps {
			w, ok := want[sn.ID]
			if !ok {
				if other == "" {
					return fmt.Errorf("unexpected snapshot %s", sn.ID[:12])
				}
				w = other
			}
			if err := restoreAndCompare(ctx, r, &sn, src, w); err != nil {
				return err
			}
		}
		return nil
	})
	return snaps, err
}

func restoreAndCompare(ctx context.Context, r *Reader, sn *Snapshot, src, want string) error {
	b, err := hex.DecodeString(sn.Root)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("snapshot %s: bad root %q", sn.ID[:12], sn.Root)
	}
	var root [32]byte
	copy(root[:], b)
	parent, err := os.MkdirTemp("", "crash-restore-")
	if err != nil {
		return err
	}
	// Restores are not sealed; fixture.Unseal would block opening a fifo.
	defer os.RemoveAll(parent)
	target := filepath.Join(parent, "t")
	if err := os.Mkdir(target, crashDirMode); err != nil {
		return err
	}
	if err := os.Chmod(target, crashDirMode); err != nil {
		return err
	}
	rep, err := restore.Restore(ctx, r, root, src, target, restore.Options{Owners: os.Geteuid() == 0})
	if err != nil {
		return fmt.Errorf("restore snapshot %s: %w", sn.ID[:12], err)
	}
	if len(rep.Damaged) > 0 {
		return fmt.Errorf("restore snapshot %s: damaged: %v", sn.ID[:12], rep.Damaged)
	}
	if d := fixture.Compare(want, target); len(d) > 0 {
		return fmt.Errorf("restore of snapshot %s differs from its source: %v", sn.ID[:12], d)
	}
	return nil
}

// sweepValues picks up to limit values of N from 1 to max, all of them if
// there are few enough, else the first few and the rest evenly spread.
func sweepValues(max, limit int) []int {
	if max <= limit {
		out := make([]int, max)
		for i := range out {
			out[i] = i + 1
		}
		return out
	}
	seen := map[int]bool{}
	var out []int
	add := func(n int) {
		if n >= 1 && n <= max && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	head := limit / 10
	for n := 1; n <= head; n++ {
		add(n)
	}
	rest := limit - head
	for i := 0; i < rest; i++ {
		add(head + 1 + int(float64(i)*float64(max-head-1)/float64(rest-1)+0.5))
	}
	return out
}

// crashOutcome is what one run of the sweep saw.
type crashOutcome struct {
	backupErr error
	committed bool // the second snapshot is in the store after the crash
	ops       int  // counted operations of the second backup
}

// crashRun does one iteration of the backup sweep: a store with one
// snapshot of version 1, a second backup of version 2 with every n-th
// operation failing (n = 0: none), a crash, and the checks.
func crashRun(t testing.TB, ct *crashTree, n int) (crashOutcome, error) {
	t.Helper()
	ctx := context.Background()
	var out crashOutcome
	m := vfs.NewMem()
	s := initMemStore(t, m)
	defer s.Close()
	ct.setVersion(t, 1)
	sn1, err := guardedBackup(t, ctx, s, ct.src)
	if err != nil {
		return out, fmt.Errorf("first backup: %w", err)
	}
	ct.setVersion(t, 2)
	before := m.Ops()
	m.InjectErrors(n)
	sn2, err := guardedBackup(t, ctx, s, ct.src)
	m.InjectErrors(0)
	out.ops = m.Ops() - before
	out.backupErr = err
	if isPanic(err) {
		return out, err
	}
	s.Close()

	crashed := m.Crash()
	s2, err := openMem(crashed)
	if err != nil {
		return out, fmt.Errorf("open after crash: %w", err)
	}
	defer s2.Close()
	want := map[string]string{sn1.ID: ct.want1}
	if sn2 != nil {
		want[sn2.ID] = ct.want2
	}
	// A failed backup may still have committed: its journal record was
	// durable before the failure (sealing the record). Such a snapshot is
	// accepted only whole: it verifies and restores version 2.
	other := ""
	if sn2 == nil {
		other = ct.want2
	}
	snaps, err := checkStore(t, s2, ct.src, want, other)
	if err != nil {
		return out, fmt.Errorf("after crash: %w", err)
	}
	switch {
	case len(snaps) == 0 || snaps[0].ID != sn1.ID:
		return out, fmt.Errorf("after crash: the first snapshot is lost: %v", snaps)
	case out.backupErr == nil && (len(snaps) != 2 || snaps[1].ID != sn2.ID):
		return out, fmt.Errorf("after crash: the second snapshot, committed, is lost: %v", snaps)
	case len(snaps) > 2:
		return out, fmt.Errorf("after crash: %d snapshots, want at most 2", len(snaps))
	case len(snaps) == 2 && out.backupErr != nil && !sealingRecordFailed(out.backupErr):
		// Only a failure to seal the durable record leaves it in doubt
		// whether the snapshot exists; anything later happens after the
		// commit and must not fail the backup.
		return out, fmt.Errorf("after crash: the snapshot exists, yet its backup failed: %v", out.backupErr)
	}
	out.committed = len(snaps) == 2

	// The store stays usable: another backup after the crash commits.
	// Left to the full run: it reads the whole tree again, slow under -race.
	if testing.Short() {
		return out, nil
	}
	sn3, err := guardedBackup(t, ctx, s2, ct.src)
	if err != nil {
		return out, fmt.Errorf("backup after crash: %w", err)
	}
	rep, err := s2.Verify(ctx, nil, nil)
	if err != nil || rep.Damaged() {
		return out, fmt.Errorf("verify after the backup after the crash: %v %v", err, rep)
	}
	all, err := s2.Snapshots()
	if err != nil || len(all) != len(snaps)+1 || all[len(all)-1].ID != sn3.ID {
		return out, fmt.Errorf("snapshots after the backup after the crash: %v %v", all, err)
	}
	return out, nil
}

// sealingRecordFailed says whether err is a journal record's commit failing
// at the seal, after the record became durable.
func sealingRecordFailed(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "commit journal/") && strings.Contains(msg, ": seal: ")
}

func TestCrashBackupSweep(t *testing.T) {
	ct := newCrashTree(t)
	base, err := crashRun(t, ct, 0)
	if err != nil {
		t.Fatalf("without faults: %v", err)
	}
	if base.backupErr != nil || !base.committed {
		t.Fatalf("without faults the second backup failed: %v", base.backupErr)
	}
	limit := 200
	if testing.Short() {
		limit = 30
	}
	// A little past the end: the operation count varies between runs with
	// how blobs fall to the workers.
	values := sweepValues(base.ops+base.ops/10+2, limit)
	t.Logf("second backup: %d operations; sweeping %d values of N", base.ops, len(values))
	var failed, ok, committedAnyway, bad int
	for _, n := range values {
		out, err := crashRun(t, ct, n)
		if err != nil {
			t.Errorf("N=%d (backup error: %v): %v", n, out.backupErr, err)
			if bad++; bad >= 5 {
				t.Fatal("too many failures")
			}
			continue
		}
		switch {
		case out.backupErr == nil:
			ok++
		case out.committed:
			committedAnyway++
			failed++
		default:
			failed++
		}
		if out.backupErr != nil && !errors.Is(out.backupErr, vfs.ErrInjected) {
			t.Errorf("N=%d: backup failed with an error that does not wrap the injected fault: %v", n, out.backupErr)
		}
	}
	ct.setVersion(t, 1)
	t.Logf("backup failed %d times (%d of them committed before the error), succeeded %d times", failed, committedAnyway, ok)
	if failed == 0 {
		t.Error("no injected fault made a backup fail")
	}
}

// sealHookFS calls onSeal after every successful Seal.
type sealHookFS struct {
	vfs.FS
	onSeal func(name string)
}

func (f *sealHookFS) Seal(name string) error {
	err := f.FS.Seal(name)
	if err == nil {
		f.onSeal(name)
	}
	return err
}

func TestCrashAfterBackupKeepsEverything(t *testing.T) {
	ct := newCrashTree(t)
	ctx := context.Background()
	m := vfs.NewMem()
	s := initMemStore(t, m)
	sn, err := guardedBackup(t, ctx, s, ct.src)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := openMem(m.Crash())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	snaps, err := checkStore(t, s2, ct.src, map[string]string{sn.ID: ct.want1}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].ID != sn.ID || snaps[0].Root != sn.Root || snaps[0].Refs != sn.Refs || snaps[0].Seq != sn.Seq {
		t.Fatalf("after crash: snapshots %+v, want %+v", snaps, sn)
	}
}

func TestCrashDuringCancelledBackup(t *testing.T) {
	ct := newCrashTree(t)
	m := vfs.NewMem()
	initMemStore(t, m).Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	sealed := 0
	hook := &sealHookFS{FS: m, onSeal: func(name string) {
		if !strings.HasPrefix(name, "packs/") {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if sealed++; sealed == 2 {
			cancel()
		}
	}}
	s, err := openMem(hook)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := guardedBackup(t, ctx, s, ct.src)
	s.Close()
	if err == nil {
		t.Fatalf("the cancelled backup committed snapshot %s", sn.ID[:12])
	}
	if !errors.Is(err, context.Canceled) || isPanic(err) {
		t.Fatalf("cancelled backup: %v", err)
	}
	mu.Lock()
	n := sealed
	mu.Unlock()
	if n < 2 {
		t.Fatalf("only %d packs were sealed before the cancel", n)
	}

	s2, err := openMem(m.Crash())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	snaps, err := checkStore(t, s2, ct.src, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 0 {
		t.Fatalf("a cancelled backup left snapshots: %v", snaps)
	}
	packs, err := s2.packFiles()
	if err != nil {
		t.Fatal(err)
	}
	if len(packs) < 2 {
		t.Fatalf("%d packs survived the crash, want at least the %d sealed before the cancel", len(packs), n)
	}
	sn, err = guardedBackup(t, context.Background(), s2, ct.src)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d packs sealed before the cancel; the next backup stored %d new bytes of %d", n, sn.NewBytes, sn.Bytes)
	if sn.NewBytes >= sn.Bytes {
		t.Errorf("the backup after the cancel stored %d new bytes of %d: the packs sealed before it were not reused", sn.NewBytes, sn.Bytes)
	}
	if _, err := checkStore(t, s2, ct.src, map[string]string{sn.ID: ct.want1}, ""); err != nil {
		t.Fatal(err)
	}
}

// TestFaultsDuringOpenVerifyRebuild fails the N-th operation of opening the
// store (which clears leftovers in tmp/), verifying it and rebuilding its
// index; whatever fails, a crash afterwards leaves a clean store.
func TestFaultsDuringOpenVerifyRebuild(t *testing.T) {
	ct := newCrashTree(t)
	ctx := context.Background()
	m := vfs.NewMem()
	s := initMemStore(t, m)
	sn, err := guardedBackup(t, ctx, s, ct.src)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Leftovers of interrupted writes that happened to become durable.
	for i := 0; i < 3; i++ {
		f, err := m.OpenFile(fmt.Sprintf("%s/leftover%d", tmpDir, i), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("half a pack"))
		f.Sync()
		f.Close()
	}
	if err := m.SyncDir(tmpDir); err != nil {
		t.Fatal(err)
	}
	base := m.Crash()
	want := map[string]string{sn.ID: ct.want1}

	// One pass: open, verify shallow and deep, rebuild the index, verify.
	pass := func(fsys *vfs.MemFS) error {
		s, err := openMem(fsys)
		if err != nil {
			return err
		}
		defer s.Close()
		var errs []error
		if _, err := s.Verify(ctx, nil, nil); err != nil {
			errs = append(errs, err)
		}
		if r, err := s.Unlock(testPass); err == nil {
			if _, err := s.Verify(ctx, r, nil); err != nil {
				errs = append(errs, err)
			}
			r.Close()
		}
		if _, err := s.RebuildIndex(ctx); err != nil {
			errs = append(errs, err)
		}
		if _, err := s.Verify(ctx, nil, nil); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	clean := base.Crash()
	before := clean.Ops()
	if err := guard(t, "open, verify, rebuild", func() error { return pass(clean) }); err != nil {
		t.Fatalf("without faults: %v", err)
	}
	ops := clean.Ops() - before
	limit := 200
	if testing.Short() {
		limit = 30
	}
	values := sweepValues(ops+2, limit)
	t.Logf("open, verify, rebuild: %d operations; sweeping %d values of N", ops, len(values))
	failed := 0
	for _, n := range values {
		fsys := base.Crash()
		fsys.InjectErrors(n)
		err := guard(t, "open, verify, rebuild", func() error { return pass(fsys) })
		fsys.InjectErrors(0)
		if isPanic(err) {
			t.Fatalf("N=%d: %v", n, err)
		}
		if err != nil {
			failed++
		}
		s, err := openMem(fsys.Crash())
		if err != nil {
			t.Fatalf("N=%d: open after crash: %v", n, err)
		}
		snaps, err := checkStore(t, s, ct.src, want, "")
		s.Close()
		if err != nil {
			t.Fatalf("N=%d: after crash: %v", n, err)
		}
		if len(snaps) != 1 {
			t.Fatalf("N=%d: after crash: snapshots %v", n, snaps)
		}
	}
	t.Logf("%d of %d runs failed", failed, len(values))
	if failed == 0 {
		t.Error("no injected fault made opening, verifying or rebuilding fail")
	}
}

// TestCancelWhilePacksAreSealed cancels a backup after every blob is stored,
// while the workers seal their last packs: the backup must then fail, or
// commit a snapshot whose packs all exist.
func TestCancelWhilePacksAreSealed(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, crashDirMode); err != nil {
		t.Fatal(err)
	}
	// Less than a pack: every pack is sealed when the backup closes.
	writeFileAt(t, filepath.Join(src, "f"), crashBytes(7, crashPackTarget/3), crashMtime1)
	setMtime(t, src, crashMtime1)
	want := t.TempDir()
	writeFileAt(t, filepath.Join(want, "f"), crashBytes(7, crashPackTarget/3), crashMtime1)
	if err := os.Chmod(want, crashDirMode); err != nil {
		t.Fatal(err)
	}
	runs := 20
	if testing.Short() {
		runs = 5
	}
	committed := 0
	for i := 0; i < runs; i++ {
		m := vfs.NewMem()
		initMemStore(t, m).Close()
		ctx, cancel := context.WithCancel(context.Background())
		hook := &sealHookFS{FS: m, onSeal: func(name string) {
			if strings.HasPrefix(name, "packs/") {
				cancel()
			}
		}}
		s, err := openMem(hook)
		if err != nil {
			t.Fatal(err)
		}
		sn, backupErr := guardedBackup(t, ctx, s, src)
		cancel()
		s.Close()
		if isPanic(backupErr) || backupErr != nil && !errors.Is(backupErr, context.Canceled) {
			t.Fatalf("run %d: backup: %v", i, backupErr)
		}
		s2, err := openMem(m.Crash())
		if err != nil {
			t.Fatal(err)
		}
		wantSnaps := map[string]string{}
		if sn != nil {
			wantSnaps[sn.ID] = want
			committed++
		}
		snaps, err := checkStore(t, s2, src, wantSnaps, "")
		s2.Close()
		if err != nil {
			t.Fatalf("run %d (backup error: %v): %v", i, backupErr, err)
		}
		if len(snaps) != len(wantSnaps) {
			t.Fatalf("run %d: snapshots %v, want %d", i, snaps, len(wantSnaps))
		}
	}
	t.Logf("%d of %d backups committed despite the cancel", committed, runs)
}
