package usb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

var (
	// ErrNotConfirmed: the confirmation given to Format is not the drive's.
	ErrNotConfirmed = errors.New("the confirmation does not name this drive")
	// ErrInUse: a partition of the drive is mounted.
	ErrInUse = errors.New("the drive has a mounted partition; unmount it first")
	// ErrChanged: the drive in the port is not the one that was confirmed.
	ErrChanged = errors.New("the drive changed since it was shown (pulled out, or another one plugged in)")
)

// wipeSize is how much Format zeroes at each end of the drive before mkfs,
// so no old partition table (GPT keeps a copy at the end) outlives it.
const wipeSize = 1 << 20

// Format erases d and makes one filesystem on the whole drive, without a
// partition table (every desktop system reads such a drive): fstype is
// "vfat", "exfat" or "ext4"; label may be empty. It runs only when confirm
// equals d.Confirmation(), the drive in the port is still d, and none of
// its partitions is mounted. The tools are mkfs.vfat (dosfstools),
// mkfs.exfat (exfatprogs) and mke2fs (e2fsprogs).
func (p *Ports) Format(ctx context.Context, d Drive, fstype, label, confirm string) error {
	if confirm != d.Confirmation() {
		return fmt.Errorf("format %s: %w (expected %q)", d.Name, ErrNotConfirmed, d.Confirmation())
	}
	label, err := checkLabel(fstype, label)
	if err != nil {
		return fmt.Errorf("format %s: %w", d.Name, err)
	}
	now, ok, err := p.drive(d.Name)
	if !ok {
		return fmt.Errorf("format %s: %w", d.Name, errors.Join(ErrChanged, err))
	}
	if now.Size != d.Size || now.Model != d.Model || now.Vendor != d.Vendor || now.Serial != d.Serial || now.Path != d.Path {
		return fmt.Errorf("format %s: %w", d.Name, ErrChanged)
	}
	if err := p.checkUnmounted(now); err != nil {
		return fmt.Errorf("format %s: %w", d.Name, err)
	}
	var tool string
	var args []string
	switch fstype {
	case "vfat":
		tool, args = "mkfs.vfat", []string{"-I"}
		if d.Size >= 512<<20 {
			args = append(args, "-F", "32")
			// -s counts the drive's logical sectors; without the
			// sector size, mkfs.vfat picks the cluster size.
			sector, _ := strconv.ParseInt(readString(p.Sys, path.Join("block", d.Name, "queue/logical_block_size")), 10, 64)
			if c := fatCluster(d.Size); sector >= 512 && sector&(sector-1) == 0 && c >= sector {
				args = append(args, "-s", strconv.FormatInt(c/sector, 10))
			}
		}
		if label != "" {
			args = append(args, "-n", label)
		}
	case "exfat":
		tool = "mkfs.exfat"
		if label != "" {
			args = append(args, "-L", label)
		}
	case "ext4":
		tool, args = "mke2fs", []string{"-q", "-F", "-t", "ext4", "-m", "0"}
		if label != "" {
			args = append(args, "-L", label)
		}
	}
	bin, err := lookTool(tool)
	if err != nil {
		return fmt.Errorf("format %s as %s: %w", d.Name, fstype, err)
	}
	if err := wipe(d); err != nil {
		return fmt.Errorf("format %s: %w", d.Name, err)
	}
	if out, err := p.Run(ctx, bin, append(args, d.Path)...); err != nil {
		return fmt.Errorf("format %s: %s: %w: %s", d.Name, tool, err, bytes.TrimSpace(out))
	}
	rereadPartitions(d.Path)
	return nil
}

// minFAT32Clusters is the fewest clusters a FAT32 filesystem may have:
// with fewer, Windows and macOS take it for FAT16 and misread it.
const minFAT32Clusters = 65525

