package images

import (
	"encoding/binary"
	"errors"
	"os"
	"sort"
	"strings"
	"testing"

	"drawbridge/vault/fixture"
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
		fixture.Need(t, "no EFI stub to check against (apt-get install systemd-boot-efi): "+err.Error())
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

// TestExternalRecords follows the tools' DT_NEEDED entries on this
// machine: each program, its libraries and the loader, and nothing twice.
func TestExternalRecords(t *testing.T) {
	if m := Missing(ExternalTools); len(m) > 0 {
		fixture.Need(t, MissingError(m).Error())
	}
	recs, err := externalRecords(ExternalTools)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.Name] {
			t.Errorf("%s twice", r.Name)
		}
		seen[r.Name] = true
		names = append(names, r.Name)
	}
	for _, want := range []string{"sbin", "sbin/mke2fs", "sbin/mkfs.vfat", "sbin/mkfs.exfat", "lib64/ld-linux-x86-64.so.2",
		"lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libext2fs.so.2", "lib/x86_64-linux-gnu/libcom_err.so.2"} {
		if !seen[want] {
			t.Errorf("no %s in %v", want, names)
		}
	}
	if seen["lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"] {
		t.Error("the loader is in twice")
	}
	again, err := externalRecords(ExternalTools)
	if err != nil {
		t.Fatal(err)
	}
	for i := range again {
		if again[i].Name != recs[i].Name {
			t.Fatalf("two runs differ at %d: %s, %s", i, again[i].Name, recs[i].Name)
		}
	}
	if _, err := externalRecords([]Requirement{{"no-such-mkfs", "pkg-x"}}); !errors.Is(err, ErrMissing) {
		t.Errorf("a missing tool: %v", err)
	}
}
