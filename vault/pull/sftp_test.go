package pull

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"drawbridge/vault/config"
	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/internal/sshtest"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

// truncateTimes drops the nanoseconds of every mtime under dir (SFTP
// carries seconds), directories last.
func truncateTimes(t testing.TB, dir string) {
	t.Helper()
	var paths []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		return nil
	})
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		ts := []unix.Timespec{st.Atim, {Sec: st.Mtim.Sec}}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSFTPPull(t *testing.T) {
	s := newStore(t)
	base := t.TempDir()
	srcDir := filepath.Join(base, "srv", "app")
	fixture.Random(srcDir, 42)
	big, data := randomFile(t, 3_000_000)
	if err := os.Rename(big, filepath.Join(srcDir, "big.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("big.bin", filepath.Join(srcDir, "big-link")); err != nil {
		t.Fatal(err)
	}
	single := filepath.Join(base, "etc-hosts")
	if err := os.WriteFile(single, []byte("127.0.0.1 localhost\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(base, "srv"), 0o710); err != nil {
		t.Fatal(err)
	}
	truncateTimes(t, base)

	h := sshtest.Start(t, sshtest.Options{AuthorizedKeys: []string{keyLine(s, "restrict")}, SFTPReadOnly: true})
	src := sourceFor(t, h, "files", config.KindSFTP)
	// A nested root and a repeated one are covered by their outer root.
	src.Paths = []string{srcDir, single, filepath.Join(srcDir, "big.bin"), srcDir}
	var res Result
	d := since(func() { res = pullOne(t, s, src) })
	if res.Err != nil {
		t.Fatalf("pull: %v\n%s", res.Err, h.Log())
	}
	sn := res.Snapshot
	t.Logf("sftp pull: %d files, %d bytes in %.2f s (%.1f MB/s)", sn.Files, sn.Bytes, d.Seconds(), float64(sn.Bytes)/1e6/d.Seconds())
	if sn.Kind != "sftp" || sn.HostKey != ssh.FingerprintSHA256(h.HostKey) || sn.Status != "ok" || sn.Bytes < int64(len(data)) {
		t.Fatalf("snapshot %+v", sn)
	}
	if strings.Join(sn.Paths, " ") != single+" "+srcDir {
		t.Fatalf("paths %v", sn.Paths)
	}

	dir := restoreSnap(t, s, sn, "")
	if diffs := fixture.Compare(srcDir, filepath.Join(dir, srcDir)); len(diffs) > 0 {
		t.Fatalf("restored tree differs:\n%s", strings.Join(diffs, "\n"))
	}
	if diffs := fixture.Compare(single, filepath.Join(dir, single)); len(diffs) > 0 {
		t.Fatalf("restored file differs:\n%s", strings.Join(diffs, "\n"))
	}
	// Directories on the way from / carry their real metadata, and hold
	// only what leads to the roots.
	for _, p := range []string{filepath.Join(base, "srv"), base} {
		a, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if a.Mode() != b.Mode() || a.ModTime().Unix() != b.ModTime().Unix() {
			t.Errorf("%s: mode %v mtime %v, restored %v %v", p, a.Mode(), a.ModTime(), b.Mode(), b.ModTime())
		}
	}
	ents, err := os.ReadDir(filepath.Join(dir, base))
	if err != nil || len(ents) != 2 {
		t.Fatalf("restored %s holds %v (%v), want etc-hosts and srv", base, ents, err)
	}

	// A second pull stores nothing new but the trees of directories on
	// the way, whose mtimes (/tmp's) other processes change.
	again := pullOne(t, s, src)
	if again.Err != nil {
		t.Fatal(again.Err)
	}
	if again.Snapshot.NewBytes > 4096 {
		t.Fatalf("second pull of the same tree stored %d new bytes", again.Snapshot.NewBytes)
	}
	verifyClean(t, s)
}

// TestSFTPForcedReadOnly: the authorized_keys line that `authorized-key`
// prints for an sftp source, restrict,command="internal-sftp -R", makes
// a source with an ordinary read-write SFTP subsystem read-only for the
// vault's key, and pulls work through it.
func TestSFTPForcedReadOnly(t *testing.T) {
	s := newStore(t)
	srcDir := filepath.Join(t.TempDir(), "data")
	fixture.Random(srcDir, 7)
	truncateTimes(t, srcDir)
	h := sshtest.Start(t, sshtest.Options{
		AuthorizedKeys: []string{keyLine(s, AuthorizedKeyOptions(&config.Config{}, &config.Source{Kind: config.KindSFTP}))},
		ExtraConfig:    []string{"Subsystem sftp /usr/lib/openssh/sftp-server"},
	})
	src := sourceFor(t, h, "ro", config.KindSFTP)
	src.Paths = []string{srcDir}
	res := pullOne(t, s, src)
	if res.Err != nil {
		t.Fatalf("pull: %v\n%s", res.Err, h.Log())
	}
	dir := restoreSnap(t, s, res.Snapshot, "")
	if diffs := fixture.Compare(srcDir, filepath.Join(dir, srcDir)); len(diffs) > 0 {
		t.Fatalf("restored tree differs:\n%s", strings.Join(diffs, "\n"))
	}

	// The same key cannot write, and cannot run a shell.
	signer, err := ssh.NewSignerFromKey(s.Keys().SSH)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", h.Addr, &ssh.ClientConfig{User: h.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(h.HostKey)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	victim := filepath.Join(t.TempDir(), "written-by-vault-key")
	if f, err := cl.Create(victim); err == nil {
		f.Close()
		t.Fatal("the vault's key could create a file over SFTP")
	}
	if err := cl.Remove(filepath.Join(srcDir, "nonexistent")); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("remove over a read-only SFTP: %v", err)
	}
	if _, err := os.Stat(victim); err == nil {
		t.Fatal("a file was written on the source")
	}
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := sess.CombinedOutput("touch " + victim)
	if _, err := os.Stat(victim); err == nil {
		t.Fatalf("the vault's key ran a command on an sftp source: %s", out)
	}
}

// hostileHost starts a source whose SFTP server is this test binary
// answering in the given mode.
func hostileHost(t testing.TB, s *store.Store, mode string) *sshtest.Host {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return sshtest.Start(t, sshtest.Options{
		AuthorizedKeys: []string{keyLine(s, `restrict,command="`+exe+` `+hostileServerArg+` `+mode+`"`)},
		SFTPReadOnly:   true,
	})
}

// TestSFTPHostile: a server that sends names no filesystem holds, or more
// than the caps, fails the pull; one that refuses single files yields a
// partial snapshot.
func TestSFTPHostile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts many source hosts")
	}
	s := newStore(t)
	defer func(e, d int) { maxListEntries, maxDepth = e, d }(maxListEntries, maxDepth)
	maxListEntries, maxDepth = 1000, 8

	pull := func(t *testing.T, mode string) (Result, *sshtest.Host) {
		h := hostileHost(t, s, mode)
		src := sourceFor(t, h, "hostile-"+mode, config.KindSFTP)
		src.Paths = []string{"/data"}
		return pullOne(t, s, src), h
	}
	for _, mode := range []string{"slash", "nul", "sub", "dotdot", "empty", "dup", "many", "badlink", "many-bytes"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "many-bytes" {
				// The same listing, caught by its size instead.
				defer func(e, b int) { maxListEntries, maxListBytes = e, b }(maxListEntries, maxListBytes)
				maxListEntries, maxListBytes = tree.MaxEntries, 20000
				mode = "many"
			}
			before := len(snapshots(t, s))
			res, h := pull(t, mode)
			if res.Err == nil {
				t.Fatalf("pull from a hostile server (%s) made snapshot %+v", mode, res.Snapshot)
			}
			if !errors.Is(res.Err, ErrHostileSource) {
				t.Errorf("error does not wrap ErrHostileSource: %v\n%s", res.Err, h.Log())
			}
			t.Logf("%s: %v", mode, res.Err)
			if len(snapshots(t, s)) != before {
				t.Fatal("a snapshot was committed")
			}
		})
	}
	t.Run("ok", func(t *testing.T) {
		res, h := pull(t, "ok")
		if res.Err != nil {
			t.Fatalf("%v\n%s", res.Err, h.Log())
		}
		dir := restoreSnap(t, s, res.Snapshot, "/data")
		var got []string
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, rel)
			return nil
		})
		if strings.Join(got, " ") != ". a.txt link sub sub/b.txt" {
			t.Fatalf("restored %v", got)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "sub", "b.txt")); string(b) != hostileFile.data {
			t.Fatalf("content %q", b)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		res, _ := pull(t, "unreadable")
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if res.Snapshot.Status != "partial" || res.Snapshot.Errors != 1 || res.Snapshot.Files != 2 {
			t.Fatalf("snapshot %+v", res.Snapshot)
		}
		dir := restoreSnap(t, s, res.Snapshot, "/data")
		if _, err := os.Stat(filepath.Join(dir, "a.txt")); err == nil {
			t.Fatal("an unreadable file is in the snapshot")
		}
		if _, err := os.Stat(filepath.Join(dir, "b.txt")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("stall", func(t *testing.T) {
		h := hostileHost(t, s, "stall")
		src := sourceFor(t, h, "hostile-stall", config.KindSFTP)
		src.Paths, src.Timeout = []string{"/data"}, 5*time.Second
		var res Result
		d := since(func() { res = pullOne(t, s, src) })
		if res.Err == nil || !strings.Contains(res.Err.Error(), "idle timeout") || d > 10*time.Second {
			t.Fatalf("pull from a server that stops answering: %v after %v", res.Err, d)
		}
	})
	t.Run("deep", func(t *testing.T) {
		res, _ := pull(t, "deep")
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if res.Snapshot.Status != "partial" || res.Snapshot.Dirs != int64(maxDepth) {
			t.Fatalf("snapshot %+v", res.Snapshot)
		}
	})
	verifyClean(t, s)
}

// TestSFTPSource: an SFTP pull of a path that does not exist on the source
// fails and says which.
func TestSFTPMissingRoot(t *testing.T) {
	s := newStore(t)
	h := sshtest.Start(t, sshtest.Options{AuthorizedKeys: []string{keyLine(s, "restrict")}, SFTPReadOnly: true})
	src := sourceFor(t, h, "missing", config.KindSFTP)
	src.Paths = []string{filepath.Join(t.TempDir(), "nope")}
	res := pullOne(t, s, src)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "nope") {
		t.Fatalf("pull of a missing root: %v", res.Err)
	}
	_ = context.Background
}

