package restore_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"drawbridge/vault/tree"
)

// checker compares a restored directory with the snapshot tree it came from.
type checker struct {
	t      *testing.T
	s      *fakeSource
	owners bool
	inodes map[string]uint64 // snapshot path of a restored file → its inode
}

func newChecker(t *testing.T, s *fakeSource, owners bool) *checker {
	return &checker{t: t, s: s, owners: owners, inodes: map[string]uint64{}}
}

// dir checks that the directory at disk holds exactly the entries of tree
// id (the snapshot directory at snap), recursively.
func (c *checker) dir(id tree.ID, snap, disk string) {
	t := c.t
	t.Helper()
	tr, err := c.s.Tree(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range tr.Entries {
		if e.Kind != tree.Socket {
			want = append(want, e.Name)
		}
	}
	des, err := os.ReadDir(disk)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range des {
		got = append(got, d.Name())
	}
	if !slices.Equal(got, want) {
		t.Errorf("%q holds %q, want %q", disk, got, want)
	}
	for i := range tr.Entries {
		e := &tr.Entries[i]
		c.entry(e, join(snap, e.Name), filepath.Join(disk, e.Name))
	}
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func (c *checker) entry(e *tree.Entry, snap, disk string) {
	t := c.t
	t.Helper()
	if e.Kind == tree.Socket {
		return
	}
	var st unix.Stat_t
	if err := unix.Lstat(disk, &st); err != nil {
		t.Errorf("%q: %v", snap, err)
		return
	}
	wantType := map[tree.Kind]uint32{
		tree.Dir: unix.S_IFDIR, tree.File: unix.S_IFREG, tree.Hardlink: unix.S_IFREG, tree.Symlink: unix.S_IFLNK,
		tree.FIFO: unix.S_IFIFO, tree.CharDev: unix.S_IFCHR, tree.BlockDev: unix.S_IFBLK,
	}[e.Kind]
	if st.Mode&unix.S_IFMT != wantType {
		t.Errorf("%q: type %#o, want %#o", snap, st.Mode&unix.S_IFMT, wantType)
		return
	}
	if e.Kind == tree.Hardlink {
		if ino, ok := c.inodes[e.Target]; !ok || ino != st.Ino {
			t.Errorf("%q: inode %d, want that of %q (%d, known %v)", snap, st.Ino, e.Target, ino, ok)
		}
		return
	}
	if e.Kind != tree.Symlink && st.Mode&07777 != e.Mode {
		t.Errorf("%q: mode %#o, want %#o", snap, st.Mode&07777, e.Mode)
	}
	if int64(st.Mtim.Sec) != e.MtimeSec || int64(st.Mtim.Nsec) != int64(e.MtimeNsec) {
		t.Errorf("%q: mtime %d.%09d, want %d.%09d", snap, st.Mtim.Sec, st.Mtim.Nsec, e.MtimeSec, e.MtimeNsec)
	}
	if c.owners && (st.Uid != e.UID || st.Gid != e.GID) {
		t.Errorf("%q: owner %d:%d, want %d:%d", snap, st.Uid, st.Gid, e.UID, e.GID)
	}
	if e.Kind == tree.Dir || e.Kind == tree.File {
		if got := userXattrs(t, disk); !reflect.DeepEqual(got, e.Xattrs) {
			t.Errorf("%q: xattrs %q, want %q", snap, got, e.Xattrs)
		}
	}
	switch e.Kind {
	case tree.Dir:
		c.dir(e.Subtree, snap, disk)
	case tree.File:
		c.inodes[snap] = st.Ino
		got, err := os.ReadFile(disk)
		if err != nil {
			t.Errorf("%q: %v", snap, err)
		} else if want := c.s.content(t, e); !bytes.Equal(got, want) || uint64(len(got)) != e.Size {
			t.Errorf("%q: content of %d bytes differs from the %d bytes expected", snap, len(got), len(want))
		}
	case tree.Symlink:
		if got, err := os.Readlink(disk); err != nil || got != e.Target {
			t.Errorf("%q: symlink to %q (%v), want %q", snap, got, err, e.Target)
		}
	case tree.CharDev, tree.BlockDev:
		if unix.Major(uint64(st.Rdev)) != e.Major || unix.Minor(uint64(st.Rdev)) != e.Minor {
			t.Errorf("%q: device %d:%d, want %d:%d", snap, unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), e.Major, e.Minor)
		}
	}
}

// userXattrs lists the user.* xattrs of path, sorted, nil when none.
func userXattrs(t *testing.T, path string) []tree.Xattr {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		t.Fatalf("llistxattr %q: %v", path, err)
	}
	var out []tree.Xattr
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(path, name, v)
		if err != nil {
			t.Fatalf("lgetxattr %q %q: %v", path, name, err)
		}
		x := tree.Xattr{Name: name}
		if m > 0 {
			x.Value = v[:m]
		}
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b tree.Xattr) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// snapshotDir records every path under dir with its type, size and content
// hash, to show later that nothing changed there.
func snapshotDir(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String() + " " + fi.ModTime().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
