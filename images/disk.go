package images

import (
	"bytes"
	"context"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// DiskConfig says what goes on the UEFI disk image.
type DiskConfig struct {
	Stub, Kernel, Initramfs string
	Cmdline                 string
	Epoch                   time.Time
	Out                     string
}

// Fixed identities of the disk image, so that builds are reproducible.
// They are not secrets and need not be unique: the box finds its data disk
// by label, never by these.
const (
	diskGUID    = "44524157-4252-4944-4745-000000000001"
	espGUID     = "44524157-4252-4944-4745-000000000002"
	espGUIDEFI  = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	fatVolumeID = "44524157"
	espLabel    = "DB-BOOT"
	sector      = 512
	mib         = 1 << 20
)

// BuildDisk makes a GPT disk image whose only partition, the EFI system
// partition, holds the unified kernel image at /EFI/BOOT/BOOTX64.EFI.
func BuildDisk(ctx context.Context, cfg DiskConfig) error {
	tmp, err := os.MkdirTemp("", "drawbridge-disk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	uki := filepath.Join(tmp, "BOOTX64.EFI")
	if err := BuildUKI(ctx, cfg.Stub, cfg.Kernel, cfg.Initramfs, cfg.Cmdline, cfg.Epoch, uki); err != nil {
		return fmt.Errorf("unified kernel image: %w", err)
	}
	st, err := os.Stat(uki)
	if err != nil {
		return err
	}
	// FAT32 needs at least 65525 clusters; leave room to grow.
	espSize := max(64*mib, roundUp(st.Size()+16*mib, mib))
	esp := filepath.Join(tmp, "esp.img")
	if err := buildESP(ctx, esp, espSize, uki, cfg.Epoch); err != nil {
		return fmt.Errorf("EFI system partition: %w", err)
	}
	// 1 MiB before the partition (protective MBR, GPT header and
	// entries), 1 MiB after it (the backup GPT).
	start := int64(mib)
	diskSize := start + espSize + mib
	tmpDisk := cfg.Out + ".tmp"
	os.Remove(tmpDisk)
	if err := os.WriteFile(tmpDisk, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(tmpDisk, diskSize); err != nil {
		return err
	}
	err = run(ctx, nil, "sgdisk", "--clear",
		"--disk-guid="+diskGUID,
		fmt.Sprintf("--new=1:%d:%d", start/sector, (start+espSize)/sector-1),
		"--typecode=1:"+espGUIDEFI,
		"--partition-guid=1:"+espGUID,
		"--change-name=1:EFI system partition",
		tmpDisk)
	if err != nil {
		return err
	}
	if err := copyInto(tmpDisk, esp, start); err != nil {
		return err
	}
	return os.Rename(tmpDisk, cfg.Out)
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// BuildUKI joins systemd's EFI stub, the kernel, the initramfs, the kernel
// command line and os-release into one PE image, the way systemd's ukify
// does: each as a section of its own, placed after the stub's sections.
func BuildUKI(ctx context.Context, stub, kernel, initrd, cmdline string, epoch time.Time, out string) error {
	tmp, err := os.MkdirTemp("", "drawbridge-uki-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	osrel := filepath.Join(tmp, "os-release")
	cmd := filepath.Join(tmp, "cmdline")
	if err := os.WriteFile(osrel, []byte(osRelease), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(cmd, []byte(cmdline), 0o644); err != nil {
		return err
	}
	end, err := peEnd(stub)
	if err != nil {
		return err
	}
	ks, err := os.Stat(kernel)
	if err != nil {
		return err
	}
	const align = 0x1000
	osrelVMA := roundUp(end, align)
	cmdlineVMA := roundUp(osrelVMA+int64(len(osRelease)), align)
	linuxVMA := roundUp(cmdlineVMA+int64(len(cmdline)), align)
	initrdVMA := roundUp(linuxVMA+ks.Size(), align)
	var args []string
	for _, s := range []struct {
		name, file string
		vma        int64
	}{
		{".osrel", osrel, osrelVMA},
		{".cmdline", cmd, cmdlineVMA},
		{".linux", kernel, linuxVMA},
		{".initrd", initrd, initrdVMA},
	} {
		args = append(args,
			"--add-section", s.name+"="+s.file,
			"--change-section-vma", s.name+"="+fmt.Sprintf("%#x", s.vma),
			"--set-section-flags", s.name+"=data,readonly")
	}
	args = append(args, stub, out)
	if err := run(ctx, nil, "objcopy", args...); err != nil {
		return err
	}
	return stampPE(out, epoch)
}

// stampPE sets a PE image's timestamp, which objcopy sets to the time of
// the build, and recomputes its checksum.
func stampPE(name string, t time.Time) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	if len(b) < 0x40 {
		return fmt.Errorf("%s: too short for a PE image", name)
	}
	off := int(binary.LittleEndian.Uint32(b[0x3c:]))
	const coffTimestamp, optChecksum = 8, 24 + 64
	if off < 0 || off+optChecksum+4 > len(b) || string(b[off:off+4]) != "PE\x00\x00" {
		return fmt.Errorf("%s: no PE header", name)
	}
	binary.LittleEndian.PutUint32(b[off+coffTimestamp:], uint32(t.Unix()))
	sumAt := off + optChecksum
	binary.LittleEndian.PutUint32(b[sumAt:], 0)
	binary.LittleEndian.PutUint32(b[sumAt:], peChecksum(b, sumAt))
	return writeFileAtomic(name, b, 0o644)
}

// peChecksum is the PE image checksum: the 16-bit one's complement sum of
// the file (with the checksum field itself taken as zero) plus its length.
func peChecksum(b []byte, sumAt int) uint32 {
	var sum uint64
	for i := 0; i+1 < len(b); i += 2 {
		if i == sumAt || i == sumAt+2 {
			continue
		}
		sum += uint64(binary.LittleEndian.Uint16(b[i:]))
		sum = (sum & 0xffff) + (sum >> 16)
	}
	if len(b)%2 == 1 {
		sum += uint64(b[len(b)-1])
		sum = (sum & 0xffff) + (sum >> 16)
	}
	sum = (sum & 0xffff) + (sum >> 16)
	return uint32(sum) + uint32(len(b))
}

// peEnd is the first virtual address after a PE image's sections.
func peEnd(name string) (int64, error) {
	f, err := pe.Open(name)
	if err != nil {
		return 0, fmt.Errorf("read EFI stub: %w", err)
	}
	defer f.Close()
	var end int64
	for _, s := range f.Sections {
		end = max(end, int64(s.VirtualAddress)+int64(max(s.VirtualSize, s.Size)))
	}
	if oh, ok := f.OptionalHeader.(*pe.OptionalHeader64); ok {
		end += int64(oh.ImageBase)
	}
	return end, nil
}

// buildESP makes a FAT32 filesystem image holding uki as
// /EFI/BOOT/BOOTX64.EFI, with a fixed volume id and every timestamp set to
// epoch.
func buildESP(ctx context.Context, img string, size int64, uki string, epoch time.Time) error {
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	sde := []string{"SOURCE_DATE_EPOCH=" + strconv.FormatInt(epoch.Unix(), 10), "MTOOLS_SKIP_CHECK=1"}
	if err := run(ctx, sde, "mkfs.vfat", "-F", "32", "-n", espLabel, "-i", fatVolumeID, "--invariant", img); err != nil {
		return err
	}
	if err := os.Chtimes(uki, epoch, epoch); err != nil {
		return err
	}
	if err := run(ctx, sde, "mmd", "-i", img, "::/EFI", "::/EFI/BOOT"); err != nil {
		return err
	}
	return run(ctx, sde, "mcopy", "-m", "-i", img, uki, "::/EFI/BOOT/BOOTX64.EFI")
}

// copyInto writes the file src into dst at offset off.
func copyInto(dst, src string, off int64) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// run runs a tool, with extra environment variables, and returns its
// output in the error when it fails.
func run(ctx context.Context, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
