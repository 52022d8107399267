package usb

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/hw/usb/usbtest"
	"drawbridge/vault/fixture"
)

// loopImage makes a sparse image of size bytes, runs mkfs on it if one is
// given, and attaches it to a loop device. It returns the image's path and
// the loop device's kernel name.
func loopImage(t testing.TB, size int64, mkfs ...string) (string, string) {
	t.Helper()
	img, dev := usbtest.Image(t, size, mkfs...)
	return img, filepath.Base(dev)
}

// loopDrive lists the drives with Any set and returns the loop device's.
func loopDrive(t testing.TB, p *Ports, name string) Drive {
	t.Helper()
	drives, _ := p.List() // other loop devices of the machine may be unreadable
	for _, d := range drives {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("%s not listed among %+v", name, drives)
	return Drive{}
}

func testPorts() *Ports {
	p := Local()
	p.Any = true
	return p
}

// canMount reports whether fstype can be mounted here: by the kernel, or
// through its FUSE driver.
func canMount(t *testing.T, fstype string) {
	t.Helper()
	if fstype == "ext4" {
		return
	}
	b, _ := os.ReadFile("/proc/filesystems")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(strings.TrimPrefix(l, "nodev")) == fstype {
			return
		}
	}
	exec.Command("modprobe", fstype).Run()
	if _, err := lookTool(fuseDrivers[fstype].name); err == nil {
		t.Logf("the kernel has no %s; mounting through %s", fstype, fuseDrivers[fstype].name)
		return
	}
	fixture.Need(t, "the kernel has no "+fstype+" and "+fuseDrivers[fstype].name+" is missing: apt-get install fusefat exfat-fuse")
}

