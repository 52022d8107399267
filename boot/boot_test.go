package boot

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"drawbridge/boot/kmod"
)

// testModules is a module index with a few of Modules, one built in, and
// the rest missing.
func testModules() fstest.MapFS {
	return fstest.MapFS{
		kmod.DepFile: {Data: []byte(`kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/ext4/ext4.ko:
kernel/drivers/watchdog/i6300esb.ko:
`)},
		kmod.BuiltinFile: {Data: []byte("kernel/drivers/input/evdev.ko\n")},
	}
}

// extDisk is the start of a disk holding an ext4 filesystem labelled label.
func extDisk(label string) []byte {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint16(b[1024+0x38:], 0xEF53)
	copy(b[1024+0x78:], label)
	return b
}

type fakeDisks map[string][]byte

func (f fakeDisks) Open(name string) (io.ReadCloser, error) {
	b, ok := f[name]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return &fakeDisk{b: b}, nil
}

type rig struct {
	a        *Appliance
	out      *bytes.Buffer
	mounts   *fakeMounts
	modules  *fakeModules
	random   *fakeRandom
	watchdog *fakeWatchdog
	power    *fakePower
	procs    *fakeProcs
	files    *fakeFiles
	term     *fakeTerminal
	screen   *bytes.Buffer // what PID 1 wrote to /dev/tty1
	cmdline  string
	press    chan struct{} // closing it ends the idle input device
}

// newRig is a box with a virtio disk holding the data disk, a watchdog, a
// power button that is never pressed, and a drawbridge that has "run".
func newRig(t *testing.T) *rig {
	r := &rig{
		out:      &bytes.Buffer{},
		mounts:   &fakeMounts{},
		modules:  &fakeModules{dir: testModules()},
		random:   &fakeRandom{after: 2},
		watchdog: &fakeWatchdog{},
		power:    &fakePower{},
		files:    newFiles(Daemon, ConfigFile, StoreMarker),
		term:     &fakeTerminal{typed: make(chan string, 10), dev: "/dev/ttyS0"},
		screen:   &bytes.Buffer{},
		cmdline:  "BOOT_IMAGE=/vmlinuz console=ttyS0,115200n8 quiet",
		press:    make(chan struct{}),
	}
	t.Cleanup(func() { close(r.press) })
	r.procs = &fakeProcs{run: func(argv []string) (int, bool) {
		switch {
		case slices.Equal(argv, []string{Daemon, "run", "--help"}):
			return 0, false
		case argv[len(argv)-1] == "--help":
			return 2, false // not in this drawbridge
		}
		return 0, true
	}}
	clock := &fakeClock{now: time.Date(2025, 11, 27, 10, 0, 0, 0, time.UTC), step: 10 * time.Millisecond}
	sys := fstest.MapFS{
		"class/block/vda/size":  {Data: []byte("2097152\n")},
		"class/block/vda1/size": {Data: []byte("2097000\n")},
	}
	disks := fakeDisks{"vda": make([]byte, 4096), "vda1": extDisk(DataLabel)}
	hw := Hardware{
		Mounts:       r.mounts,
		Modules:      r.modules,
		Random:       r.random,
		RTC:          fakeRTC{t: time.Date(2025, 11, 27, 10, 0, 0, 0, time.UTC)},
		Clock:        clock.Now,
		Sys:          sys,
		Disks:        disks,
		Watchdog:     func() (Watchdog, error) { return r.watchdog, nil },
		PowerButtons: func() ([]io.ReadCloser, error) { return []io.ReadCloser{blockingReader{r.press}}, nil },
		Procs:        r.procs,
		Power:        r.power,
		Stat:         func(name string) (fs.FileInfo, error) { return r.files.Stat(name) },
		MkdirAll:     func(name string, perm fs.FileMode) error { return r.files.MkdirAll(name, perm) },
		Terminal:     func(devs []string) (Terminal, error) { r.term.devs = devs; return r.term, nil },
		OpenConsole: func(dev string) (io.WriteCloser, error) {
			switch dev {
			case "/dev/ttyS0":
				return nopWriteCloser{r.out}, nil
			case "/dev/tty1":
				return nopWriteCloser{r.screen}, nil
			}
			return nil, &fs.PathError{Op: "open", Path: dev, Err: fs.ErrNotExist}
		},
		Cmdline: func() (string, error) { return r.cmdline, nil },
	}
	r.a = New(hw, r.out)
	r.a.Timing = Timing{Entropy: time.Second, DiskSettle: 40 * time.Millisecond, DiskTimeout: time.Second, Watchdog: time.Millisecond,
		Heartbeat: time.Second, Startup: 2 * time.Second, Stop: 50 * time.Millisecond, Confirm: 300 * time.Millisecond, Format: time.Second}
	return r
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

func (r *rig) lines() []string {
	r.a.Console.mu.Lock()
	defer r.a.Console.mu.Unlock()
	return strings.Split(strings.TrimRight(r.out.String(), "\n"), "\n")
}

// results maps each step to "ok", "skipped" or "failed".
func results(rs []Result) map[string]string {
	m := map[string]string{}
	for _, r := range rs {
		var s Skipped
		switch {
		case r.Err == nil:
			m[r.Name] = "ok"
		case errors.As(r.Err, &s):
			m[r.Name] = "skipped"
		default:
			m[r.Name] = "failed"
		}
	}
	return m
}

func has(lines []string, s string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, s) })
}

