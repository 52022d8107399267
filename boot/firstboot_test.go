package boot

import (
	"context"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

// blankRig is a first boot: one blank 2 GiB virtio disk, nothing on it,
// no store and no configuration yet. Running mke2fs on the disk writes an
// ext4 superblock labelled DRAWBRIDGE.
func blankRig(t *testing.T) *rig {
	r := newRig(t)
	r.files = newFiles(Daemon, Mke2fs)
	sys := fstest.MapFS{
		"class/block/vda/size":         {Data: []byte("4194304\n")},
		"class/block/vda/device/model": {Data: []byte("QEMU HARDDISK   \n")},
	}
	var mu sync.Mutex
	disks := fakeDisks{"vda": nil}
	r.a.HW.Sys = sys
	r.a.HW.Disks = diskFunc(func(name string) ([]byte, bool) {
		mu.Lock()
		defer mu.Unlock()
		b, ok := disks[name]
		return b, ok
	})
	run := r.procs.run
	r.procs.run = func(argv []string) (int, bool) {
		switch argv[0] {
		case Mke2fs:
			mu.Lock()
			disks["vda"] = extDisk(DataLabel)
			mu.Unlock()
			return 0, false
		case Daemon:
			if argv[1] == "init" {
				r.files.touch(StoreMarker, r.a.HW.Clock())
				return 0, false
			}
		}
		return run(argv)
	}
	return r
}

// diskFunc serves disks whose contents change while the test runs.
type diskFunc func(name string) ([]byte, bool)

func (f diskFunc) Open(name string) (io.ReadCloser, error) {
	b, ok := f(name)
	if !ok {
		return nil, fs.ErrNotExist
	}
	return &fakeDisk{b: b}, nil
}

func TestFirstBootFormats(t *testing.T) {
	r := blankRig(t)
	r.term.typed <- "format vda"
	res := results(r.a.Boot(context.Background()))
	for step, want := range map[string]string{"data-disk": "ok", "format": "ok", "mount-data": "ok", "store": "ok", "config": "skipped", "daemon": "skipped"} {
		if res[step] != want {
			t.Errorf("step %s %s, want %s", step, res[step], want)
		}
	}
	lines := r.lines()
	for _, l := range []string{
		"drawbridge: boot: format: first boot: vda (QEMU HARDDISK, 2.0 GiB) is blank and can become the data disk; formatting erases it",
		`drawbridge: boot: format: type "format vda" and enter to format it`,
		"drawbridge: boot: format: formatting /dev/vda: /sbin/mke2fs -q -t ext4 -L DRAWBRIDGE",
		"drawbridge: boot: format: /dev/vda is the data disk (label DRAWBRIDGE",
		"drawbridge: boot: mount-data: /dev/vda on /data",
		"drawbridge: boot: store: no store at /data/store: making one; choose the restore passphrase and type it twice",
		"drawbridge: boot: store: store made at /data/store",
		"drawbridge: the configuration must be imported: this drawbridge cannot import one; put it at /data/drawbridge.toml",
		"drawbridge: the vault daemon is not started: no configuration at /data/drawbridge.toml",
		"drawbridge: ready",
	} {
		if !has(lines, l) {
			t.Errorf("no line %q", l)
		}
	}
	if !r.term.closed {
		t.Error("the console was left open after the question")
	}
	want := []string{"[/bin/drawbridge init --store /data/store]"}
	if !slices.Equal(r.procs.ttys, want) {
		t.Errorf("on the console: %v, want %v", r.procs.ttys, want)
	}
	if t.Failed() {
		t.Logf("console:\n%s", r.out)
	}
}

func TestFirstBootNotConfirmed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		typed []string
		line  string
	}{
		{"enter", []string{""}, "drawbridge: no data disk: vda not formatted"},
		{"wrong, then enter", []string{"yes", "format vdb", ""}, "drawbridge: no data disk: vda not formatted"},
		{"three wrong answers", []string{"yes", "format", "FORMAT VDA"}, `not formatted after 3 answers that were not "format vda"`},
		{"no answer", nil, "drawbridge: no data disk: no answer within 300ms: vda not formatted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := blankRig(t)
			for _, l := range tc.typed {
				r.term.typed <- l
			}
			res := results(r.a.Boot(context.Background()))
			if res["format"] != "skipped" || res["mount-data"] != "skipped" || res["daemon"] != "skipped" {
				t.Errorf("results %v", res)
			}
			lines := r.lines()
			if !has(lines, tc.line) {
				t.Errorf("no line %q:\n%s", tc.line, r.out)
			}
			if len(tc.typed) > 1 && !has(lines, `drawbridge: boot: format: vda not formatted: the answer was not "format vda"`) {
				t.Errorf("a wrong answer was not said:\n%s", r.out)
			}
			for _, argv := range r.procs.argvs() {
				if strings.Contains(argv, Mke2fs) {
					t.Errorf("ran %s", argv)
				}
			}
		})
	}
}