func TestFormatMountUnmount(t *testing.T) {
	for _, c := range []struct{ fstype, mkfs, label, want string }{
		{"ext4", "mke2fs", "Backups", "Backups"},
		{"exfat", "mkfs.exfat", "Backups", "Backups"},
		{"vfat", "mkfs.vfat", "Backups", "BACKUPS"},
	} {
		t.Run(c.fstype, func(t *testing.T) {
			if _, err := lookTool(c.mkfs); err != nil {
				fixture.Need(t, "needs "+c.mkfs+": apt-get install e2fsprogs dosfstools exfatprogs")
			}
			_, name := loopImage(t, 96<<20)
			p := testPorts()
			d := loopDrive(t, p, name)
			if len(d.Partitions) != 0 {
				t.Fatalf("blank drive has partitions: %+v", d.Partitions)
			}
			ctx := context.Background()
			if err := p.Format(ctx, d, c.fstype, c.label, "yes"); !errors.Is(err, ErrNotConfirmed) {
				t.Fatalf("Format with \"yes\": %v", err)
			}
			if err := p.Format(ctx, d, c.fstype, c.label, d.Confirmation()); err != nil {
				t.Fatal(err)
			}
			d = loopDrive(t, p, name)
			if len(d.Partitions) != 1 || d.Partitions[0].FSType != c.fstype || d.Partitions[0].Label != c.want {
				t.Fatalf("after formatting as %s labelled %q: %+v", c.fstype, c.want, d.Partitions)
			}
			canMount(t, c.fstype)

			dir := filepath.Join(t.TempDir(), "mnt")
			m, err := p.Mount(d.Partitions[0], dir, false)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Unmount()
			var st unix.Statfs_t
			if err := unix.Statfs(m.Root(), &st); err != nil {
				t.Fatal(err)
			}
			if want := int64(unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC); st.Flags&want != want || st.Flags&unix.ST_RDONLY != 0 {
				t.Errorf("mount flags %#x, want nosuid, nodev, noexec, rw", st.Flags)
			}
			free, size, err := m.Space()
			if err != nil || free <= 0 || size < 64<<20 || free > size {
				t.Errorf("Space() = %d, %d, %v", free, size, err)
			}
			if err := os.WriteFile(filepath.Join(m.Root(), "hello.txt"), []byte("hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := p.Format(ctx, d, c.fstype, "", d.Confirmation()); !errors.Is(err, ErrInUse) {
				t.Errorf("Format of a mounted drive: %v", err)
			}
			if err := m.Unmount(); err != nil {
				t.Fatal(err)
			}
			if isMountPoint(dir) {
				t.Fatal("still mounted after Unmount")
			}

			m, err = p.Mount(d.Partitions[0], dir, true)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Unmount()
			if b, err := os.ReadFile(filepath.Join(m.Root(), "hello.txt")); err != nil || string(b) != "hello" {
				t.Errorf("read back %q, %v", b, err)
			}
			if err := os.WriteFile(filepath.Join(m.Root(), "more.txt"), nil, 0o644); err == nil {
				t.Error("wrote to a read-only mount")
			}
			if err := m.Unmount(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestMountRefused: a damaged ext4, no filesystem at all, and NTFS are each
// refused with their own error, nothing is mounted and the image is
// unchanged.
func TestMountRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		mkfs   []string
		damage func(f *os.File) error
		want   error
	}{
		{"damaged ext4", []string{"mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096"}, func(f *os.File) error {
			// Garbage over the group descriptors (the block after the superblock).
			junk := make([]byte, 4096)
			for i := range junk {
				junk[i] = byte(i*7 + 3)
			}
			_, err := f.WriteAt(junk, 4096)
			return err
		}, ErrCorrupt},
		{"damaged exfat", []string{"mkfs.exfat"}, func(f *os.File) error {
			// The boot region's checksum sector no longer matches.
			_, err := f.WriteAt(make([]byte, 512), 11*512)
			return err
		}, ErrCorrupt},
		{"damaged vfat", []string{"mkfs.vfat"}, func(f *os.File) error {
			// No FATs, and no reserved sectors before them.
			_, err := f.WriteAt([]byte{0, 0, 0}, 14)
			return err
		}, ErrCorrupt},
		{"blank", nil, nil, ErrUnsupported},
		{"ntfs", nil, func(f *os.File) error {
			_, err := f.WriteAt([]byte("NTFS    "), 3)
			return err
		}, ErrUnsupported},
	} {
		t.Run(c.name, func(t *testing.T) {
			if strings.HasPrefix(c.name, "damaged ") {
				canMount(t, strings.TrimPrefix(c.name, "damaged "))
			}
			img, name := loopImage(t, 32<<20, c.mkfs...)
			if c.damage != nil {
				f, err := os.OpenFile("/dev/"+name, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.damage(f); err != nil {
					t.Fatal(err)
				}
				f.Sync()
				f.Close()
			}
			before := sum(t, img)
			p := testPorts()
			d := loopDrive(t, p, name)
			part := Partition{Name: d.Name, Path: d.Path, Size: d.Size}
			dir := filepath.Join(t.TempDir(), "mnt")
			m, err := p.Mount(part, dir, false)
			if err == nil {
				m.Unmount()
				t.Fatal("mounted")
			}
			if !errors.Is(err, c.want) {
				t.Errorf("Mount: %v; want %v", err, c.want)
			}
			t.Logf("refused: %v", err)
			if isMountPoint(dir) {
				t.Error("left mounted")
			}
			exec.Command("blockdev", "--flushbufs", "/dev/"+name).Run()
			if sum(t, img) != before {
				t.Error("the image changed")
			}
		})
	}
}

// TestSymlinkOutside: a stick whose files are symlinks to the vault's own
// directories. Read through os.OpenRoot(m.Root()) they lead nowhere.
func TestSymlinkOutside(t *testing.T) {
	_, name := loopImage(t, 32<<20, "mke2fs", "-q", "-F", "-t", "ext4")
	p := testPorts()
	d := loopDrive(t, p, name)
	dir := filepath.Join(t.TempDir(), "mnt")
	m, err := p.Mount(d.Partitions[0], dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	secret := t.TempDir()
	os.WriteFile(filepath.Join(secret, "key"), []byte("secret"), 0o600)
	os.Symlink(secret, filepath.Join(dir, "abs"))
	os.Symlink("../../../../../../../../"+secret, filepath.Join(dir, "rel"))
	root, err := os.OpenRoot(m.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, n := range []string{"abs/key", "rel/key"} {
		if b, err := root.ReadFile(n); err == nil {
			t.Errorf("%s read through the stick's symlink: %q", n, b)
		}
	}
}

// TestFormatPartitioned: a stick with an MBR partition table and a FAT
// partition is listed with that partition; Format leaves one filesystem
// on the whole drive and the old partition is gone.
func TestFormatPartitioned(t *testing.T) {
	if _, err := lookTool("mkfs.vfat"); err != nil {
		fixture.Need(t, "needs mkfs.vfat: apt-get install dosfstools")
	}
	if _, err := lookTool("mkfs.exfat"); err != nil {
		fixture.Need(t, "needs mkfs.exfat: apt-get install exfatprogs")
	}
	if os.Geteuid() != 0 {
		fixture.Need(t, "needs root for loop devices")
	}
	img := filepath.Join(t.TempDir(), "stick.img")
	const size = 64 << 20
	mbr := make([]byte, 512)
	e := mbr[446:]
	e[4] = 0x0C // FAT32 with LBA
	binary.LittleEndian.PutUint32(e[8:], 2048)
	binary.LittleEndian.PutUint32(e[12:], size/512-2048)
	mbr[510], mbr[511] = 0x55, 0xAA
	if err := os.WriteFile(img, mbr, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, size)
	dev := usbtest.Attach(t, img, usbtest.PartScan)
	part := "/sys/class/block/" + filepath.Base(dev) + "p1"
	for i := 0; ; i++ {
		if _, err := os.Stat(part); err == nil {
			break
		}
		if i == 40 {
			// Not a package to install: the kernel was built without
			// MBR partition tables (a minimal VM kernel). The appliance's
			// kernel has them: TestUSBInVM runs this test there.
			t.Skip("the kernel found no partition on a loop device with an MBR: no CONFIG_MSDOS_PARTITION")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.Command("mkfs.vfat", "-n", "OLD", dev+"p1").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat %sp1: %v\n%s", dev, err, out)
	}
	p := testPorts()
	name := filepath.Base(dev)
	d := loopDrive(t, p, name)
	if len(d.Partitions) != 1 || d.Partitions[0].Name != name+"p1" || d.Partitions[0].FSType != "vfat" ||
		d.Partitions[0].Label != "OLD" || d.Partitions[0].Size != size-2048*512 {
		t.Fatalf("partitions %+v", d.Partitions)
	}
	if err := p.Format(context.Background(), d, "exfat", "NEW", d.Confirmation()); err != nil {
		t.Fatal(err)
	}
	d = loopDrive(t, p, name)
	if len(d.Partitions) != 1 || d.Partitions[0].Name != name || d.Partitions[0].FSType != "exfat" || d.Partitions[0].Label != "NEW" {
		t.Fatalf("after formatting: %+v", d.Partitions)
	}
}

// TestWatchLoop watches the real sysfs while a loop device (standing in
// for a stick) is attached and detached. Polling is made too slow to
// matter, so the kernel's uevents are what Watch reacts to.
func TestWatchLoop(t *testing.T) {
	if os.Geteuid() != 0 {
		fixture.Need(t, "needs root for loop devices")
	}
	p := testPorts()
	p.Poll = time.Hour
	probe, stop := context.WithCancel(context.Background())
	if _, err := blockEvents(probe); err != nil {
		t.Logf("no uevents (%v): polling instead", err)
		p.Poll = 50 * time.Millisecond
	}
	stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := p.Watch(ctx)
	<-ch
	_, name := loopImage(t, 32<<20, "mke2fs", "-q", "-F", "-t", "ext4", "-L", "WATCHED")
	wait := func(present bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case drives := <-ch:
				found := false
				for _, d := range drives {
					if d.Name == name && len(d.Partitions) == 1 && d.Partitions[0].Label == "WATCHED" {
						found = true
					}
				}
				if found == present {
					return
				}
			case <-deadline:
				t.Fatalf("%s present=%v not seen within 10s", name, present)
			}
		}
	}
	wait(true)
	if err := usbtest.Detach("/dev/" + name); err != nil {
		t.Fatal(err)
	}
	wait(false)
}

// TestFormatFATClusters: a FAT32 drive gets clusters as large as keep it
// FAT32 for every system that reads it (at least 65525 of them).
func TestFormatFATClusters(t *testing.T) {
	if _, err := lookTool("mkfs.vfat"); err != nil {
		fixture.Need(t, "needs mkfs.vfat: apt-get install dosfstools")
	}
	img, name := loopImage(t, 1100<<20)
	p := testPorts()
	d := loopDrive(t, p, name)
	if err := p.Format(context.Background(), d, "vfat", "", d.Confirmation()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	le16 := func(o int) int64 { return int64(b[o]) | int64(b[o+1])<<8 }
	le32 := func(o int) int64 { return le16(o) | le16(o+2)<<16 }
	sector, perCluster, reserved, fats := le16(0x0b), int64(b[0x0d]), le16(0x0e), int64(b[0x10])
	total, fatSize := le32(0x20), le32(0x24)
	if le16(0x16) != 0 || fatSize == 0 || perCluster == 0 {
		t.Fatalf("not FAT32: %x", b[:0x30])
	}
	clusters := (total - reserved - fats*fatSize) / perCluster
	if cluster := sector * perCluster; cluster != fatCluster(d.Size) || cluster != 16<<10 || clusters < minFAT32Clusters {
		t.Errorf("%d clusters of %d bytes; want 16 KiB clusters, at least %d", clusters, cluster, minFAT32Clusters)
	}
}

func TestFATCluster(t *testing.T) {
	for _, c := range []struct{ size, want int64 }{
		{512 << 20, 4 << 10},
		{600e6, 8 << 10},
		{1536 << 20, 16 << 10},
		{2 << 30, 16 << 10}, // 65,536 clusters of 32 KiB: too close to the limit
		{4 << 30, 32 << 10},
		{64e9, 32 << 10},
	} {
		got := fatCluster(c.size)
		if got != c.want || c.size/got < minFAT32Clusters {
			t.Errorf("fatCluster(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}
