// Package usb finds the USB drives plugged into the box, mounts the one a
// person picks, and formats one only when that person confirms it by name.
//
// Invariants: nothing here mounts, formats or writes to a drive by itself.
// List and Watch only read sysfs and the first sectors of each drive. Mount
// takes only vfat, exfat and ext2/3/4, always with nosuid, nodev and noexec
// (and checks the mount really has them); anything else on a stick is
// refused with a message. Format runs only when the confirmation string
// equals Drive.Confirmation, which names the drive's model and size, and
// never on a drive with a mounted partition.
//
// From the console:
//
//	p := usb.Local()
//	for drives := range p.Watch(ctx) { show(drives) }   // plug and unplug, within a second
//	m, err := p.Mount(drive.Partitions[i], dir, false)  // the person picked it
//	// errors.Is(err, usb.ErrCorrupt), usb.ErrUnsupported: say so, nothing changed
//	rep, err := todrive.Restore(ctx, src, root, sub, m.Root(), todrive.DirName(id, now),
//		todrive.Options{Progress: bar, Present: m.Present})
//	err = m.Unmount()                                    // flushes first
//
//	// Formatting: show d.Confirmation(), have the person type it or press
//	// a key that passes it back; Format refuses anything else, and a
//	// drive that is not the one shown (ErrChanged) or is mounted (ErrInUse).
//	err = p.Format(ctx, d, "exfat", "DRAWBRIDGE", typed)
//	drives, err = p.List()                               // shows the new filesystem
//
// Watch polls sysfs every second and also wakes on the kernel's block
// uevents. Where the kernel lacks vfat or exfat (a hosted machine) Mount
// goes through the FUSE driver (fusefat, mount.exfat-fuse) if installed.
//
// The seams (sysfs as an fs.FS, the device directory, an Opener, a
// Mounter, a Run function for mkfs, the mount table) let tests use a fake
// sysfs tree as well as real loop devices.
package usb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"drawbridge/vault/units"
)

// Drive is one whole block device: a USB stick or disk.
type Drive struct {
	Name      string // kernel name: "sdb"
	Path      string // device node: "/dev/sdb"
	Vendor    string
	Model     string
	Serial    string
	Size      int64 // bytes
	Removable bool  // the kernel's removable flag
	// Partitions are the filesystems a person can pick. A drive formatted
	// without a partition table (as Format leaves it) has one, the whole
	// drive, with the drive's Name and Path. A blank drive has none.
	Partitions []Partition
}

// Partition is a partition, or a whole drive that holds a filesystem.
type Partition struct {
	Name   string // kernel name: "sdb1"
	Path   string // device node: "/dev/sdb1"
	Size   int64  // bytes
	FSType string // "vfat", "exfat", "ext2", "ext3", "ext4", "ntfs", "iso9660", or "" when unknown
	Label  string
}

// Confirmation is what a person must type (or confirm as shown) before
// Format erases d: the kernel name, vendor and model, and the size, e.g.
// "format sdb SanDisk Ultra 57.3 GiB".
func (d Drive) Confirmation() string {
	parts := []string{"format", d.Name}
	if s := strings.TrimSpace(d.Vendor + " " + d.Model); s != "" {
		parts = append(parts, s)
	}
	return strings.Join(append(parts, units.Bytes(d.Size)), " ")
}

// String names the drive for a person: "sdb SanDisk Ultra 57.3 GiB".
func (d Drive) String() string {
	return strings.TrimPrefix(d.Confirmation(), "format ")
}

// Opener opens a device node for reading, by its path.
type Opener func(path string) (io.ReaderAt, io.Closer, error)

