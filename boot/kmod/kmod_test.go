package kmod

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

// A slice of Debian 12's module index, as depmod writes it.
const (
	testDep = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/usb/common/usb-common.ko:
kernel/drivers/usb/core/usbcore.ko: kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/storage/uas.ko: kernel/drivers/usb/storage/usb-storage.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/loopy/a.ko: kernel/drivers/loopy/b.ko
kernel/drivers/loopy/b.ko: kernel/drivers/loopy/a.ko
kernel/drivers/needs/gone.ko: kernel/drivers/needs/absent.ko
`
	testSoftdep = `# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep virtio_blk pre: nosuchthing post: virtio_ring
`
	testAlias = `# Aliases extracted from modules themselves.
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias crypto-crc32c crc32c_intel
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
alias fs-ext4 ext4
`
	testBuiltin = `kernel/drivers/rtc/rtc-cmos.ko
kernel/drivers/input/serio/i8042.ko
`
)

func testIndex(t *testing.T) *Index {
	t.Helper()
	ix, err := Parse(fstest.MapFS{
		DepFile:     {Data: []byte(testDep)},
		SoftdepFile: {Data: []byte(testSoftdep)},
		AliasFile:   {Data: []byte(testAlias)},
		BuiltinFile: {Data: []byte(testBuiltin)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"usb-storage": "usb_storage",
		"usb_storage": "usb_storage",
		"kernel/drivers/usb/storage/usb-storage.ko":    "usb_storage",
		"kernel/drivers/usb/storage/usb-storage.ko.xz": "usb_storage",
		"crc32c-intel.ko.zst":                          "crc32c_intel",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	ix := testIndex(t)
	for _, tc := range []struct {
		name  string
		names []string
		want  Plan
	}{
		{
			name:  "dependencies come first, back to front of modules.dep",
			names: []string{"virtio_pci"},
			want: Plan{Load: []string{
				"kernel/drivers/virtio/virtio_ring.ko",
				"kernel/drivers/virtio/virtio.ko",
				"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
				"kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
				"kernel/drivers/virtio/virtio_pci.ko",
			}},
		},
		{
			name:  "shared dependencies are loaded once",
			names: []string{"virtio_pci", "virtio-blk"},
			want: Plan{Load: []string{
				"kernel/drivers/virtio/virtio_ring.ko",
				"kernel/drivers/virtio/virtio.ko",
				"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
				"kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
				"kernel/drivers/virtio/virtio_pci.ko",
				"kernel/drivers/block/virtio_blk.ko",
			}, Missing: []string{"virtio_blk: nosuchthing"}},
		},
		{
			name:  "dashes and underscores name the same module",
			names: []string{"usb_storage", "uas"},
			want: Plan{Load: []string{
				"kernel/drivers/usb/common/usb-common.ko",
				"kernel/drivers/usb/core/usbcore.ko",
				"kernel/drivers/scsi/scsi_common.ko",
				"kernel/drivers/scsi/scsi_mod.ko",
				"kernel/drivers/usb/storage/usb-storage.ko",
				"kernel/drivers/usb/storage/uas.ko",
			}},
		},
		{
			name:  "soft dependencies through an alias, before the module and its dependencies",
			names: []string{"ext4"},
			want: Plan{Load: []string{
				"kernel/crypto/crc32c_generic.ko",
				"kernel/arch/x86/crypto/crc32c-intel.ko",
				"kernel/fs/jbd2/jbd2.ko",
				"kernel/fs/mbcache.ko",
				"kernel/lib/crc16.ko",
				"kernel/fs/ext4/ext4.ko",
			}},
		},
		{
			name:  "built in and missing",
			names: []string{"rtc_cmos", "exfat", "i8042"},
			want:  Plan{Builtin: []string{"rtc_cmos", "i8042"}, Missing: []string{"exfat"}},
		},
		{
			name:  "an exact alias names a module",
			names: []string{"fs-ext4"},
			want: Plan{Load: []string{
				"kernel/crypto/crc32c_generic.ko",
				"kernel/arch/x86/crypto/crc32c-intel.ko",
				"kernel/fs/jbd2/jbd2.ko",
				"kernel/fs/mbcache.ko",
				"kernel/lib/crc16.ko",
				"kernel/fs/ext4/ext4.ko",
			}},
		},
		{
			name:  "a dependency cycle ends",
			names: []string{"a"},
			want:  Plan{Load: []string{"kernel/drivers/loopy/b.ko", "kernel/drivers/loopy/a.ko"}},
		},
		{
			name:  "a module whose dependency is absent is still planned",
			names: []string{"gone"},
			want:  Plan{Load: []string{"kernel/drivers/needs/gone.ko"}},
		},
		{
			name: "nothing asked",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ix.Resolve(tc.names...)
			got.Needs = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Resolve(%q)\n got %#v\nwant %#v", tc.names, got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse(fstest.MapFS{}); err == nil {
		t.Error("Parse without modules.dep: no error")
	}
	if _, err := Parse(fstest.MapFS{DepFile: {Data: []byte("no colon here\n")}}); err == nil {
		t.Error("Parse of a malformed modules.dep: no error")
	}
	if _, err := Parse(fstest.MapFS{DepFile: {Data: []byte("\n# comment\n")}}); err != nil {
		t.Errorf("Parse of an empty modules.dep: %v", err)
	}
}

// TestSubset checks that an index written for a subset of the modules
// resolves them to the same plan as the full index.
func TestSubset(t *testing.T) {
	ix := testIndex(t)
	names := []string{"ext4", "uas", "virtio_blk", "rtc_cmos"}
	full := ix.Resolve(names...)
	files := ix.Subset(full.Load)
	fsys := fstest.MapFS{}
	for name, b := range files {
		fsys[name] = &fstest.MapFile{Data: b}
	}
	sub, err := Parse(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if got := sub.Resolve(names...); !reflect.DeepEqual(got.Load, full.Load) || !reflect.DeepEqual(got.Needs, full.Needs) {
		t.Errorf("subset plan\n got %#v\nwant %#v", got, full)
	}
	if strings.Contains(string(files[DepFile]), "virtio_pci") {
		t.Errorf("subset modules.dep names a module outside the subset:\n%s", files[DepFile])
	}
	if strings.Contains(string(files[AliasFile]), "usb:v") {
		t.Errorf("subset modules.alias kept a wildcard alias:\n%s", files[AliasFile])
	}
}

func TestNeeds(t *testing.T) {
	p := testIndex(t).Resolve("ext4", "uas", "a")
	want := map[string][]string{
		"kernel/fs/jbd2/jbd2.ko": {"kernel/crypto/crc32c_generic.ko", "kernel/arch/x86/crypto/crc32c-intel.ko"},
		"kernel/fs/ext4/ext4.ko": {
			"kernel/crypto/crc32c_generic.ko", "kernel/arch/x86/crypto/crc32c-intel.ko",
			"kernel/fs/jbd2/jbd2.ko", "kernel/fs/mbcache.ko", "kernel/lib/crc16.ko",
		},
		"kernel/drivers/scsi/scsi_mod.ko":    {"kernel/drivers/scsi/scsi_common.ko"},
		"kernel/drivers/usb/core/usbcore.ko": {"kernel/drivers/usb/common/usb-common.ko"},
		"kernel/drivers/usb/storage/usb-storage.ko": {
			"kernel/drivers/usb/common/usb-common.ko", "kernel/drivers/usb/core/usbcore.ko",
			"kernel/drivers/scsi/scsi_common.ko", "kernel/drivers/scsi/scsi_mod.ko",
		},
		"kernel/drivers/usb/storage/uas.ko": {
			"kernel/drivers/usb/common/usb-common.ko", "kernel/drivers/usb/core/usbcore.ko",
			"kernel/drivers/scsi/scsi_common.ko", "kernel/drivers/scsi/scsi_mod.ko",
			"kernel/drivers/usb/storage/usb-storage.ko",
		},
		// The cycle: a needs b, and b (loaded first) needs nothing.
		"kernel/drivers/loopy/a.ko": {"kernel/drivers/loopy/b.ko"},
	}
	if !reflect.DeepEqual(p.Needs, want) {
		t.Errorf("Needs\n got %v\nwant %v", p.Needs, want)
	}
}

// recordingLoader records the order of loads and fails the listed ones.
type recordingLoader struct {
	mu    sync.Mutex
	order []string
	fail  map[string]error
	busy  int // loads in progress now
	most  int // most loads in progress at once
}

func (l *recordingLoader) Load(file string) error {
	l.mu.Lock()
	l.busy++
	l.most = max(l.most, l.busy)
	l.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.busy--
	l.order = append(l.order, file)
	return l.fail[Name(file)]
}

func TestLoadAll(t *testing.T) {
	p := Plan{Load: []string{"a.ko", "b.ko", "c.ko", "d.ko", "e.ko"}}
	r := LoadAll(&recordingLoader{fail: map[string]error{"b": errors.New("load module b: exec format error"), "c": ErrLoaded, "e": ErrNoDevice}}, p, 3)
	if !reflect.DeepEqual(r.Loaded, []string{"a", "d"}) || !reflect.DeepEqual(r.Already, []string{"c"}) ||
		!reflect.DeepEqual(r.NoDevice, []string{"e"}) || len(r.Failed) != 1 {
		t.Errorf("LoadAll = %+v", r)
	}
}

// TestLoadAllOrder loads a real plan in parallel and checks that every
// module was loaded after the modules it needs, and that independent
// modules did load at the same time.
func TestLoadAllOrder(t *testing.T) {
	ix := testIndex(t)
	p := ix.Resolve("ext4", "uas", "virtio_blk", "virtio_pci", "a")
	for _, workers := range []int{1, 2, 8} {
		l := &recordingLoader{fail: map[string]error{"scsi_mod": errors.New("load module scsi_mod: exec format error")}}
		r := LoadAll(l, p, workers)
		if len(l.order) != len(p.Load) {
			t.Fatalf("%d workers: loaded %d of %d", workers, len(l.order), len(p.Load))
		}
		pos := map[string]int{}
		for i, f := range l.order {
			pos[f] = i
		}
		for f, needs := range p.Needs {
			for _, n := range needs {
				if pos[n] > pos[f] {
					t.Errorf("%d workers: %s loaded before %s, which it needs", workers, f, n)
				}
			}
		}
		if len(r.Failed) != 1 {
			t.Errorf("%d workers: failed %v", workers, r.Failed)
		}
		if workers > 1 && l.most < 2 {
			t.Errorf("%d workers: never more than one load at a time", workers)
		}
	}
}