// A disk is offered only when it is the one blank, whole, writable,
// fixed disk and no disk has the label.
func TestFirstBootNeverOffers(t *testing.T) {
	mib := 1 << 20
	for _, tc := range []struct {
		name  string
		sys   fstest.MapFS
		disks fakeDisks
		line  string
	}{
		{"data in the first MiB", fstest.MapFS{"class/block/vda/size": {Data: []byte("4194304\n")}},
			fakeDisks{"vda": append(make([]byte, mib-1), 'x')}, "vda (2.0 GiB) holds data"},
		{"data in the last MiB", fstest.MapFS{"class/block/vda/size": {Data: []byte("4096\n")}},
			fakeDisks{"vda": append(make([]byte, 2*mib-1), 'x')}, "vda (2.0 MiB) holds data"},
		{"another filesystem", fstest.MapFS{"class/block/vda/size": {Data: []byte("4194304\n")}},
			fakeDisks{"vda": extDisk("OTHER")}, "vda (2.0 GiB) holds an ext filesystem"},
		{"two blank disks", fstest.MapFS{"class/block/vda/size": {Data: []byte("4194304\n")}, "class/block/vdb/size": {Data: []byte("4194304\n")}},
			fakeDisks{"vda": nil, "vdb": nil}, "drawbridge: no data disk: 2 blank disks (vda, vdb)"},
		{"a removable stick", fstest.MapFS{"class/block/sda/size": {Data: []byte("4194304\n")}, "class/block/sda/removable": {Data: []byte("1\n")}},
			fakeDisks{"sda": nil}, "format: skipped: no blank disk"},
		{"read-only", fstest.MapFS{"class/block/vda/size": {Data: []byte("4194304\n")}, "class/block/vda/ro": {Data: []byte("1\n")}},
			fakeDisks{"vda": nil}, "format: skipped: no blank disk"},
		{"a partition", fstest.MapFS{"class/block/vda1/size": {Data: []byte("4194304\n")}, "class/block/vda1/partition": {Data: []byte("1\n")}},
			fakeDisks{"vda1": nil}, "format: skipped: no blank disk"},
		{"two data disks", fstest.MapFS{"class/block/vda/size": {Data: []byte("8\n")}, "class/block/vdb/size": {Data: []byte("8\n")}, "class/block/vdc/size": {Data: []byte("8\n")}},
			fakeDisks{"vda": extDisk(DataLabel), "vdb": extDisk(DataLabel), "vdc": nil}, "format: skipped: more than one disk has the data disk's label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := blankRig(t)
			r.a.HW.Sys, r.a.HW.Disks = tc.sys, tc.disks
			r.term.typed <- "format vda"
			res := results(r.a.Boot(context.Background()))
			if res["format"] != "skipped" {
				t.Errorf("format %s", res["format"])
			}
			if !has(r.lines(), tc.line) {
				t.Errorf("no line %q:\n%s", tc.line, r.out)
			}
			if r.term.closed {
				t.Errorf("asked at the console:\n%s", r.out)
			}
			if len(r.procs.argvs()) != 0 {
				t.Errorf("started %v", r.procs.argvs())
			}
		})
	}
}