// Ports is the box's view of its drives, with every outside dependency
// as a field so tests can replace it. Local returns the real one.
type Ports struct {
	Sys    fs.FS  // the sysfs tree (/sys)
	DevDir string // where device nodes are (/dev)
	Open   Opener // opens a device node to read its superblock
	// Any lists every removable or loop device too, not only those on a
	// USB bus: for tests and hosted mode.
	Any bool
	// Only, when set, limits List (and so Watch) to the block devices
	// whose kernel names (loop3) it accepts, before anything else of
	// them is read: tests keep to their own loop devices among the
	// machine's, and are not told of the others' errors.
	Only func(name string) bool
	// Poll is how often Watch lists the drives; 0 means one second.
	Poll time.Duration
	// Events, when set, starts a source of kernel block device events
	// (uevents) that make Watch list the drives at once rather than at
	// the next poll. The channel is closed when ctx ends.
	Events func(ctx context.Context) (<-chan struct{}, error)
	// Mounter attaches filesystems; Run runs mkfs. MountInfo reads
	// /proc/self/mountinfo.
	Mounter   Mounter
	Run       func(ctx context.Context, name string, args ...string) ([]byte, error)
	MountInfo func() ([]byte, error)
}

// Local is the machine's sysfs, /dev, mount(2) and mkfs tools.
func Local() *Ports {
	return &Ports{
		Sys:    os.DirFS("/sys"),
		DevDir: "/dev",
		Open: func(p string) (io.ReaderAt, io.Closer, error) {
			f, err := os.Open(p)
			return f, f, err
		},
		Events:  blockEvents,
		Mounter: SystemMounter{},
		Run: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			return execCommand(ctx, name, args...)
		},
		MountInfo: func() ([]byte, error) { return os.ReadFile("/proc/self/mountinfo") },
	}
}

var usbBus = regexp.MustCompile(`^usb[0-9]+$`)

// List returns the USB drives (with Any, also removable and loop devices)
// that have a medium, sorted by name. A drive whose superblock cannot be
// read is still listed, with its partitions' FSType empty, and the read
// errors are returned joined after the whole list.
func (p *Ports) List() ([]Drive, error) {
	entries, err := fs.ReadDir(p.Sys, "block")
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var drives []Drive
	var errs []error
	for _, e := range entries {
		if p.Only != nil && !p.Only(e.Name()) {
			continue
		}
		d, ok, err := p.drive(e.Name())
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			drives = append(drives, d)
		}
	}
	slices.SortFunc(drives, func(a, b Drive) int { return strings.Compare(a.Name, b.Name) })
	return drives, errors.Join(errs...)
}

// drive reads one /sys/block entry; ok is false when it is not listed.
func (p *Ports) drive(name string) (Drive, bool, error) {
	dir := path.Join("block", name)
	onUSB := false
	devPath := ""
	if link, err := fs.ReadLink(p.Sys, dir); err == nil {
		devPath = path.Clean(path.Join("block", link))
		for _, c := range strings.Split(devPath, "/") {
			if usbBus.MatchString(c) {
				onUSB = true
			}
		}
	}
	removable := readString(p.Sys, path.Join(dir, "removable")) == "1"
	loop := strings.HasPrefix(name, "loop")
	if !onUSB && !(p.Any && (removable || loop)) {
		return Drive{}, false, nil
	}
	size, err := sectors(p.Sys, dir)
	if err != nil {
		return Drive{}, false, fmt.Errorf("%s: %w", name, err)
	}
	if size == 0 { // a card reader without a card, an unbound loop device
		return Drive{}, false, nil
	}
	d := Drive{
		Name:      name,
		Path:      p.node(name),
		Size:      size,
		Removable: removable,
		Vendor:    readString(p.Sys, path.Join(dir, "device/vendor")),
		Model:     readString(p.Sys, path.Join(dir, "device/model")),
	}
	if onUSB {
		if u := usbDevice(p.Sys, devPath); u != "" {
			d.Serial = readString(p.Sys, path.Join(u, "serial"))
			if d.Vendor == "" {
				d.Vendor = readString(p.Sys, path.Join(u, "manufacturer"))
			}
			if d.Model == "" {
				d.Model = readString(p.Sys, path.Join(u, "product"))
			}
		}
	}
	if loop && d.Model == "" {
		d.Model = "loop device"
	}

	var errs []error
	subs, err := fs.ReadDir(p.Sys, dir)
	if err != nil {
		return Drive{}, false, fmt.Errorf("%s: %w", name, err)
	}
	for _, s := range subs {
		if !strings.HasPrefix(s.Name(), name) {
			continue
		}
		pdir := path.Join(dir, s.Name())
		if _, err := fs.Stat(p.Sys, path.Join(pdir, "partition")); err != nil {
			continue
		}
		psize, err := sectors(p.Sys, pdir)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name(), err))
			continue
		}
		part := Partition{Name: s.Name(), Path: p.node(s.Name()), Size: psize}
		if err := p.probe(&part); err != nil {
			errs = append(errs, err)
		}
		d.Partitions = append(d.Partitions, part)
	}
	slices.SortFunc(d.Partitions, func(a, b Partition) int { return strings.Compare(a.Name, b.Name) })
	if len(d.Partitions) == 0 {
		whole := Partition{Name: name, Path: d.Path, Size: size}
		if err := p.probe(&whole); err != nil {
			errs = append(errs, err)
		} else if whole.FSType != "" {
			d.Partitions = []Partition{whole}
		}
	}
	return d, true, errors.Join(errs...)
}

