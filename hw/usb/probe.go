package usb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// probeSize is how much of a device Probe reads first: enough for every
// superblock it knows (iso9660's is at 32 KiB).
const probeSize = 64 << 10

// Probe names the filesystem whose superblock starts r, and its label:
// "vfat", "exfat", "ext2", "ext3", "ext4", or, to name what is refused,
// "ntfs", "iso9660", "xfs", "btrfs". It returns "" for anything else. It
// reads at most a few KiB past the superblocks and trusts none of their
// numbers beyond bounds checks.
func Probe(r io.ReaderAt) (fstype, label string, err error) {
	buf := make([]byte, probeSize)
	n, err := r.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", "", err
	}
	b := buf[:n]
	switch {
	case len(b) >= 2048 && binary.LittleEndian.Uint16(b[1024+0x38:]) == 0xEF53:
		t, l := probeExt(b[1024:2048])
		return t, l, nil
	case len(b) >= 512 && string(b[3:11]) == "EXFAT   ":
		return "exfat", exfatLabel(r, b), nil
	case len(b) >= 512 && string(b[3:11]) == "NTFS    ":
		return "ntfs", "", nil
	case len(b) >= 512 && isFAT(b):
		return "vfat", fatLabel(b), nil
	case len(b) >= 4 && string(b[:4]) == "XFSB":
		return "xfs", "", nil
	case len(b) >= 32774 && string(b[32769:32774]) == "CD001":
		return "iso9660", "", nil
	}
	var btrfs [8]byte
	if _, err := r.ReadAt(btrfs[:], 0x10040); err == nil && string(btrfs[:]) == "_BHRfS_M" {
		return "btrfs", "", nil
	}
	return "", "", nil
}

func probeExt(sb []byte) (string, string) {
	compat := binary.LittleEndian.Uint32(sb[0x5C:])
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	roCompat := binary.LittleEndian.Uint32(sb[0x64:])
	label := cString(sb[0x78 : 0x78+16])
	const (
		hasJournal = 0x4
		// extents, 64bit, flex_bg, mmp, inline data...
		ext4Incompat = 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x8000
		// huge_file, gdt_csum, dir_nlink, extra_isize, metadata_csum
		ext4RoCompat = 0x8 | 0x10 | 0x20 | 0x40 | 0x400
	)
	switch {
	case incompat&ext4Incompat != 0 || roCompat&ext4RoCompat != 0:
		return "ext4", label
	case compat&hasJournal != 0:
		return "ext3", label
	}
	return "ext2", label
}

// isFAT checks a FAT boot sector: the signature, a sane sector and
// cluster size, and the type string of FAT12/16 or FAT32.
func isFAT(b []byte) bool {
	if b[510] != 0x55 || b[511] != 0xAA || (b[0] != 0xEB && b[0] != 0xE9) {
		return false
	}
	bps := binary.LittleEndian.Uint16(b[11:])
	spc := b[13]
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 || spc == 0 || spc&(spc-1) != 0 {
		return false
	}
	return strings.HasPrefix(string(b[54:62]), "FAT1") || string(b[82:90]) == "FAT32   "
}

// checkFAT checks the geometry in a FAT boot sector that Probe took for
// vfat against itself and the device's size. The kernel does the same;
// a FUSE driver may not, and a hostile stick should meet one refusal
// whichever driver mounts it.
func checkFAT(b []byte, size int64) error {
	bps := int64(binary.LittleEndian.Uint16(b[11:]))
	reserved := binary.LittleEndian.Uint16(b[14:])
	fats := b[16]
	total := int64(binary.LittleEndian.Uint16(b[19:]))
	if total == 0 {
		total = int64(binary.LittleEndian.Uint32(b[32:]))
	}
	perFAT := int64(binary.LittleEndian.Uint16(b[22:]))
	fat32 := string(b[82:90]) == "FAT32   "
	if fat32 {
		perFAT = int64(binary.LittleEndian.Uint32(b[36:]))
	}
	switch {
	case reserved == 0:
		return errors.New("no reserved sectors")
	case fats == 0 || fats > 4:
		return fmt.Errorf("%d FATs", fats)
	case total == 0 || size > 0 && total*bps > size:
		return fmt.Errorf("%d sectors of %d bytes on a device of %d bytes", total, bps, size)
	case perFAT == 0 || int64(reserved)+int64(fats)*perFAT >= total:
		return fmt.Errorf("FATs of %d sectors do not fit in %d", perFAT, total)
	case fat32 && binary.LittleEndian.Uint32(b[44:]) < 2:
		return errors.New("no root directory cluster")
	}
	return nil
}

func fatLabel(b []byte) string {
	l := b[43:54]
	if string(b[82:90]) == "FAT32   " {
		l = b[71:82]
	}
	s := strings.TrimRight(cString(l), " ")
	if s == "NO NAME" {
		return ""
	}
	return s
}

// exfatLabel reads the volume label entry from the first cluster of the
// root directory.
func exfatLabel(r io.ReaderAt, b []byte) string {
	heap := binary.LittleEndian.Uint32(b[88:])
	root := binary.LittleEndian.Uint32(b[96:])
	bpsShift, spcShift := uint(b[108]), uint(b[109])
	if bpsShift < 9 || bpsShift > 12 || spcShift > 25-bpsShift || root < 2 {
		return ""
	}
	sector := uint64(heap) + uint64(root-2)<<spcShift // < 2^58: no overflow
	if sector > 1<<(50-bpsShift) {
		return ""
	}
	off := sector << bpsShift
	size := min(uint64(1)<<(bpsShift+spcShift), 64<<10)
	dir := make([]byte, size)
	n, err := r.ReadAt(dir, int64(off))
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	for e := dir[:n-n%32]; len(e) >= 32; e = e[32:] {
		switch e[0] {
		case 0x00: // end of directory
			return ""
		case 0x83:
			count := min(int(e[1]), 11)
			u := make([]uint16, count)
			for i := range u {
				u[i] = binary.LittleEndian.Uint16(e[2+2*i:])
			}
			return printable(string(utf16.Decode(u)))
		}
	}
	return ""
}

// cString is a NUL-terminated label from a superblock, made safe to show
// on a terminal: a stick may carry escape sequences in its label.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return printable(string(b))
}

// printable replaces invalid UTF-8 and control characters with "?".
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
}
