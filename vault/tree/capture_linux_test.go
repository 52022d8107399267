package tree

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/internal/fixture"
)

// needRoot skips a test that needs root, except under CI=true where the
// missing privilege is a failure.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	fixture.Need(t, "needs root for mknod of devices and chown; run as root")
}

func TestCaptureKinds(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	mtime := time.Unix(1_600_000_000, 123_456_789)

	if err := os.WriteFile(p("file"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("file"), 0o751|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(p("file"), p("file2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("dir"), 0o755|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("file", p("sym")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/\xff", p("dangling")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(p("fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	sock := p("sock")
	if len(sock) >= 108 {
		sock = filepath.Join(os.TempDir(), "drawbridge-tree-capture.sock")
		t.Cleanup(func() { os.Remove(sock) })
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, name := range []string{"file", "dir", "fifo"} {
		if err := os.Chtimes(p(name), mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p("sym"), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}

	check := func(path string, want Entry) Stat {
		t.Helper()
		e, st, err := Capture(path)
		if err != nil {
			t.Fatal(err)
		}
		e.User, e.Group, e.UID, e.GID = "", "", 0, 0 // checked separately
		e.Xattrs = nil
		if !reflect.DeepEqual(e, want) {
			t.Errorf("Capture(%s):\n got %+v\nwant %+v", filepath.Base(path), e, want)
		}
		if err := e.Validate(); err != nil && e.Kind != File {
			t.Errorf("captured entry does not validate: %v", err)
		}
		return st
	}
	sec, nsec := mtime.Unix(), uint32(mtime.Nanosecond())
	st1 := check(p("file"), Entry{Name: "file", Kind: File, Mode: 0o4751, MtimeSec: sec, MtimeNsec: nsec, Size: 5})
	st2 := check(p("file2"), Entry{Name: "file2", Kind: File, Mode: 0o4751, MtimeSec: sec, MtimeNsec: nsec, Size: 5})
	if st1.Ino != st2.Ino || st1.Dev != st2.Dev || st1.Nlink != 2 || st1.CtimeSec == 0 {
		t.Errorf("hardlinked files: %+v and %+v", st1, st2)
	}
	check(p("dir"), Entry{Name: "dir", Kind: Dir, Mode: 0o1755, MtimeSec: sec, MtimeNsec: nsec})
	check(p("sym"), Entry{Name: "sym", Kind: Symlink, Mode: 0o777, MtimeSec: sec, MtimeNsec: nsec, Target: "file"})
	fi, _ := os.Lstat(p("dangling"))
	check(p("dangling"), Entry{Name: "dangling", Kind: Symlink, Mode: 0o777,
		MtimeSec: fi.ModTime().Unix(), MtimeNsec: uint32(fi.ModTime().Nanosecond()), Target: "/nonexistent/\xff"})
	check(p("fifo"), Entry{Name: "fifo", Kind: FIFO, Mode: 0o640, MtimeSec: sec, MtimeNsec: nsec})
	fi, _ = os.Lstat(sock)
	check(sock, Entry{Name: filepath.Base(sock), Kind: Socket, Mode: uint32(fi.Mode().Perm()),
		MtimeSec: fi.ModTime().Unix(), MtimeNsec: uint32(fi.ModTime().Nanosecond())})

	if _, _, err := Capture(p("missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Capture of a missing path: %v", err)
	}
}

func TestCaptureDevices(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(259, 70000))); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"null", "blk"} {
		if err := os.Chmod(filepath.Join(dir, name), 0o666); err != nil { // undo the umask
			t.Fatal(err)
		}
	}
	for name, want := range map[string]Entry{
		"null": {Kind: CharDev, Mode: 0o666, Major: 1, Minor: 3},
		"blk":  {Kind: BlockDev, Mode: 0o666, Major: 259, Minor: 70000},
	} {
		e, _, err := Capture(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != want.Kind || e.Mode != want.Mode || e.Major != want.Major || e.Minor != want.Minor || e.Size != 0 {
			t.Errorf("%s: got %+v", name, e)
		}
		if err := e.Validate(); err != nil {
			t.Error(err)
		}
	}
}

func TestCaptureOwners(t *testing.T) {
	dir := t.TempDir()
	e, _, err := Capture(dir)
	if err != nil {
		t.Fatal(err)
	}
	if int(e.UID) != os.Geteuid() {
		t.Errorf("uid %d, want %d", e.UID, os.Geteuid())
	}
	if os.Geteuid() == 0 && (e.User != "root" || e.Group != "root") {
		t.Errorf("user/group %q/%q, want root/root", e.User, e.Group)
	}
	if err := os.Chown(dir, 54321, 54322); err == nil { // needs root; names unknown
		e, _, err := Capture(dir)
		if err != nil {
			t.Fatal(err)
		}
		if e.UID != 54321 || e.GID != 54322 || e.User != "" || e.Group != "" {
			t.Errorf("unknown ids: got %d/%d %q/%q", e.UID, e.GID, e.User, e.Group)
		}
	}
}

func TestCaptureXattrs(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := unix.Lsetxattr(f, "user.b", []byte("two"), 0)
	if errors.Is(err, unix.ENOTSUP) {
		fixture.Need(t, "the filesystem of "+dir+" has no user xattrs; use ext4, xfs or tmpfs")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(f, "user.a", nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(f, "user.c", []byte("\x00\xff"), 0); err != nil {
		t.Fatal(err)
	}
	e, _, err := Capture(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []Xattr{{Name: "user.a"}, {Name: "user.b", Value: []byte("two")}, {Name: "user.c", Value: []byte("\x00\xff")}}
	if !reflect.DeepEqual(e.Xattrs, want) {
		t.Errorf("xattrs: got %q, want %q", e.Xattrs, want)
	}
	// A symlink's own (empty) xattr list, not its target's.
	if err := os.Symlink("f", filepath.Join(dir, "s")); err != nil {
		t.Fatal(err)
	}
	if e, _, err = Capture(filepath.Join(dir, "s")); err != nil || len(e.Xattrs) != 0 {
		t.Errorf("symlink xattrs: %q, %v", e.Xattrs, err)
	}
}