func (p *Ports) node(name string) string { return filepath.Join(p.DevDir, name) }

// probe fills part's FSType and Label from its superblock.
func (p *Ports) probe(part *Partition) error {
	r, c, err := p.Open(part.Path)
	if err != nil {
		return fmt.Errorf("read %s: %w", part.Name, err)
	}
	defer c.Close()
	part.FSType, part.Label, err = Probe(r)
	if err != nil {
		return fmt.Errorf("read %s: %w", part.Name, err)
	}
	return nil
}

// usbDevice finds the USB device directory (the one holding idVendor)
// on the way from the block device up to its bus.
func usbDevice(sys fs.FS, devPath string) string {
	for d := devPath; d != "." && d != "/" && d != ""; d = path.Dir(d) {
		if _, err := fs.Stat(sys, path.Join(d, "idVendor")); err == nil {
			return d
		}
	}
	return ""
}

// maxAttr caps what is read of one sysfs attribute.
const maxAttr = 4096

func readString(sys fs.FS, name string) string {
	f, err := sys.Open(name)
	if err != nil {
		return ""
	}
	defer f.Close()
	// USB descriptor strings come from the device: no control characters
	// (escape sequences) reach the console.
	b, _ := io.ReadAll(io.LimitReader(f, maxAttr))
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, string(b))
	return strings.Join(strings.Fields(s), " ")
}

// sectors reads a sysfs size attribute (512-byte sectors) as bytes.
func sectors(sys fs.FS, dir string) (int64, error) {
	s := readString(sys, path.Join(dir, "size"))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > 1<<54 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * 512, nil
}

// Watch sends the list of drives at once and then each time it changes
// (a drive plugged in or pulled out, a partition appearing), polling sysfs
// every Poll and, where the kernel's block device events can be read, at
// each of them too. The channel is closed when ctx ends. A list that could
// not be read completely is sent with what was read.
func (p *Ports) Watch(ctx context.Context) <-chan []Drive {
	ch := make(chan []Drive)
	every := p.Poll
	if every <= 0 {
		every = time.Second
	}
	var events <-chan struct{}
	if p.Events != nil {
		events, _ = p.Events(ctx) // polling alone still works
	}
	go func() {
		defer close(ch)
		var last []Drive
		first := true
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			drives, _ := p.List()
			if first || !equalDrives(last, drives) {
				select {
				case ch <- drives:
				case <-ctx.Done():
					return
				}
				last, first = drives, false
			}
			select {
			case <-t.C:
			case _, ok := <-events:
				if !ok {
					events = nil
				}
				// Let the kernel finish: a drive's partitions appear
				// just after the drive.
				time.Sleep(100 * time.Millisecond)
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

func equalDrives(a, b []Drive) bool {
	return slices.EqualFunc(a, b, func(x, y Drive) bool {
		return x.Name == y.Name && x.Path == y.Path && x.Vendor == y.Vendor && x.Model == y.Model &&
			x.Serial == y.Serial && x.Size == y.Size && x.Removable == y.Removable &&
			slices.Equal(x.Partitions, y.Partitions)
	})
}
