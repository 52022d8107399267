package vfs

import (
	"errors"
	"io/fs"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// fsImmutableFL is FS_IMMUTABLE_FL from linux/fs.h; x/sys/unix does not
// export it.
const fsImmutableFL = 0x00000010

// seal sets mode 0444 and then FS_IMMUTABLE_FL (what chattr +i sets). Where
// the flag cannot be set (tmpfs, overlay, no CAP_LINUX_IMMUTABLE) the file is
// left read-only only.
func (o *osFS) seal(name string) error {
	f, err := o.root.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return &fs.PathError{Op: "seal", Path: name, Err: errors.New("not a regular file")}
	}
	flags, ferr := ioctlFlags(f)
	if ferr == nil && flags&fsImmutableFL != 0 {
		return nil // already sealed; chmod would fail on an immutable file
	}
	if err := f.Chmod(0o444); err != nil {
		return err
	}
	if ferr != nil {
		if flagsUnsupported(ferr) {
			return nil
		}
		return &fs.PathError{Op: "seal", Path: name, Err: ferr}
	}
	var serr error
	cerr := ctl(f, func(fd int) {
		serr = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags|fsImmutableFL))
	})
	if cerr != nil {
		return cerr
	}
	if serr != nil && !flagsUnsupported(serr) {
		return &fs.PathError{Op: "seal", Path: name, Err: serr}
	}
	return nil
}

func (o *osFS) getImmutable(name string) (bool, error) {
	f, err := o.root.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	flags, err := ioctlFlags(f)
	if err != nil {
		if flagsUnsupported(err) {
			return false, nil
		}
		return false, &fs.PathError{Op: "getflags", Path: name, Err: err}
	}
	return flags&fsImmutableFL != 0, nil
}

func ioctlFlags(f *os.File) (uint32, error) {
	var flags uint32
	var ierr error
	if err := ctl(f, func(fd int) { flags, ierr = unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS) }); err != nil {
		return 0, err
	}
	return flags, ierr
}

func ctl(f *os.File, fn func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// flagsUnsupported tells apart "this filesystem or process cannot set inode
// flags" from a real I/O error.
func flagsUnsupported(err error) bool {
	return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM)
}

// renameNoReplace uses renameat2(RENAME_NOREPLACE) on directory fds opened
// through the root, so the check and the rename are one atomic step.
func (o *osFS) renameNoReplace(oldname, newname string) error {
	if err := checkName("rename", oldname); err != nil {
		return err
	}
	if err := checkName("rename", newname); err != nil {
		return err
	}
	od, err := o.root.Open(path.Dir(oldname))
	if err != nil {
		return err
	}
	defer od.Close()
	nd, err := o.root.Open(path.Dir(newname))
	if err != nil {
		return err
	}
	defer nd.Close()
	var rerr error
	err = ctl(od, func(ofd int) {
		err := ctl(nd, func(nfd int) {
			rerr = unix.Renameat2(ofd, path.Base(oldname), nfd, path.Base(newname), unix.RENAME_NOREPLACE)
		})
		if err != nil {
			rerr = err
		}
	})
	if err != nil {
		return err
	}
	if errors.Is(rerr, unix.EINVAL) || errors.Is(rerr, unix.ENOSYS) {
		// The filesystem has no RENAME_NOREPLACE.
		return statThenRename(o, oldname, newname)
	}
	if rerr != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: rerr}
	}
	return nil
}