func TestBootWithDataDisk(t *testing.T) {
	r := newRig(t)
	res := results(r.a.Boot(context.Background()))
	want := map[string]string{
		"mount": "ok", "consoles": "ok", "modules": "ok", "entropy": "ok", "rtc": "ok", "ctrl-alt-del": "ok", "watchdog": "ok",
		"power-button": "ok", "data-disk": "ok", "format": "skipped", "mount-data": "ok", "store": "ok", "config": "ok", "daemon": "ok",
	}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Errorf("results %v\nwant %v\n%s", res, want, r.out)
	}
	lines := r.lines()
	if lines[len(lines)-1] != "drawbridge: ready" {
		t.Errorf("last line %q, want drawbridge: ready", lines[len(lines)-1])
	}
	if has(lines, "no data disk") {
		t.Errorf("says no data disk:\n%s", r.out)
	}
	for _, l := range []string{
		"drawbridge: boot: data-disk: /dev/vda1",
		"drawbridge: boot: mount-data: /dev/vda1 on /data",
		"drawbridge: boot: rtc: 2025-11-27 10:00:00 UTC",
		"drawbridge: boot: modules: warning: module nvme is not in the image",
		"drawbridge: boot: watchdog: i6300ESB timer, reboots a hung box after 30s",
	} {
		if !has(lines, l) {
			t.Errorf("no line %q:\n%s", l, r.out)
		}
	}
	wantMounts := []string{"mount /proc", "mount /sys", "mount /dev", "mount /dev/pts", "mount /run", "mount /tmp", "mount /data"}
	if !slices.Equal(r.mounts.log, wantMounts) {
		t.Errorf("mounts %v, want %v", r.mounts.log, wantMounts)
	}
	wantLoaded := []string{
		"kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_pci.ko",
		"kernel/drivers/block/virtio_blk.ko", "kernel/fs/ext4/ext4.ko", "kernel/drivers/watchdog/i6300esb.ko",
	}
	// Loaded in parallel: the order varies, the set does not.
	if !slices.Equal(sortedLines(r.modules.loaded), sortedLines(wantLoaded)) {
		t.Errorf("loaded %v, want %v", r.modules.loaded, wantLoaded)
	}
	wantProcs := []string{"[/bin/drawbridge run --help]", "[/bin/drawbridge run --config /data/drawbridge.toml]"}
	if got := r.procs.argvs(); !slices.Equal(got, wantProcs) {
		t.Errorf("started %v, want %v", got, wantProcs)
	}
	if !r.power.cad {
		t.Error("ctrl-alt-del still reboots at once")
	}

	// Power off: the daemon gets SIGTERM, /data is unmounted, the watchdog
	// disarmed, then the power goes.
	if err := r.a.Shutdown(context.Background(), Request{Why: "power button"}); err != nil {
		t.Fatal(err)
	}
	if !r.power.powered {
		t.Error("not powered off")
	}
	if !r.watchdog.disarmed {
		t.Error("watchdog left armed")
	}
	if i := slices.Index(r.mounts.log, "umount /data"); i < 0 {
		t.Errorf("/data not unmounted: %v", r.mounts.log)
	}
	if slices.Contains(r.mounts.log, "umount /proc") {
		t.Errorf("unmounted a pseudo filesystem: %v", r.mounts.log)
	}
	lines = r.lines()
	for _, l := range []string{
		"drawbridge: shutting down: power button",
		"drawbridge: shutdown: services: ok",
		"drawbridge: shutdown: sync: ok",
		"drawbridge: shutdown: unmount: /data",
		"drawbridge: shutdown: unmount: ok",
		"drawbridge: shutdown: watchdog: ok",
		"drawbridge: power off",
	} {
		if !has(lines, l) {
			t.Errorf("no line %q:\n%s", l, r.out)
		}
	}
}

