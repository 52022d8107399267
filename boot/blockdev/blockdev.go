// Package blockdev finds block devices by the label of the ext2/3/4
// filesystem they hold, the way PID 1 finds the vault's data disk: it lists
// the kernel's block devices under /sys/class/block and reads each one's
// superblock. On a first boot it tells which whole disks are blank (their
// first and last MiB all zeros), the only ones PID 1 may offer to format.
// It reads only; it never mounts or writes.
package blockdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Device is one block device (a whole disk or a partition).
type Device struct {
	Name  string // kernel name: "vdb", "sda1", "nvme0n1p2"
	Size  int64  // bytes
	FS    string // "ext" when it holds an ext2/3/4 filesystem, else ""
	Label string // the filesystem's volume label
	UUID  string // the filesystem's UUID, in the usual 8-4-4-4-12 form
}

// Path is the device node's path under /dev.
func (d Device) Path() string { return "/dev/" + d.Name }

// Opener opens a block device by kernel name for reading.
type Opener interface {
	Open(name string) (io.ReadCloser, error)
}

// Scanner lists block devices. Sys is the sysfs tree (/sys), Dev opens the
// device nodes.
type Scanner struct {
	Sys fs.FS
	Dev Opener
}

// skipPrefixes are kernel device names that never hold a data disk: memory
// and loop devices, and optical drives.
var skipPrefixes = []string{"loop", "ram", "zram", "sr", "fd"}

// Scan lists every block device with a nonzero size, sorted by name, with
// its filesystem label when it holds an ext filesystem. A device that cannot
// be read is listed without a label, and the read error is returned joined
// with the others after the whole scan.
func (s Scanner) Scan() ([]Device, error) {
	entries, err := fs.ReadDir(s.Sys, "class/block")
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var devs []Device
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if skip(name) {
			continue
		}
		size, err := sectors(s.Sys, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if size == 0 {
			continue
		}
		d := Device{Name: name, Size: size * 512}
		sb, err := s.superblock(name)
		if err != nil {
			errs = append(errs, err)
		} else if sb != nil {
			d.FS, d.Label, d.UUID = "ext", sb.label, sb.uuid
		}
		devs = append(devs, d)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Name < devs[j].Name })
	return devs, errors.Join(errs...)
}

func skip(name string) bool {
	for _, p := range skipPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// sectors reads a device's size in 512-byte sectors.
func sectors(sys fs.FS, name string) (int64, error) {
	b, err := fs.ReadFile(sys, path.Join("class/block", name, "size"))
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", name, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size of %s: bad value %q", name, bytes.TrimSpace(b))
	}
	return n, nil
}

// ErrAmbiguous is wrapped by Find when more than one device carries the
// label: the caller must not guess which one is meant.
var ErrAmbiguous = errors.New("more than one device has this label")

// Find returns the one device whose ext filesystem has the given label, or
// nil when none has it. Read errors of other devices do not hide a device
// that was found; they are returned only when nothing was found.
func (s Scanner) Find(label string) (*Device, error) {
	devs, scanErr := s.Scan()
	var found []Device
	for _, d := range devs {
		if d.FS == "ext" && d.Label == label {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return nil, scanErr
	case 1:
		return &found[0], nil
	}
	var names []string
	for _, d := range found {
		names = append(names, d.Name)
	}
	return nil, fmt.Errorf("label %s on %s: %w", label, strings.Join(names, ", "), ErrAmbiguous)
}

// The ext2/3/4 superblock starts 1024 bytes into the device.
const (
	superblockOffset = 1024
	superblockSize   = 1024
	magicOffset      = 0x38
	uuidOffset       = 0x68
	labelOffset      = 0x78
	labelSize        = 16
	extMagic         = 0xEF53
)

type superblock struct {
	label, uuid string
}

// superblock reads the ext superblock of device name; nil when the device
// holds no ext filesystem.
func (s Scanner) superblock(name string) (*superblock, error) {
	f, err := s.Dev.Open(name)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	defer f.Close()
	buf := make([]byte, superblockOffset+superblockSize)
	if _, err := io.ReadFull(f, buf); errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return nil, nil // too small to hold a filesystem
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return parseSuperblock(buf[superblockOffset:]), nil
}

func parseSuperblock(sb []byte) *superblock {
	if binary.LittleEndian.Uint16(sb[magicOffset:]) != extMagic {
		return nil
	}
	label := sb[labelOffset : labelOffset+labelSize]
	if i := bytes.IndexByte(label, 0); i >= 0 {
		label = label[:i]
	}
	u := sb[uuidOffset : uuidOffset+16]
	return &superblock{
		label: string(label),
		uuid:  fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]),
	}
}

// BlankSpan is how much of each end of a disk must read as zeros for the
// disk to count as blank: partition tables (MBR and GPT at the start, the
// GPT's backup at the end), RAID and LVM labels and the superblocks of
// common filesystems all live there.
const BlankSpan = 1 << 20

// Candidate is a whole disk that could become the data disk.
type Candidate struct {
	Device
	Model string // the drive's model name, when the kernel knows it
	// Blank is true when the first and last BlankSpan bytes are zeros;
	// Why says what ruled the disk out otherwise.
	Blank bool
	Why   string
}

// Candidates lists the whole disks that are not partitions, not read-only
// and not removable (USB sticks, card readers: an export drive is never
// the data disk), saying of each whether it is blank. A disk that cannot
// be read is listed as not blank, and its error returned with the others
// after the whole list.
func (s Scanner) Candidates() ([]Candidate, error) {
	devs, scanErr := s.Scan()
	var cs []Candidate
	var errs []error
	if scanErr != nil {
		errs = append(errs, scanErr)
	}
	for _, d := range devs {
		if s.flag(d.Name, "partition") != "" || s.flag(d.Name, "ro") == "1" || s.flag(d.Name, "removable") == "1" {
			continue
		}
		c := Candidate{Device: d, Model: s.flag(d.Name, "device/model")}
		blank, err := s.blank(d)
		switch {
		case err != nil:
			c.Why = "cannot be read"
			errs = append(errs, err)
		case d.FS != "":
			c.Why = "holds an ext filesystem"
		case !blank:
			c.Why = "holds data (its first or last MiB is not all zeros)"
		default:
			c.Blank = true
		}
		cs = append(cs, c)
	}
	return cs, errors.Join(errs...)
}

// flag reads a short sysfs attribute of a block device; "" when absent.
func (s Scanner) flag(name, attr string) string {
	b, err := fs.ReadFile(s.Sys, path.Join("class/block", name, attr))
	if err != nil {
		return ""
	}
	if len(b) > 256 {
		b = b[:256]
	}
	return strings.TrimSpace(string(b))
}

// blank reports whether the first and last BlankSpan bytes of d are zeros.
func (s Scanner) blank(d Device) (bool, error) {
	f, err := s.Dev.Open(d.Name)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", d.Name, err)
	}
	defer f.Close()
	r, ok := f.(io.ReaderAt)
	if !ok {
		return false, fmt.Errorf("read %s: cannot read at an offset", d.Name)
	}
	span := min(int64(BlankSpan), d.Size)
	buf := make([]byte, span)
	for _, off := range []int64{0, d.Size - span} {
		if _, err := r.ReadAt(buf, off); err != nil {
			return false, fmt.Errorf("read %s at %d: %w", d.Name, off, err)
		}
		for _, c := range buf {
			if c != 0 {
				return false, nil
			}
		}
	}
	return true, nil
}
