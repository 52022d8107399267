package tree

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Stat is what Capture saw besides the Entry: the identity of the inode (for
// hardlink detection) and its ctime (for change detection), for the caller.
type Stat struct {
	Dev, Ino, Nlink     uint64
	CtimeSec, CtimeNsec int64
}

// Capture reads the metadata of the object at path with lstat, never
// following a symlink. Name is the base name of path. It does not read file
// content and sets neither Chunks, Lists nor Subtree; a caller that finds an
// inode already captured (same Dev and Ino) turns the entry into a Hardlink.
func Capture(path string) (Entry, Stat, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return Entry{}, Stat{}, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	e := Entry{
		Name:      filepath.Base(path),
		Mode:      st.Mode & MaxMode,
		UID:       st.Uid,
		GID:       st.Gid,
		User:      idNames.user(st.Uid),
		Group:     idNames.group(st.Gid),
		MtimeSec:  int64(st.Mtim.Sec),
		MtimeNsec: uint32(st.Mtim.Nsec),
	}
	s := Stat{
		Dev:       uint64(st.Dev),
		Ino:       uint64(st.Ino),
		Nlink:     uint64(st.Nlink),
		CtimeSec:  int64(st.Ctim.Sec),
		CtimeNsec: int64(st.Ctim.Nsec),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Kind = Dir
	case unix.S_IFREG:
		e.Kind = File
		e.Size = uint64(st.Size)
	case unix.S_IFLNK:
		e.Kind = Symlink
		target, err := os.Readlink(path)
		if err != nil {
			return Entry{}, Stat{}, err
		}
		e.Target = target
	case unix.S_IFIFO:
		e.Kind = FIFO
	case unix.S_IFCHR, unix.S_IFBLK:
		e.Kind = CharDev
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			e.Kind = BlockDev
		}
		e.Major = unix.Major(uint64(st.Rdev))
		e.Minor = unix.Minor(uint64(st.Rdev))
	case unix.S_IFSOCK:
		e.Kind = Socket
	default:
		return Entry{}, Stat{}, fmt.Errorf("capture %s: unknown file type %#o", path, st.Mode&unix.S_IFMT)
	}
	xattrs, err := readXattrs(path)
	if err != nil {
		return Entry{}, Stat{}, fmt.Errorf("capture %s: %w", path, err)
	}
	e.Xattrs = xattrs
	return e, s, nil
}

// readXattrs lists and reads the extended attributes of path itself (not of a
// symlink's target), sorted by name. A filesystem without xattrs has none.
func readXattrs(path string) ([]Xattr, error) {
	list, err := xattrCall(func(buf []byte) (int, error) { return unix.Llistxattr(path, buf) })
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, &fs.PathError{Op: "llistxattr", Path: path, Err: err}
	}
	var out []Xattr
	for name := range strings.SplitSeq(string(list), "\x00") {
		if name == "" {
			continue
		}
		value, err := xattrCall(func(buf []byte) (int, error) { return unix.Lgetxattr(path, name, buf) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, &fs.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		if len(value) == 0 {
			value = nil
		}
		out = append(out, Xattr{Name: name, Value: value})
	}
	if len(out) > MaxXattrs {
		return nil, invalid("%d xattrs, more than %d", len(out), MaxXattrs)
	}
	slices.SortFunc(out, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// xattrCall runs one of the size-then-fetch xattr calls, retrying while the
// attribute grows between the two.
func xattrCall(call func([]byte) (int, error)) ([]byte, error) {
	for range 8 {
		n, err := call(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = call(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.ERANGE
}

// idNames caches uid and gid to name lookups, including misses: a backup asks
// for the same few ids for every file.
var idNames = &nameCache{users: map[uint32]string{}, groups: map[uint32]string{}}

type nameCache struct {
	mu            sync.Mutex
	users, groups map[uint32]string
}

func (c *nameCache) user(id uint32) string {
	return c.lookup(c.users, id, func(s string) (string, error) {
		u, err := user.LookupId(s)
		if err != nil {
			return "", err
		}
		return u.Username, nil
	})
}

func (c *nameCache) group(id uint32) string {
	return c.lookup(c.groups, id, func(s string) (string, error) {
		g, err := user.LookupGroupId(s)
		if err != nil {
			return "", err
		}
		return g.Name, nil
	})
}

func (c *nameCache) lookup(m map[uint32]string, id uint32, find func(string) (string, error)) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name, ok := m[id]; ok {
		return name
	}
	name, err := find(strconv.FormatUint(uint64(id), 10))
	if err != nil || len(name) > MaxNameLen {
		name = "" // unknown; the numeric id is what restore uses
	}
	m[id] = name
	return name
}