func TestBootWithoutDataDisk(t *testing.T) {
	r := newRig(t)
	r.a.HW.Sys = fstest.MapFS{"class/block/vda/size": {Data: []byte("2097152\n")}}
	// Not blank: the last byte of the first MiB is set.
	data := make([]byte, 1<<20)
	data[len(data)-1] = 1
	r.a.HW.Disks = fakeDisks{"vda": data}
	res := results(r.a.Boot(context.Background()))
	if res["data-disk"] != "ok" || res["format"] != "skipped" || res["mount-data"] != "skipped" || res["daemon"] != "skipped" {
		t.Errorf("results %v\n%s", res, r.out)
	}
	lines := r.lines()
	for _, l := range []string{
		"drawbridge: no data disk",
		"drawbridge: boot: data-disk: block devices: vda",
		"drawbridge: boot: format: vda (1.0 GiB) holds data (its first or last MiB is not all zeros): not offered",
		"drawbridge: boot: format: skipped: no blank disk",
		"drawbridge: boot: mount-data: skipped: no data disk",
		"drawbridge: the vault daemon is not started: no data disk",
		"drawbridge: ready",
	} {
		if !has(lines, l) {
			t.Errorf("no line %q:\n%s", l, r.out)
		}
	}
	if got := r.procs.argvs(); len(got) != 0 {
		t.Errorf("started %v, want nothing", got)
	}
	if r.term.closed {
		t.Error("the console was opened to ask about a disk with data on it")
	}
	if err := r.a.Shutdown(context.Background(), Request{Why: "signal SIGTERM"}); err != nil {
		t.Fatal(err)
	}
	if !has(r.lines(), "drawbridge: shutdown: unmount: skipped: no disk mounted") {
		t.Errorf("shutdown:\n%s", r.out)
	}
}

// A drawbridge without the run command (the daemon is not written yet):
// PID 1 says so and does not start it.
func TestBootDaemonWithoutRun(t *testing.T) {
	r := newRig(t)
	r.procs.run = func(argv []string) (int, bool) { return 1, false }
	res := results(r.a.Boot(context.Background()))
	if res["daemon"] != "skipped" {
		t.Errorf("daemon %s\n%s", res["daemon"], r.out)
	}
	if !has(r.lines(), "drawbridge: the vault daemon is not started: this drawbridge has no 'run' command yet") {
		t.Errorf("console:\n%s", r.out)
	}
	if got := r.procs.argvs(); len(got) != 1 {
		t.Errorf("started %v, want only the probe", got)
	}
}

func TestBootFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(r *rig)
		step  string
		want  string // result
		line  string
	}{
		{"no module directory", func(r *rig) { r.modules.dir = nil }, "modules", "failed", "modules: failed: modules of kernel 6.1.0-test-amd64"},
		{"no module loads", func(r *rig) {
			r.modules.dir = fstest.MapFS{kmod.DepFile: {Data: []byte("kernel/fs/ext4/ext4.ko:\n")}}
			r.modules.fail = map[string]error{"kernel/fs/ext4/ext4.ko": errors.New("load module ext4: exec format error")}
		}, "modules", "failed", "modules: warning: load module ext4: exec format error"},
		{"one module fails", func(r *rig) {
			r.modules.fail = map[string]error{"kernel/fs/ext4/ext4.ko": errors.New("load module ext4: exec format error")}
		}, "modules", "ok", "modules: warning: load module ext4: exec format error"},
		{"a module not for this machine", func(r *rig) {
			r.modules.fail = map[string]error{"kernel/drivers/watchdog/i6300esb.ko": fmt.Errorf("load module i6300esb: %w", kmod.ErrNoDevice)}
		}, "modules", "ok", "5 loaded, 1 built in, 1 not for this machine (i6300esb), 27 missing"},
		{"entropy never comes", func(r *rig) { r.random.after = -1; r.a.Timing.Entropy = 100 * time.Millisecond }, "entropy", "failed", "entropy: failed: the kernel's random pool is not ready after 100ms"},
		{"no rtc", func(r *rig) { r.a.HW.RTC = fakeRTC{err: fs.ErrNotExist} }, "rtc", "failed", "rtc: failed: read the real-time clock"},
		{"clock drift", func(r *rig) { r.a.HW.RTC = fakeRTC{t: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)} }, "rtc", "ok", "rtc: warning: the system clock is"},
		{"no watchdog", func(r *rig) {
			r.a.HW.Watchdog = func() (Watchdog, error) { return nil, fs.ErrNotExist }
		}, "watchdog", "skipped", "watchdog: skipped: no hardware watchdog"},
		{"no power button", func(r *rig) {
			r.a.HW.PowerButtons = func() ([]io.ReadCloser, error) { return nil, nil }
		}, "power-button", "skipped", "power-button: skipped: no power button found"},
		{"two data disks", func(r *rig) {
			r.a.HW.Sys = fstest.MapFS{"class/block/sda/size": {Data: []byte("8\n")}, "class/block/sdb/size": {Data: []byte("8\n")}}
			r.a.HW.Disks = fakeDisks{"sda": extDisk(DataLabel), "sdb": extDisk(DataLabel)}
		}, "data-disk", "failed", "drawbridge: no data disk: label DRAWBRIDGE on sda, sdb"},
		{"data disk does not mount", func(r *rig) {
			r.mounts.fail = map[string]error{DataDir: errors.New("invalid argument")}
		}, "mount-data", "failed", "mount-data: failed: mount /dev/vda1 on /data: invalid argument"},
		{"no configuration", func(r *rig) { r.files = newFiles(Daemon, StoreMarker) }, "daemon", "skipped", "not started: no configuration at /data/drawbridge.toml"},
		{"no daemon binary", func(r *rig) { r.files = newFiles() }, "daemon", "failed", "daemon: failed: the vault daemon: stat /bin/drawbridge"},
		{"a step panics", func(r *rig) { r.a.HW.RTC = nil }, "rtc", "failed", "rtc: failed: panic: runtime error: invalid memory address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			tc.setup(r)
			res := results(r.a.Boot(context.Background()))
			if res[tc.step] != tc.want {
				t.Errorf("step %s %s, want %s\n%s", tc.step, res[tc.step], tc.want, r.out)
			}
			lines := r.lines()
			if !has(lines, tc.line) {
				t.Errorf("no line %q:\n%s", tc.line, r.out)
			}
			if lines[len(lines)-1] != "drawbridge: ready" {
				t.Errorf("last line %q", lines[len(lines)-1])
			}
		})
	}
}

func TestPowerButtonRequestsShutdown(t *testing.T) {
	r := newRig(t)
	r.a.HW.PowerButtons = func() ([]io.ReadCloser, error) {
		return []io.ReadCloser{io.NopCloser(bytes.NewReader(powerKeyEvents())), blockingReader{r.press}}, nil
	}
	r.a.Boot(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if req := r.a.Wait(ctx); req != (Request{Why: "power button"}) {
		t.Errorf("Wait = %+v, want power button", req)
	}
}

func TestUnmountBusy(t *testing.T) {
	r := newRig(t)
	r.mounts.mounted = []Mount{{"proc", "/proc", "proc"}, {"/dev/vda1", "/data", "ext4"}, {"/dev/sda1", "/run/export", "vfat"}}
	r.mounts.fail = map[string]error{"umount /data": errors.New("device or resource busy")}
	res := Run(context.Background(), r.a.Console, "shutdown", []Step{{"unmount", r.a.unmountAll}})
	if res[0].Err != nil {
		t.Errorf("unmount: %v", res[0].Err)
	}
	want := []string{"umount /run/export", "ro /data"}
	if !slices.Equal(r.mounts.log, want) {
		t.Errorf("did %v, want %v", r.mounts.log, want)
	}
	if !has(r.lines(), "unmount: warning: /data is busy (device or resource busy): left mounted read-only") {
		t.Errorf("console:\n%s", r.out)
	}
}

func TestDebugShell(t *testing.T) {
	r := newRig(t)
	r.a.DebugShell = "/bin/gosh"
	res := results(r.a.Boot(context.Background()))
	if res["debug-shell"] != "ok" {
		t.Errorf("debug-shell %s\n%s", res["debug-shell"], r.out)
	}
	if !has(r.lines(), "drawbridge: DEBUG IMAGE: shell on console") {
		t.Errorf("console:\n%s", r.out)
	}
	if got := r.procs.argvs(); got[len(got)-1] != "[/bin/gosh]" {
		t.Errorf("started %v", got)
	}
	// The production boot has no such step.
	r.a.DebugShell = ""
	for _, s := range r.a.Steps() {
		if s.Name == "debug-shell" {
			t.Error("debug-shell step without a debug shell")
		}
	}
}
