package usb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

const (
	usbDev  = "devices/pci0000:00/0000:00:14.0/usb2/2-1"
	usbBlk  = usbDev + "/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb"
	sataBlk = "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda"
	loopBlk = "devices/virtual/block/loop0"
)

// fakeSys is a sysfs tree with a USB stick (sdb, one partition), a SATA
// disk (sda, never listed) and a loop device (listed only with Any).
func fakeSys() fstest.MapFS {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s + "\n")} }
	link := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s), Mode: fs.ModeSymlink} }
	return fstest.MapFS{
		"block/sdb":                        link("../" + usbBlk),
		usbBlk + "/size":                   file("120176640"),
		usbBlk + "/removable":              file("1"),
		usbBlk + "/dev":                    file("8:16"),
		usbBlk + "/device/vendor":          file("SanDisk "),
		usbBlk + "/device/model":           file("Ultra           "),
		usbBlk + "/sdb1/partition":         file("1"),
		usbBlk + "/sdb1/size":              file("120174592"),
		usbBlk + "/sdb1/dev":               file("8:17"),
		usbDev + "/idVendor":               file("0781"),
		usbDev + "/serial":                 file("4C530001230101112043"),
		usbDev + "/manufacturer":           file(" USB"),
		"block/sda":                        link("../" + sataBlk),
		sataBlk + "/size":                  file("500118192"),
		sataBlk + "/removable":             file("0"),
		sataBlk + "/device/model":          file("Samsung SSD 860"),
		sataBlk + "/sda1/partition":        file("1"),
		sataBlk + "/sda1/size":             file("500116144"),
		"block/loop0":                      link("../" + loopBlk),
		loopBlk + "/size":                  file("131072"),
		loopBlk + "/removable":             file("0"),
		"block/loop1":                      link("../devices/virtual/block/loop1"),
		"devices/virtual/block/loop1/size": file("0"),
	}
}

// fat32 is a FAT32 boot sector labelled label.
func fat32(label string) []byte {
	b := make([]byte, 4096)
	b[0] = 0xEB
	binary.LittleEndian.PutUint16(b[11:], 512)
	b[13] = 8
	copy(b[71:82], label+strings.Repeat(" ", 11-len(label)))
	copy(b[82:90], "FAT32   ")
	b[510], b[511] = 0x55, 0xAA
	return b
}

type fakeDevs map[string][]byte

func (d fakeDevs) open(p string) (io.ReaderAt, io.Closer, error) {
	b, ok := d[p]
	if !ok {
		return nil, nil, fs.ErrNotExist
	}
	return bytes.NewReader(b), io.NopCloser(nil), nil
}

func fakePorts(sys fs.FS, any bool) *Ports {
	devs := fakeDevs{"/dev/sdb1": fat32("STICK"), "/dev/sda1": fat32("SYSTEM"), "/dev/loop0": nil}
	return &Ports{Sys: sys, DevDir: "/dev", Open: devs.open, Any: any, Poll: 5 * time.Millisecond}
}

func TestListUSBOnly(t *testing.T) {
	drives, err := fakePorts(fakeSys(), false).List()
	if err != nil {
		t.Fatal(err)
	}
	if len(drives) != 1 {
		t.Fatalf("listed %d drives, want only sdb: %+v", len(drives), drives)
	}
	d := drives[0]
	want := Drive{Name: "sdb", Path: "/dev/sdb", Vendor: "SanDisk", Model: "Ultra", Serial: "4C530001230101112043",
		Size: 120176640 * 512, Removable: true,
		Partitions: []Partition{{Name: "sdb1", Path: "/dev/sdb1", Size: 120174592 * 512, FSType: "vfat", Label: "STICK"}}}
	if d.Name != want.Name || d.Path != want.Path || d.Vendor != want.Vendor || d.Model != want.Model ||
		d.Serial != want.Serial || d.Size != want.Size || !d.Removable || len(d.Partitions) != 1 || d.Partitions[0] != want.Partitions[0] {
		t.Errorf("drive\n got %+v\nwant %+v", d, want)
	}
	if got := d.Confirmation(); got != "format sdb SanDisk Ultra 57.3 GiB" {
		t.Errorf("Confirmation() = %q", got)
	}
}

func TestListAny(t *testing.T) {
	drives, err := fakePorts(fakeSys(), true).List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range drives {
		names = append(names, d.Name)
	}
	// loop1 has no backing file (size 0); sda is neither USB nor removable.
	if strings.Join(names, " ") != "loop0 sdb" {
		t.Errorf("listed %q, want loop0 and sdb", names)
	}
	if drives[0].Model != "loop device" || len(drives[0].Partitions) != 0 {
		t.Errorf("loop0: %+v", drives[0])
	}

	// Only keeps to the drives it accepts.
	p := fakePorts(fakeSys(), true)
	p.Only = func(name string) bool { return name == "sdb" }
	if drives, err := p.List(); err != nil || len(drives) != 1 || drives[0].Name != "sdb" {
		t.Errorf("with Only: %+v, %v", drives, err)
	}
}

