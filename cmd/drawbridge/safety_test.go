//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/fixture"
)

// TestNoPlaintextAtRest: nothing a backup stores holds file content or
// names in plain, and reading needs the passphrase while ingest does not.
func TestNoPlaintextAtRest(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	src := t.TempDir()
	tree := filepath.Join(src, "tree")
	fixture.Nasty(filepath.Join(tree, "nasty"))
	for seed := uint64(40); seed < 45; seed++ {
		fixture.Random(filepath.Join(tree, fmt.Sprintf("random-%d", seed)), seed)
	}
	// A name that must not appear either: trees are encrypted and the file
	// cache is keyed by a keyed hash.
	const nameMarker = "DRAWBRIDGE-NAME-MARKER-51c8e2"
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "sub", nameMarker), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Ingest and every command that needs no passphrase work without one.
	v.backup("plain", tree)
	v.backup("plain", tree)
	v.backup("other", tree)
	for _, args := range [][]string{{"snapshots"}, {"journal"}, {"verify"}, {"index", "rebuild"}} {
		if r := v.runNoPass(args...); r.code != 0 {
			t.Errorf("%s needs no passphrase: want exit 0:\n%s", args[0], r)
		}
	}

	// Reading needs it: none configured, stdin not a terminal.
	for _, args := range [][]string{{"ls", "latest"}, {"restore", "latest", "--target"}, {"verify", "--deep"}} {
		target := filepath.Join(t.TempDir(), "target")
		if args[0] == "restore" {
			args = append(args, target)
		}
		r := v.runNoPass(args...)
		if r.code != 1 || !strings.Contains(r.stderr, "passphrase") {
			t.Errorf("%s without a passphrase: want exit 1 and a message about the passphrase:\n%s", args[0], r)
		}
		if strings.Contains(r.stdout, "nasty") {
			t.Errorf("%s without a passphrase printed snapshot content:\n%s", args[0], r)
		}
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("%s without a passphrase created the target", args[0])
		}
	}
	// A wrong passphrase is refused.
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not the passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"ls", "latest"}, {"restore", "latest", "--target"}, {"verify", "--deep"}} {
		target := filepath.Join(t.TempDir(), "target")
		if args[0] == "restore" {
			args = append(args, target)
		}
		r := runEnv(t, []string{"DRAWBRIDGE_STORE=" + v.dir, "DRAWBRIDGE_PASSPHRASE_FILE=" + wrong}, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "passphrase") {
			t.Errorf("%s with a wrong passphrase: want exit 1 and a message about the passphrase:\n%s", args[0], r)
		}
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("%s with a wrong passphrase created the target", args[0])
		}
		// The flag overrides the environment.
		r = v.run(append(args, "--passphrase-file", wrong)...)
		if r.code != 1 {
			t.Errorf("%s --passphrase-file WRONG: want exit 1:\n%s", args[0], r)
		}
	}
	// With the passphrase everything reads (and the index is in use).
	v.restoreCompare("plain/latest", tree)
	if r := v.run("ls", "other/latest"); r.code != 0 || !strings.Contains(r.stdout, nameMarker) {
		t.Errorf("ls with the passphrase should list %s:\n%s", nameMarker, r)
	}
	if r := v.run("verify", "--deep"); r.code != 0 {
		t.Errorf("verify --deep:\n%s", r)
	}

	// Every file of the store, the index included.
	files := 0
	err := filepath.WalkDir(v.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), nameMarker) || strings.Contains(d.Name(), fixture.Marker) {
			t.Errorf("%s: a file name in the store holds a source name", p)
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		for _, m := range []string{fixture.Marker, nameMarker, "hello " + fixture.Marker} {
			if i := bytes.Index(b, []byte(m)); i >= 0 {
				t.Errorf("%s holds %q in plain at offset %d", p, m, i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("only %d files in the store", files)
	}
}

// sealedFiles lists the files a store never changes: packs, journal
// records, reference lists, keys.json and store.json.
func sealedFiles(t testing.TB, dir string) []string {
	t.Helper()
	out := []string{filepath.Join(dir, "keys.json"), filepath.Join(dir, "store.json")}
	for _, sub := range []string{"packs", "journal", "refs"} {
		err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func hashFiles(t testing.TB, names []string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = sha256.Sum256(b)
	}
	return out
}

// checkSealedModes wants every sealed file to be a regular file of mode 0444.
func checkSealedModes(t testing.TB, dir string) {
	t.Helper()
	for _, n := range sealedFiles(t, dir) {
		fi, err := os.Lstat(n)
		if err != nil {
			t.Error(err)
			continue
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: mode %v, want a regular file of mode 0444", n, fi.Mode())
		}
	}
}

// TestAppendOnly: nothing a store has sealed changes or goes away, whatever
// later commands do.
func TestAppendOnly(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	src := t.TempDir()
	a := filepath.Join(src, "a")
	dataTree(t, a, 51, 12<<20, 2<<20)
	fixture.Nasty(filepath.Join(a, "nasty"))
	v.backup("a", a)
	v.backup("a", a)

	before := hashFiles(t, sealedFiles(t, v.dir))
	checkSealedModes(t, v.dir)
	if len(packs(t, v.dir)) == 0 {
		t.Fatal("no packs after a backup")
	}

	b := filepath.Join(src, "b")
	dataTree(t, b, 52, 8<<20, 2<<20)
	v.backup("b", b, a)
	// Change a: new, changed and removed files.
	if err := os.WriteFile(filepath.Join(a, "d00", "f0000"), []byte("rewritten"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(a, "d01", "f0001")); err != nil {
		t.Fatal(err)
	}
	dataTree(t, filepath.Join(a, "more"), 53, 4<<20, 1<<20)
	v.backup("a", a)
	v.verifyOK()
	if r := v.run("verify", "--deep"); r.code != 0 {
		t.Fatalf("verify --deep:\n%s", r)
	}
	if r := v.runNoPass("index", "rebuild"); r.code != 0 {
		t.Fatalf("index rebuild:\n%s", r)
	}
	v.restoreCompare("a/latest", a)
	v.mustRun("ls", "b/latest")
	v.mustRun("journal")
	v.mustRun("snapshots")
	v.backup("b", b)
	v.verifyOK()

	after := hashFiles(t, sealedFiles(t, v.dir))
	for n, h := range before {
		h2, ok := after[n]
		switch {
		case !ok:
			t.Errorf("%s was removed", n)
		case h2 != h:
			t.Errorf("%s was changed", n)
		}
	}
	if len(after) <= len(before) {
		t.Errorf("later backups added no sealed files (%d before, %d after)", len(before), len(after))
	}
	checkSealedModes(t, v.dir)
}

// needTool skips the test when a command it needs is missing, except in CI.
func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		fixture.Need(t, fmt.Sprintf("%s not found: install %s", name, pkg))
	}
}

// loopExt4 mounts a fresh 64 MiB ext4 filesystem on a loop device and
// returns its mount point; cleanup unseals it, unmounts and detaches.
func loopExt4(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		fixture.Need(t, "needs root to mount a loop device: run the tests as root")
	}
	needTool(t, "mkfs.ext4", "e2fsprogs")
	needTool(t, "losetup", "util-linux")
	needTool(t, "mount", "util-linux (mount)")
	needTool(t, "umount", "util-linux (mount)")
	tmp := t.TempDir()
	img := filepath.Join(tmp, "ext4.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	sh := func(name string, args ...string) (string, error) {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	if _, err := sh("mkfs.ext4", "-q", "-F", img); err != nil {
		t.Fatal(err)
	}
	dev, err := sh("losetup", "--find", "--show", img)
	if err != nil {
		fixture.Need(t, fmt.Sprintf("no loop device (load the loop module, or give the container /dev/loop*): %v", err))
	}
	dev = strings.TrimSpace(dev)
	t.Cleanup(func() {
		if _, err := sh("losetup", "-d", dev); err != nil {
			t.Error(err)
		}
	})
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := sh("mount", "-t", "ext4", dev, mnt); err != nil {
		fixture.Need(t, fmt.Sprintf("cannot mount a loop device here: %v", err))
	}
	t.Cleanup(func() {
		if _, err := sh("umount", mnt); err != nil {
			t.Error(err)
		}
	})
	// Registered last, so it runs first: the store's files must lose their
	// immutable flag before the unmount and the removal of tmp.
	t.Cleanup(func() { fixture.Unseal(mnt) })
	return mnt
}

func inodeFlags(t *testing.T, p string) uint32 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatalf("FS_IOC_GETFLAGS %s: %v", p, err)
	}
	return flags
}