// limitWriter passes on exactly the listed size, however the writes fall.
func TestLimitWriter(t *testing.T) {
	for _, writes := range [][]int{{10}, {3, 3, 3}, {4, 6}, {12}, {5, 5, 5}, {0, 10, 1}} {
		var got strings.Builder
		l := &limitWriter{w: &got, n: 10}
		var err error
		for _, n := range writes {
			if _, err = l.Write([]byte(strings.Repeat("x", n))); err != nil {
				break
			}
		}
		total := 0
		for _, n := range writes {
			total += n
		}
		if got.Len() != min(total, 10) {
			t.Errorf("writes %v: %d bytes passed on", writes, got.Len())
		}
		if total > 10 && !errors.Is(err, errSFTPLimit) {
			t.Errorf("writes %v: error %v past the limit", writes, err)
		}
	}
}

// An SFTP pull cut off in the middle of a large file keeps what it stored,
// and the next pull reads that file from where the stored chunks end: the
// source sends about the rest.
func TestSFTPPullResume(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MB tree")
	}
	s, dir := newStoreAt(t, 1<<20)
	src := filepath.Join(t.TempDir(), "src")
	sizes := []int{48 << 20, 8 << 20, 8 << 20}
	randomTree(t, src, 5, sizes...)
	truncateTimes(t, src) // SFTP gives whole seconds
	total := sum(sizes)
	h := sshtest.Start(t, sshtest.Options{AuthorizedKeys: []string{keyLine(s, "restrict")}, SFTPReadOnly: true})
	cfg := &config.Config{Path: "test.toml", Sources: []config.Source{sourceFor(t, h, "cut", config.KindSFTP)}}
	cfg.Sources[0].Paths = []string{src}

	cutThenResume(t, s, dir, cfg, h, src, total)

	// A completed pull reads everything again.
	tx := h.SourceTxBytes()
	if res := Run(context.Background(), s, cfg, "", Options{Log: testLog(t)}); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if sent3 := h.SourceTxBytes() - tx; sent3 < uint64(total) {
		t.Errorf("a pull after a completed one moved %d bytes of %d", sent3, total)
	}
}