// fatCluster is the cluster size in bytes Format gives a FAT32 filesystem
// on a drive of size bytes: the largest of 32, 16, 8 and 4 KiB that
// leaves it well over minFAT32Clusters. mkfs.vfat would pick 4 KiB up to
// 8 GB and 8 or 16 KiB up to 32 GB, as Windows does; exFAT takes 32 KiB
// on drives of those sizes. Writing a file allocates its clusters one by
// one: in the appliance's kernel (in QEMU), a 1.5 GB stick with 16 KiB
// clusters is written, flushed and read back 2.5 times as fast as with
// 4 KiB (a restore to it gains less: the vault's own work shares the
// CPUs). The cost is a whole cluster for the smallest file, which the
// restore's space check counts (it reads the cluster size off the
// mounted drive).
func fatCluster(size int64) int64 {
	for c := int64(32 << 10); c > 4<<10; c /= 2 {
		if size/c >= minFAT32Clusters+minFAT32Clusters/32 {
			return c
		}
	}
	return 4 << 10
}

// checkLabel returns the label as it will be written, or why it cannot be.
func checkLabel(fstype, label string) (string, error) {
	max := 11
	switch fstype {
	case "vfat":
		label = strings.ToUpper(label) // FAT labels are upper case
	case "exfat":
	case "ext4":
		max = 16
	default:
		return "", fmt.Errorf("cannot format as %q: %w", fstype, ErrUnsupported)
	}
	if len(label) > max {
		return "", fmt.Errorf("label %q is longer than %d characters", label, max)
	}
	for _, c := range label {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == ' ') {
			return "", fmt.Errorf("label %q: use only letters, digits, space, - and _", label)
		}
	}
	return label, nil
}

// checkUnmounted fails when any mount's device is d or one of its
// partitions, by device number (kernel mounts) or by node path (FUSE).
func (p *Ports) checkUnmounted(d Drive) error {
	info, err := p.MountInfo()
	if err != nil {
		return fmt.Errorf("read the mount table: %w", err)
	}
	devs := map[string]bool{}
	paths := map[string]bool{d.Path: true}
	if n := readString(p.Sys, path.Join("block", d.Name, "dev")); n != "" {
		devs[n] = true
	}
	if subs, err := readDirNames(p, d.Name); err == nil {
		for _, s := range subs {
			if n := readString(p.Sys, path.Join("block", d.Name, s, "dev")); n != "" {
				devs[n] = true
			}
			paths[p.node(s)] = true
		}
	}
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		src := ""
		if sep >= 0 && sep+2 < len(f) {
			src = f[sep+2]
		}
		if devs[f[2]] || paths[src] {
			return fmt.Errorf("%w (%s on %s)", ErrInUse, src, f[4])
		}
	}
	return nil
}

func readDirNames(p *Ports, name string) ([]string, error) {
	entries, err := fs.ReadDir(p.Sys, path.Join("block", name))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// wipe zeroes the first and last MiB of the drive. O_EXCL on a block
// device fails while anything has it mounted.
func wipe(d Drive) error {
	f, err := os.OpenFile(d.Path, os.O_WRONLY|unix.O_EXCL, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w (%v)", ErrInUse, err)
		}
		return fmt.Errorf("open %s: %w", d.Path, err)
	}
	defer f.Close()
	zero := make([]byte, min(wipeSize, d.Size))
	if _, err := f.WriteAt(zero, 0); err != nil {
		return fmt.Errorf("erase the start of %s: %w", d.Path, err)
	}
	if d.Size > 2*wipeSize {
		if _, err := f.WriteAt(zero, d.Size-wipeSize); err != nil {
			return fmt.Errorf("erase the end of %s: %w", d.Path, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", d.Path, err)
	}
	return f.Close()
}

// rereadPartitions asks the kernel to forget the old partitions; loop
// devices without partition scanning refuse, which is fine.
func rereadPartitions(dev string) {
	f, err := os.Open(dev)
	if err != nil {
		return
	}
	defer f.Close()
	unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
}

func execCommand(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}