// TestImmutableOnExt4: on a filesystem with the immutable flag, sealed
// files carry it and not even root can remove a pack.
func TestImmutableOnExt4(t *testing.T) {
	t.Parallel()
	mnt := loopExt4(t)
	tmp := t.TempDir()
	pass := filepath.Join(tmp, "passphrase")
	if err := os.WriteFile(pass, []byte(passphrase), 0o600); err != nil {
		t.Fatal(err)
	}
	v := &vault{t: t, dir: filepath.Join(mnt, "store"), pass: pass}
	v.mustRun("init")
	src := filepath.Join(tmp, "src")
	dataTree(t, src, 61, 6<<20, 1<<20)
	fixture.Nasty(filepath.Join(src, "nasty"))
	v.backup("ext4", src)
	v.backup("ext4", src)

	const immutable = 0x10 // FS_IMMUTABLE_FL
	sealed := sealedFiles(t, v.dir)
	ps := packs(t, v.dir)
	if len(ps) == 0 {
		t.Fatal("no packs")
	}
	for _, n := range sealed {
		if inodeFlags(t, n)&immutable == 0 {
			t.Errorf("%s is not immutable", n)
		}
	}
	checkSealedModes(t, v.dir)
	if out, err := exec.Command("lsattr", "-d", sealed[0]).CombinedOutput(); err == nil {
		attrs, _, _ := strings.Cut(string(out), " ")
		if !strings.Contains(attrs, "i") {
			t.Errorf("lsattr %s: %s", sealed[0], out)
		}
	}
	for id, p := range ps {
		if out, err := exec.Command("rm", "-f", p).CombinedOutput(); err == nil {
			t.Errorf("rm -f of pack %s succeeded: %s", id, out)
		}
		if err := os.Remove(p); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("remove pack %s: %v, want a permission error", id, err)
		}
		if f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			f.Close()
			t.Errorf("pack %s opened for writing", id)
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("pack %s: %v", id, err)
		}
	}
	v.verifyOK()
	v.restoreCompare("ext4/latest", src)
}

