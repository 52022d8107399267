package usb

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ErrUnsupported: the partition holds no filesystem Drawbridge uses.
	ErrUnsupported = errors.New("Drawbridge uses only vfat, exfat and ext4 drives")
	// ErrCorrupt: the filesystem is damaged and the kernel (or the FUSE
	// driver) would not mount it. Nothing was written to the drive.
	ErrCorrupt = errors.New("the filesystem is damaged and cannot be used (check it on another computer, or format the drive)")
	// ErrUnsafeMount: the mount did not get nosuid, nodev and noexec, so it
	// was undone.
	ErrUnsafeMount = errors.New("the drive could not be mounted with nosuid, nodev and noexec")
)

// Mounter attaches the filesystem on the device node dev to dir with
// nosuid, nodev and noexec (and ro when readOnly), and returns how to
// detach it. fstype is "vfat", "exfat" or "ext4" (which also mounts ext2
// and ext3).
type Mounter interface {
	Mount(dev, dir, fstype string, readOnly bool) (detach func() error, err error)
}

// Mounted is a filesystem mounted by Mount.
type Mounted struct {
	Partition Partition
	FSType    string // what Probe found when it was mounted
	ReadOnly  bool

	dir    string
	sys    fs.FS
	mu     sync.Mutex
	detach func() error // nil once unmounted
}

// Present reports whether the drive is still plugged in with the same
// medium: its partition (or whole drive) is still in sysfs with the size
// it had when mounted. After an I/O error it tells a pulled drive from a
// filesystem that refused something.
func (m *Mounted) Present() bool {
	n, err := sectors(m.sys, path.Join("class/block", m.Partition.Name))
	return err == nil && n == m.Partition.Size
}

// Root is the directory the filesystem is mounted on. Paths under it come
// from the drive: open them through os.OpenRoot(m.Root()).
func (m *Mounted) Root() string { return m.dir }

// Space returns the bytes free to this process and the filesystem's size.
func (m *Mounted) Space() (free, size int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(m.dir, &st); err != nil {
		return 0, 0, fmt.Errorf("free space on %s: %w", m.Partition.Name, err)
	}
	return int64(st.Bavail) * st.Bsize, int64(st.Blocks) * st.Bsize, nil
}

// Unmount flushes the filesystem to the drive and detaches it. After a
// drive was pulled out the flush fails and the mount is detached anyway;
// the flush error is returned.
func (m *Mounted) Unmount() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.detach == nil {
		return nil
	}
	var syncErr error
	if d, err := os.Open(m.dir); err == nil {
		syncErr = unix.Syncfs(int(d.Fd()))
		d.Close()
	}
	if err := m.detach(); err != nil {
		if syncErr == nil {
			return fmt.Errorf("unmount %s: %w", m.Partition.Name, err)
		}
		// A drive that went away: detach lazily so the directory is free.
		unix.Unmount(m.dir, unix.MNT_DETACH)
	}
	m.detach = nil
	if syncErr != nil {
		return fmt.Errorf("flush %s before unmounting: %w", m.Partition.Name, syncErr)
	}
	return nil
}

// Mount mounts part on dir (created with mode 0700 if missing), read-write
// or read-only. It reads the superblock again first, because the stick in
// the port may not be the one that was listed, and takes only vfat, exfat
// and ext2/3/4. A damaged filesystem gives ErrCorrupt and nothing mounted.
func (p *Ports) Mount(part Partition, dir string, readOnly bool) (*Mounted, error) {
	if err := p.probe(&part); err != nil {
		return nil, fmt.Errorf("mount %s: %w", part.Name, err)
	}
	if n, err := sectors(p.Sys, path.Join("class/block", part.Name)); err == nil {
		part.Size = n // what Present compares with
	}
	if part.FSType == "vfat" {
		if err := p.checkFAT(part); err != nil {
			return nil, fmt.Errorf("mount %s: %w (%v)", part.Name, ErrCorrupt, err)
		}
	}
	var kind string
	switch part.FSType {
	case "vfat", "exfat":
		kind = part.FSType
	case "ext2", "ext3", "ext4":
		kind = "ext4"
	case "":
		return nil, fmt.Errorf("mount %s: it holds no filesystem Drawbridge recognises: %w", part.Name, ErrUnsupported)
	default:
		return nil, fmt.Errorf("mount %s: it holds %s: %w", part.Name, part.FSType, ErrUnsupported)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("mount %s: %w", part.Name, err)
	}
	detach, err := p.Mounter.Mount(part.Path, dir, kind, readOnly)
	if err != nil {
		return nil, fmt.Errorf("mount %s (%s) on %s: %w", part.Name, part.FSType, dir, err)
	}
	return &Mounted{Partition: part, FSType: part.FSType, ReadOnly: readOnly, dir: dir, sys: p.Sys, detach: detach}, nil
}