// A failed mke2fs or drawbridge init is said; nothing goes on as if it
// had worked.
func TestFirstBootFailures(t *testing.T) {
	t.Run("mke2fs fails", func(t *testing.T) {
		r := blankRig(t)
		r.procs.run = func(argv []string) (int, bool) { return 1, false }
		r.term.typed <- "format vda"
		res := results(r.a.Boot(context.Background()))
		if res["format"] != "failed" || res["mount-data"] != "skipped" {
			t.Errorf("results %v", res)
		}
		if !has(r.lines(), "format: failed: /sbin/mke2fs exited with status 1: /dev/vda is not formatted") {
			t.Errorf("console:\n%s", r.out)
		}
	})
	t.Run("init fails", func(t *testing.T) {
		r := newRig(t)
		r.files = newFiles(Daemon, ConfigFile)
		run := r.procs.run
		r.procs.run = func(argv []string) (int, bool) {
			if argv[1] == "init" {
				return 1, false
			}
			return run(argv)
		}
		res := results(r.a.Boot(context.Background()))
		if res["store"] != "failed" {
			t.Errorf("results %v", res)
		}
		if !has(r.lines(), "store: failed: /bin/drawbridge init --store /data/store exited with status 1: no store yet; the next boot tries again") {
			t.Errorf("console:\n%s", r.out)
		}
	})
	t.Run("config import", func(t *testing.T) {
		r := newRig(t)
		r.files = newFiles(Daemon, StoreMarker)
		run := r.procs.run
		r.procs.run = func(argv []string) (int, bool) {
			if argv[1] == "config" {
				if argv[len(argv)-1] == "--help" {
					return 0, false
				}
				return 1, false
			}
			return run(argv)
		}
		res := results(r.a.Boot(context.Background()))
		if res["config"] != "failed" || res["daemon"] != "skipped" {
			t.Errorf("results %v", res)
		}
		want := "[/bin/drawbridge config import --usb --config /data/drawbridge.toml --store /data/store]"
		if !slices.Equal(r.procs.ttys, []string{want}) {
			t.Errorf("on the console: %v, want %s", r.procs.ttys, want)
		}
		if !has(r.lines(), "config: failed: /bin/drawbridge config import --usb --config /data/drawbridge.toml --store /data/store exited with status 1") {
			t.Errorf("console:\n%s", r.out)
		}
	})
}

// PID 1 writes to every console and the screen, asks on all of them, and
// asks for the passphrase where the format question was answered.
func TestFirstBootOnTheScreen(t *testing.T) {
	r := blankRig(t)
	r.term.dev = "/dev/tty1"
	r.term.typed <- "format vda"
	res := results(r.a.Boot(context.Background()))
	if res["consoles"] != "ok" || res["format"] != "ok" || res["store"] != "ok" {
		t.Errorf("results %v\n%s", res, r.out)
	}
	if !has(r.lines(), "drawbridge: boot: consoles: /dev/ttyS0, /dev/tty1") {
		t.Errorf("console:\n%s", r.out)
	}
	if want := []string{"/dev/ttyS0", "/dev/tty1"}; !slices.Equal(r.term.devs, want) {
		t.Errorf("asked on %v, want %v", r.term.devs, want)
	}
	if !strings.Contains(r.screen.String(), `type "format vda" and enter to format it`) ||
		!strings.HasSuffix(r.screen.String(), "drawbridge: ready\n") {
		t.Errorf("the screen shows:\n%s", r.screen)
	}
	if want := []string{"/dev/tty1"}; !slices.Equal(r.procs.ttyDev, want) {
		t.Errorf("drawbridge init on %v, want %v", r.procs.ttyDev, want)
	}
}