// TestCrashSafety kills backups at random moments. After each kill the
// store verifies, lists only snapshots of backups that completed, and a
// last backup reuses what the killed ones stored.
func TestCrashSafety(t *testing.T) {
	// Big files to store, and many small ones so that even a backup that
	// finds every chunk stored takes longer than most kill delays.
	iters, size, small := 20, int64(128<<20), 24000
	if testing.Short() {
		iters, size, small = 5, 32<<20, 4000
	}
	v := newVaultCLI(t)
	tree := filepath.Join(t.TempDir(), "tree")
	files, treeBytes := dataTree(t, filepath.Join(tree, "big"), 71, size, 12<<20)
	treeBytes += smallFiles(t, filepath.Join(tree, "small"), 72, small)
	files += int64(small)
	env := []string{"DRAWBRIDGE_STORE=" + v.dir}
	rng := rand.New(rand.NewPCG(71, 72))

	complete := func(s snapJSON) bool {
		return s.Status == "ok" && s.Files == files && s.Bytes == treeBytes
	}
	completed, killed, lateKills := 0, 0, 0
	// Kills come 50 ms to 1500 ms after the start, or at most as late as
	// the quickest backup that completed took, so that on a fast machine
	// they still land inside the backup.
	window := 1500 * time.Millisecond
	start := time.Now()
	for i := 0; i < iters; i++ {
		delay := 50*time.Millisecond + time.Duration(rng.Int64N(int64(window-50*time.Millisecond)))
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd, out, errOut := command(ctx, env, "backup", "--json", "--source", fmt.Sprintf("crash-%02d", i), tree)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		wasKilled := false
		select {
		case err = <-done:
		case <-time.After(delay):
			cmd.Process.Signal(syscall.SIGKILL)
			err = <-done
			wasKilled = true
		}
		cancel()
		var ee *exec.ExitError
		switch {
		case err == nil:
			// It finished before the kill came.
			wasKilled = false
			completed++
			window = min(window, max(time.Since(began), 100*time.Millisecond))
		case wasKilled && errors.As(err, &ee) && ee.ExitCode() == -1:
			killed++
		default:
			t.Fatalf("backup %d: %v\nstdout:\n%s\nstderr:\n%s", i, err, out, errOut)
		}

		v.verifyOK()
		snaps := v.snapshots()
		for _, s := range snaps {
			if !complete(s) {
				t.Fatalf("after kill %d a half snapshot is listed: %+v (the tree has %d files, %d bytes)", i, s, files, treeBytes)
			}
		}
		// A kill that lands between the journal record and the exit leaves
		// a complete snapshot; that is the only way a killed run shows.
		if wasKilled && len(snaps) == completed+lateKills+1 && snaps[len(snaps)-1].Source == fmt.Sprintf("crash-%02d", i) {
			lateKills++
		}
		if len(snaps) != completed+lateKills {
			t.Fatalf("after run %d (%d completed, %d killed): %d snapshots listed", i, completed, killed, len(snaps))
		}
		if ents, err := os.ReadDir(filepath.Join(v.dir, "tmp")); err != nil || len(ents) > 0 {
			t.Errorf("after run %d tmp/ still holds %d entries (%v)", i, len(ents), err)
		}
		checkSealedModes(t, v.dir)
		var packBytes int64
		for _, p := range packs(t, v.dir) {
			if fi, err := os.Stat(p); err == nil {
				packBytes += fi.Size()
			}
		}
		t.Logf("run %2d: delay %4d ms: killed %-5v: %d packs, %d MB", i, delay.Milliseconds(), wasKilled, len(packs(t, v.dir)), packBytes>>20)
	}
	if !testing.Short() && killed < iters/2 {
		t.Errorf("only %d of %d runs were killed before they completed", killed, iters)
	}

	loop := time.Since(start).Round(time.Millisecond)
	var packBytes int64
	for _, p := range packs(t, v.dir) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		packBytes += fi.Size()
	}
	final := v.backup("final", tree)
	if final.Files != files || final.Bytes != treeBytes {
		t.Fatalf("final backup: %d files, %d bytes; the tree has %d, %d", final.Files, final.Bytes, files, treeBytes)
	}
	t.Logf("%d runs: %d killed mid-backup, %d completed, %d killed after committing; the tree has %d MB in %d files; "+
		"packs held %d MB before the final backup, which read %d MB and added %d MB new (%.1f%% of the tree); loop took %v",
		iters, killed, completed, lateKills, treeBytes>>20, files, packBytes>>20, final.Bytes>>20, final.NewBytes>>20,
		100*float64(final.NewBytes)/float64(treeBytes), loop)
	// Everything sealed before is reused: a stored chunk is never stored
	// again, so what is new is at most what the packs did not hold yet
	// (stored bytes are compressed plaintext plus a small overhead), and
	// the directory trees.
	slack := packBytes/100 + files*128 + 1<<20
	if final.NewBytes > treeBytes-packBytes+slack {
		t.Errorf("final backup stored %d new bytes of %d although the packs already held %d bytes", final.NewBytes, treeBytes, packBytes)
	}
	if packBytes > treeBytes/2 && final.NewBytes > treeBytes/2 {
		t.Errorf("final backup stored %d new bytes of %d: the killed runs' packs were not reused", final.NewBytes, treeBytes)
	}
	if r := v.run("verify", "--deep"); r.code != 0 {
		t.Fatalf("verify --deep after the kills:\n%s", r)
	}
	// Restoring the many small files would take long; the big ones suffice.
	big := filepath.Join(tree, "big")
	target := filepath.Join(t.TempDir(), "restore")
	v.mustRun("restore", "final/latest:"+big, "--target", target)
	if diffs := compareContents(big, target); len(diffs) > 0 {
		t.Errorf("restore after the kills differs:\n%s", strings.Join(diffs, "\n"))
	}
}