func (p *Ports) checkFAT(part Partition) error {
	r, c, err := p.Open(part.Path)
	if err != nil {
		return err
	}
	defer c.Close()
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, 0); err != nil {
		return err
	}
	return checkFAT(b, part.Size)
}

// SystemMounter mounts with mount(2), and through a FUSE driver (fusefat,
// mount.exfat-fuse) when the kernel lacks vfat or exfat, as a hosted
// machine may; the appliance's kernel has both.
type SystemMounter struct{}

const safeFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// Mount implements Mounter.
func (SystemMounter) Mount(dev, dir, fstype string, readOnly bool) (func() error, error) {
	flags := uintptr(safeFlags | unix.MS_NOATIME)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	var data string
	switch fstype {
	case "vfat":
		data = "utf8,shortname=mixed"
	case "ext4":
		data = "errors=remount-ro"
		if readOnly {
			data += ",noload" // never replay a journal onto a drive mounted to be read
		}
	}
	err := unix.Mount(dev, dir, fstype, flags, data)
	var detach func() error
	switch {
	case err == nil:
		detach = func() error { return unix.Unmount(dir, 0) }
	case errors.Is(err, unix.ENODEV):
		if detach, err = fuseMount(dev, dir, fstype, readOnly); err != nil {
			return nil, err
		}
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EUCLEAN), errors.Is(err, unix.EBADMSG),
		errors.Is(err, unix.EIO), errors.Is(err, unix.EFBIG), errors.Is(err, unix.EOVERFLOW):
		return nil, fmt.Errorf("%w (%v)", ErrCorrupt, err)
	case errors.Is(err, unix.EROFS), errors.Is(err, unix.EACCES):
		return nil, fmt.Errorf("the drive is write-protected (%v)", err)
	case errors.Is(err, unix.EBUSY):
		return nil, fmt.Errorf("the drive is already mounted or in use (%v)", err)
	default:
		return nil, err
	}
	if err := ensureSafe(dir, readOnly); err != nil {
		detach()
		return nil, err
	}
	return detach, nil
}

// ensureSafe checks that dir's mount has nosuid, nodev and noexec (and ro),
// adding them with a bind remount where a FUSE driver dropped one.
func ensureSafe(dir string, readOnly bool) error {
	want := int64(unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC)
	if readOnly {
		want |= unix.ST_RDONLY
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	if st.Flags&want == want {
		return nil
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | safeFlags | unix.MS_NOATIME)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("", dir, "", flags, ""); err != nil {
		return fmt.Errorf("%w: %v", ErrUnsafeMount, err)
	}
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	if st.Flags&want != want {
		return ErrUnsafeMount
	}
	return nil
}

// fuseDrivers are the FUSE drivers for kernels without vfat or exfat, with
// the flag that keeps each in the foreground (so Unmount can wait for it
// to finish writing).
var fuseDrivers = map[string]struct {
	name, foreground, rw string
}{
	"vfat":  {"fusefat", "-f", "rw+"},
	"exfat": {"mount.exfat-fuse", "-d", "rw"},
}

func fuseMount(dev, dir, fstype string, readOnly bool) (func() error, error) {
	drv, ok := fuseDrivers[fstype]
	if !ok {
		return nil, fmt.Errorf("the kernel cannot mount %s", fstype)
	}
	bin, err := lookTool(drv.name)
	if err != nil {
		return nil, fmt.Errorf("the kernel cannot mount %s, and its FUSE driver %s is not installed", fstype, drv.name)
	}
	opts := drv.rw
	if readOnly {
		opts = "ro"
	}
	out := &tail{}
	// fsname puts the device in the mount table, where Format looks.
	cmd := exec.Command(bin, drv.foreground, "-o", opts+",nosuid,nodev,noexec,fsname="+dev, dev, dir)
	// Their debug output (fusefat's is on in Debian's build) goes nowhere;
	// errors are on stderr.
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", drv.name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(15 * time.Second)
	for !isMountPoint(dir) {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("%s: %w (%v: %s)", drv.name, ErrCorrupt, err, out.String())
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			return nil, fmt.Errorf("%s did not mount %s within 15s: %s", drv.name, dev, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return func() error {
		if err := unix.Unmount(dir, 0); err != nil {
			return err
		}
		select {
		case <-exited: // the driver wrote everything and exited
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			return fmt.Errorf("%s did not exit after unmounting", drv.name)
		}
		return nil
	}, nil
}

func isMountPoint(dir string) bool {
	var a, b unix.Stat_t
	if unix.Stat(dir, &a) != nil || unix.Stat(filepath.Dir(dir), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

// lookTool finds a program on PATH or in the sbin directories, where the
// appliance image and Debian keep mkfs and FUSE drivers.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/sbin", "/usr/sbin", "/bin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

// tail keeps the last few KiB written to it: a FUSE driver's or mkfs's
// output, for an error message.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 2 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
