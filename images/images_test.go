package images

import (
	"encoding/binary"
	"errors"
	"os"
	"sort"
	"strings"
	"testing"
)

func TestVersionLess(t *testing.T) {
	got := []string{"/boot/vmlinuz-6.1.0-27-amd64", "/boot/vmlinuz-6.10.2-amd64", "/boot/vmlinuz-6.1.0-9-amd64", "/boot/vmlinuz-5.10.0-30-amd64"}
	sort.Slice(got, func(i, j int) bool { return versionLess(got[i], got[j]) })
	want := "/boot/vmlinuz-5.10.0-30-amd64 /boot/vmlinuz-6.1.0-9-amd64 /boot/vmlinuz-6.1.0-27-amd64 /boot/vmlinuz-6.10.2-amd64"
	if strings.Join(got, " ") != want {
		t.Errorf("sorted %v", got)
	}
}

func TestMissingNamesPackages(t *testing.T) {
	m := Missing([]Requirement{
		{"/no/such/file", "pkg-a"},
		{"no-such-command-here", "pkg-b"},
		{"/no/such/glob-*", "pkg-a"},
		{"/", "pkg-c"},
	})
	if len(m) != 3 {
		t.Fatalf("missing %v", m)
	}
	err := MissingError(m)
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "install: pkg-a pkg-b;") {
		t.Errorf("MissingError = %v", err)
	}
}

// TestPEChecksum checks the checksum against the one the linker wrote
// into systemd's EFI stub.
func TestPEChecksum(t *testing.T) {
	b, err := os.ReadFile(defaultStub)
	if err != nil {
		t.Skipf("no EFI stub to check against (apt-get install systemd-boot-efi): %v", err)
	}
	off := int(binary.LittleEndian.Uint32(b[0x3c:]))
	at := off + 24 + 64
	want := binary.LittleEndian.Uint32(b[at:])
	if want == 0 {
		t.Skip("the stub has no checksum")
	}
	if got := peChecksum(b, at); got != want {
		t.Errorf("peChecksum = %#x, want %#x", got, want)
	}
}