func TestListNoSysfs(t *testing.T) {
	if _, err := fakePorts(fstest.MapFS{}, false).List(); err == nil {
		t.Error("List without /sys/block: no error")
	}
}

// swapFS lets a test replace the whole tree while Watch reads it.
type swapFS struct {
	mu  sync.Mutex
	cur fstest.MapFS
}

func (s *swapFS) get() fstest.MapFS {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}
func (s *swapFS) set(m fstest.MapFS) {
	s.mu.Lock()
	s.cur = m
	s.mu.Unlock()
}
func (s *swapFS) Open(name string) (fs.File, error)          { return s.get().Open(name) }
func (s *swapFS) ReadLink(name string) (string, error)       { return s.get().ReadLink(name) }
func (s *swapFS) Lstat(name string) (fs.FileInfo, error)     { return s.get().Lstat(name) }
func (s *swapFS) ReadDir(name string) ([]fs.DirEntry, error) { return s.get().ReadDir(name) }

func TestWatchPlugAndPull(t *testing.T) {
	empty := fakeSys()
	for name := range empty {
		if strings.HasPrefix(name, "block/sdb") {
			delete(empty, name)
		}
	}
	sys := &swapFS{cur: empty}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := fakePorts(sys, false).Watch(ctx)
	next := func(what string) []Drive {
		t.Helper()
		select {
		case d, ok := <-ch:
			if !ok {
				t.Fatalf("%s: channel closed", what)
			}
			return d
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no list within 5s", what)
		}
		return nil
	}
	if d := next("start"); len(d) != 0 {
		t.Fatalf("at start: %+v, want no drives", d)
	}
	sys.set(fakeSys())
	if d := next("plug"); len(d) != 1 || d[0].Name != "sdb" {
		t.Fatalf("after plugging in: %+v", d)
	}
	sys.set(empty)
	if d := next("pull"); len(d) != 0 {
		t.Fatalf("after pulling out: %+v", d)
	}
	cancel()
	for range ch { // closed once ctx ends
	}
}

func TestProbe(t *testing.T) {
	exfat := make([]byte, 8192)
	copy(exfat[3:], "EXFAT   ")
	binary.LittleEndian.PutUint32(exfat[88:], 8) // cluster heap at sector 8
	binary.LittleEndian.PutUint32(exfat[96:], 2) // root directory in cluster 2
	exfat[108], exfat[109] = 9, 0                // 512-byte sectors, 1 sector per cluster
	exfat[4096] = 0x83
	exfat[4097] = 4
	for i, c := range "DATA" {
		exfat[4098+2*i] = byte(c)
	}
	ext := make([]byte, 2048)
	binary.LittleEndian.PutUint16(ext[1024+0x38:], 0xEF53)
	binary.LittleEndian.PutUint32(ext[1024+0x60:], 0x40) // extents
	copy(ext[1024+0x78:], "BACKUPS")
	ntfs := make([]byte, 512)
	copy(ntfs[3:], "NTFS    ")
	for _, c := range []struct {
		name       string
		data       []byte
		typ, label string
	}{
		{"fat32", fat32("STICK"), "vfat", "STICK"},
		{"fat unlabelled", fat32("NO NAME"), "vfat", ""},
		{"exfat", exfat, "exfat", "DATA"},
		{"ext4", ext, "ext4", "BACKUPS"},
		{"ntfs", ntfs, "ntfs", ""},
		{"escape in label", fat32("\x1b[2J\xffX"), "vfat", "?[2J?X"},
		{"zeros", make([]byte, 1<<20), "", ""},
		{"short", []byte{1, 2, 3}, "", ""},
	} {
		typ, label, err := Probe(bytes.NewReader(c.data))
		if err != nil || typ != c.typ || label != c.label {
			t.Errorf("%s: Probe = %q, %q, %v; want %q, %q", c.name, typ, label, err, c.typ, c.label)
		}
	}
}

func FuzzProbe(f *testing.F) {
	f.Add(fat32("STICK"))
	f.Add(make([]byte, 2048))
	f.Fuzz(func(t *testing.T, b []byte) {
		if typ, _, _ := Probe(bytes.NewReader(b)); typ == "vfat" {
			checkFAT(b, int64(len(b)))
		}
	})
}

