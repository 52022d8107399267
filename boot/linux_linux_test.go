package boot

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMounts(t *testing.T) {
	got, err := parseMounts(strings.NewReader(`rootfs / rootfs rw 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/vdb /data ext4 rw,nosuid,nodev,noexec,noatime 0 0
/dev/sda1 /run/export\040drive vfat rw 0 0
short line
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{"rootfs", "/", "rootfs"},
		{"proc", "/proc", "proc"},
		{"/dev/vdb", "/data", "ext4"},
		{"/dev/sda1", "/run/export drive", "vfat"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseMounts = %v, want %v", got, want)
	}
}
