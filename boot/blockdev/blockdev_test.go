package blockdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"testing/fstest"

	"drawbridge/vault/fixture"
)

// extImage returns the first 4 KiB of a device holding an ext filesystem
// with the given label.
func extImage(label string) []byte {
	b := make([]byte, 4096)
	sb := b[superblockOffset:]
	binary.LittleEndian.PutUint16(sb[magicOffset:], extMagic)
	copy(sb[uuidOffset:], []byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef})
	copy(sb[labelOffset:labelOffset+labelSize], label)
	return b
}

type fakeDev map[string][]byte

func (f fakeDev) Open(name string) (io.ReadCloser, error) {
	b, ok := f[name]
	if !ok {
		return nil, fs.ErrPermission
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// fakeSys builds a /sys with the given devices and sizes (in sectors).
func fakeSys(sizes map[string]string) fstest.MapFS {
	sys := fstest.MapFS{"class/block": &fstest.MapFile{Mode: fs.ModeDir | 0o755}}
	for name, size := range sizes {
		sys["class/block/"+name+"/size"] = &fstest.MapFile{Data: []byte(size + "\n")}
	}
	return sys
}

func TestFind(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sizes   map[string]string
		devs    fakeDev
		want    string // device name, "" for none
		wantErr error  // errors.Is target, or nil
		anyErr  bool
	}{
		{
			name:  "the labelled partition among others",
			sizes: map[string]string{"vda": "131072", "vda1": "131000", "vdb": "2097152", "vdb1": "2000000"},
			devs: fakeDev{
				"vda":  make([]byte, 4096),
				"vda1": extImage("BOOT"),
				"vdb":  make([]byte, 4096),
				"vdb1": extImage("DRAWBRIDGE"),
			},
			want: "vdb1",
		},
		{
			name:  "a whole disk formatted without a partition table",
			sizes: map[string]string{"sda": "2097152", "nvme0n1": "4194304"},
			devs:  fakeDev{"sda": extImage("DRAWBRIDGE"), "nvme0n1": extImage("OTHER")},
			want:  "sda",
		},
		{
			name:  "no data disk: blank disks and other labels",
			sizes: map[string]string{"vda": "2097152", "vdb": "2097152"},
			devs:  fakeDev{"vda": make([]byte, 4096), "vdb": extImage("DRAWBRIDGEX")},
		},
		{
			name:  "labels are compared exactly",
			sizes: map[string]string{"vda": "2097152"},
			devs:  fakeDev{"vda": extImage("drawbridge")},
		},
		{
			name:  "a full 16-byte label",
			sizes: map[string]string{"vda": "2097152"},
			devs:  fakeDev{"vda": extImage("DRAWBRIDGE-01234")},
		},
		{
			name:  "no block devices at all",
			sizes: map[string]string{},
		},
		{
			name:  "loop, ram and optical devices are not looked at",
			sizes: map[string]string{"loop0": "2048", "ram0": "2048", "sr0": "2048", "zram0": "2048"},
			devs:  fakeDev{"loop0": extImage("DRAWBRIDGE"), "ram0": extImage("DRAWBRIDGE"), "sr0": extImage("DRAWBRIDGE"), "zram0": extImage("DRAWBRIDGE")},
		},
		{
			name:  "empty devices (a card reader without a card) are not opened",
			sizes: map[string]string{"sdb": "0", "sdc": "2097152"},
			devs:  fakeDev{"sdc": extImage("DRAWBRIDGE")},
			want:  "sdc",
		},
		{
			name:  "a device too small to hold a superblock",
			sizes: map[string]string{"vda": "1"},
			devs:  fakeDev{"vda": make([]byte, 512)},
		},
		{
			name:    "two labelled devices: refuse to guess",
			sizes:   map[string]string{"sda1": "2097152", "sdb1": "2097152"},
			devs:    fakeDev{"sda1": extImage("DRAWBRIDGE"), "sdb1": extImage("DRAWBRIDGE")},
			wantErr: ErrAmbiguous,
		},
		{
			name:  "an unreadable device does not hide the data disk",
			sizes: map[string]string{"sda": "2097152", "sdb": "2097152"},
			devs:  fakeDev{"sdb": extImage("DRAWBRIDGE")},
			want:  "sdb",
		},
		{
			name:   "an unreadable device is reported when nothing is found",
			sizes:  map[string]string{"sda": "2097152"},
			devs:   fakeDev{},
			anyErr: true,
		},
		{
			name:   "a garbled size",
			sizes:  map[string]string{"sda": "lots"},
			devs:   fakeDev{"sda": extImage("DRAWBRIDGE")},
			anyErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Scanner{Sys: fakeSys(tc.sizes), Dev: tc.devs}
			d, err := s.Find("DRAWBRIDGE")
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Find: err = %v, want %v", err, tc.wantErr)
				}
			case tc.anyErr:
				if err == nil {
					t.Fatal("Find: no error")
				}
			case err != nil:
				t.Fatalf("Find: %v", err)
			}
			got := ""
			if d != nil {
				got = d.Name
			}
			if got != tc.want {
				t.Fatalf("Find = %q, want %q", got, tc.want)
			}
			if d != nil && (d.Path() != "/dev/"+tc.want || d.UUID != "12345678-9abc-def0-0123-456789abcdef") {
				t.Errorf("device %+v", d)
			}
		})
	}
}