func TestFormatRefusals(t *testing.T) {
	p := fakePorts(fakeSys(), false)
	p.MountInfo = func() ([]byte, error) {
		return []byte("27 1 8:17 / /media/stick rw,nosuid - vfat /dev/sdb1 rw\n"), nil
	}
	p.Run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		t.Errorf("ran %s %q", name, args)
		return nil, nil
	}
	drives, err := p.List()
	if err != nil || len(drives) != 1 {
		t.Fatal(drives, err)
	}
	d := drives[0]
	ctx := context.Background()
	if err := p.Format(ctx, d, "exfat", "X", "format sdb"); !errors.Is(err, ErrNotConfirmed) {
		t.Errorf("wrong confirmation: %v", err)
	}
	if err := p.Format(ctx, d, "ntfs", "X", d.Confirmation()); !errors.Is(err, ErrUnsupported) {
		t.Errorf("ntfs: %v", err)
	}
	if err := p.Format(ctx, d, "vfat", "a/b", d.Confirmation()); err == nil {
		t.Error("label with a slash accepted")
	}
	if err := p.Format(ctx, d, "exfat", "X", d.Confirmation()); !errors.Is(err, ErrInUse) {
		t.Errorf("mounted partition: %v", err)
	}
	other := d
	other.Serial = "0000"
	if err := p.Format(ctx, other, "exfat", "X", other.Confirmation()); !errors.Is(err, ErrChanged) {
		t.Errorf("another stick in the port: %v", err)
	}
}

// TestListHostileStrings: a stick's descriptor strings and label reach
// the console without their control characters.
func TestListHostileStrings(t *testing.T) {
	sys := fakeSys()
	sys[usbBlk+"/device/model"] = &fstest.MapFile{Data: []byte("Evil\x1b]0;owned\x07\x9b31m\n")}
	p := fakePorts(sys, false)
	p.Open = fakeDevs{"/dev/sdb1": fat32("\x1b[H\x1b[J")}.open
	drives, err := p.List()
	if err != nil || len(drives) != 1 {
		t.Fatal(drives, err)
	}
	d := drives[0]
	for _, s := range []string{d.Model, d.Partitions[0].Label, d.Confirmation()} {
		if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f && r < 0xa0 }) {
			t.Errorf("control character in %q", s)
		}
	}
}

func TestIsBlockEvent(t *testing.T) {
	add := []byte("add@/devices/virtual/block/loop3\x00ACTION=add\x00DEVPATH=/devices/virtual/block/loop3\x00SUBSYSTEM=block\x00DEVNAME=loop3\x00")
	net := []byte("add@/devices/virtual/net/veth0\x00ACTION=add\x00SUBSYSTEM=net\x00")
	fake := []byte("add@/x\x00NOTSUBSYSTEM=block\x00")
	if !isBlockEvent(add) || isBlockEvent(net) || isBlockEvent(fake) {
		t.Error("isBlockEvent")
	}
}

type fakeMounter struct{ calls []string }

func (m *fakeMounter) Mount(dev, dir, fstype string, readOnly bool) (func() error, error) {
	m.calls = append(m.calls, fmt.Sprintf("%s %s ro=%v", dev, fstype, readOnly))
	return func() error { return nil }, nil
}

// TestMountChoices: what Mount passes to the Mounter, and what it refuses
// before the Mounter is asked, from the superblock read at mount time.
func TestMountChoices(t *testing.T) {
	ext3 := make([]byte, 2048)
	binary.LittleEndian.PutUint16(ext3[1024+0x38:], 0xEF53)
	binary.LittleEndian.PutUint32(ext3[1024+0x5C:], 0x4) // has_journal
	noFATs := fat32("BAD")
	noFATs[14], noFATs[16] = 1, 0
	good := fat32("GOOD")
	good[14], good[16] = 32, 2
	binary.LittleEndian.PutUint32(good[32:], 100000) // sectors
	binary.LittleEndian.PutUint32(good[36:], 800)    // sectors per FAT
	binary.LittleEndian.PutUint32(good[44:], 2)      // root cluster
	ntfs := make([]byte, 512)
	copy(ntfs[3:], "NTFS    ")
	devs := fakeDevs{"/dev/a": ext3, "/dev/b": noFATs, "/dev/c": good, "/dev/d": ntfs, "/dev/e": make([]byte, 4096)}
	m := &fakeMounter{}
	p := &Ports{Sys: fstest.MapFS{}, DevDir: "/dev", Open: devs.open, Mounter: m}
	for _, c := range []struct {
		dev  string
		ro   bool
		want error
		call string
	}{
		{"/dev/a", true, nil, "/dev/a ext4 ro=true"},
		{"/dev/b", false, ErrCorrupt, ""},
		{"/dev/c", false, nil, "/dev/c vfat ro=false"},
		{"/dev/d", false, ErrUnsupported, ""},
		{"/dev/e", false, ErrUnsupported, ""},
	} {
		m.calls = nil
		mnt, err := p.Mount(Partition{Name: path.Base(c.dev), Path: c.dev}, t.TempDir(), c.ro)
		if !errors.Is(err, c.want) || c.want == nil && (mnt == nil || mnt.Unmount() != nil) {
			t.Errorf("%s: Mount = %v, want %v", c.dev, err, c.want)
		}
		if strings.Join(m.calls, ";") != c.call {
			t.Errorf("%s: mounter called with %q, want %q", c.dev, m.calls, c.call)
		}
	}
}
