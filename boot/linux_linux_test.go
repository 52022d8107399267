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

func TestTermInputLines(t *testing.T) {
	in := &termInput{}
	var got []string
	for _, chunk := range []string{"format v", "da\r", "\n", "yes\n\nno\r\r\n", strings.Repeat("x", 1000), "\n", "tail"} {
		in.rest = append(in.rest, chunk...)
		for {
			l, ok := in.line()
			if !ok {
				break
			}
			got = append(got, l)
		}
	}
	want := []string{"format vda", "yes", "", "no", "", strings.Repeat("x", maxLine)}
	if !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
	if string(in.rest) != "tail" {
		t.Errorf("left %q", in.rest)
	}
}