func TestScanNoSysfs(t *testing.T) {
	if _, err := (Scanner{Sys: fstest.MapFS{}, Dev: fakeDev{}}).Scan(); err == nil {
		t.Error("Scan without /sys/class/block: no error")
	}
}

// TestFindRealExt4 reads a filesystem made by the real mke2fs, in a plain
// file standing in for the device node (no loop device needed).
func TestFindRealExt4(t *testing.T) {
	mke2fs, err := exec.LookPath("mke2fs")
	if err != nil {
		fixture.Need(t, "mke2fs not found: apt-get install e2fsprogs")
	}
	dev := t.TempDir()
	img := filepath.Join(dev, "vdc")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(mke2fs, "-q", "-F", "-t", "ext4", "-L", "DRAWBRIDGE", "-U", "0a0b0c0d-1111-2222-3333-444455556666", img).CombinedOutput()
	if err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	s := Scanner{Sys: fakeSys(map[string]string{"vdc": "32768"}), Dev: DevDir(dev)}
	d, err := s.Find("DRAWBRIDGE")
	if err != nil || d == nil {
		t.Fatalf("Find = %v, %v", d, err)
	}
	if d.Name != "vdc" || d.Size != 16<<20 || d.UUID != "0a0b0c0d-1111-2222-3333-444455556666" {
		t.Errorf("device %+v", d)
	}
}

// TestCandidates reads real sparse files: only an all-zero whole disk is
// blank; a byte anywhere in the first or last MiB, a filesystem, a
// partition, a read-only or removable disk rule it out.
func TestCandidates(t *testing.T) {
	dir := t.TempDir()
	disk := func(name string, size int64, at int64, b []byte) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		if b != nil {
			if _, err := f.WriteAt(b, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	const mib = 1 << 20
	disk("vda", 8*mib, 0, nil)
	disk("vdb", 8*mib, 8*mib-1, []byte{1})      // the GPT's backup lives here
	disk("vdc", 8*mib, 510, []byte{0x55, 0xaa}) // an MBR's signature
	disk("vdd", 8*mib, 0, extImage("OTHER"))
	disk("vde", 8*mib, 4*mib, []byte{1}) // the middle is not looked at
	disk("vdf", 3*mib/2, 0, nil)         // smaller than two MiB
	disk("vdg1", 8*mib, 0, nil)
	disk("sda", 8*mib, 0, nil)
	disk("sr0", 8*mib, 0, nil)
	disk("vdh", 8*mib, 0, nil)
	sys := fakeSys(map[string]string{"vda": "16384", "vdb": "16384", "vdc": "16384", "vdd": "16384", "vde": "16384",
		"vdf": "3072", "vdg1": "16384", "sda": "16384", "sr0": "16384", "vdh": "16384"})
	sys["class/block/vda/device/model"] = &fstest.MapFile{Data: []byte("Samsung SSD 870  \n")}
	sys["class/block/vdg1/partition"] = &fstest.MapFile{Data: []byte("1\n")}
	sys["class/block/sda/removable"] = &fstest.MapFile{Data: []byte("1\n")}
	sys["class/block/vdh/ro"] = &fstest.MapFile{Data: []byte("1\n")}
	cs, err := Scanner{Sys: sys, Dev: DevDir(dir)}.Candidates()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range cs {
		got[c.Name] = c.Why
		if c.Blank {
			got[c.Name] = "blank " + c.Model
		}
	}
	want := map[string]string{
		"vda": "blank Samsung SSD 870",
		"vdb": "holds data (its first or last MiB is not all zeros)",
		"vdc": "holds data (its first or last MiB is not all zeros)",
		"vdd": "holds an ext filesystem",
		"vde": "blank ",
		"vdf": "blank ",
	}
	if len(got) != len(want) {
		t.Errorf("candidates %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}

	// A device that cannot be read at an offset is never blank.
	cs, err = Scanner{Sys: fakeSys(map[string]string{"vda": "16"}), Dev: fakeDev{"vda": make([]byte, 8192)}}.Candidates()
	if err == nil || len(cs) != 1 || cs[0].Blank {
		t.Errorf("Candidates = %+v, %v", cs, err)
	}
}
