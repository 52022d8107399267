// Package boot is the appliance's PID 1 (DESIGN.md §6): the boot as a list
// of named steps — mount the pseudo filesystems, write from then on to
// every console= terminal and the screen (tty1), load the kernel modules in
// the image, wait for the kernel's random pool, read the RTC, arm the
// watchdog, watch the power button, find the data disk (on first boot:
// offer a blank disk for formatting, at the console), mount it, make the
// store and import the configuration if they are missing, start the vault
// daemon with the consoles — each reporting one line on the console, then
// "drawbridge: ready". After that PID 1 writes on the console only when
// something goes wrong (the daemon's full-screen console owns it), reaps
// children, keeps the daemon running, pets the watchdog while the daemon's
// heartbeat is fresh, and waits for a request:
//
//   - power off: the power button, ctrl-alt-del (SIGINT), SIGTERM, SIGUSR2,
//     SIGPWR;
//   - reboot: SIGUSR1 (the console sends it).
//
// Either runs the shutdown steps — stop the services, sync, unmount,
// disarm the watchdog — then powers off or reboots.
//
// The kernel command line may carry (see Cmdline):
//
//	drawbridge.window_now=DURATION      the daemon opens a window at once (make run)
//	drawbridge.watchdog_timeout=DURATION the hardware watchdog's timeout
//	drawbridge.fault=ACTION-daemon-after:DURATION[,...]
//	                                    FOR TESTS ONLY: SIGKILL (kill) or SIGSTOP
//	                                    (stop) the daemon that long after it starts
//
// Invariants:
//   - A step that fails or panics is reported and the boot goes on: a box
//     that reaches ready can at least tell the person at it what is wrong.
//   - A disk is formatted only when it is blank (its first and last MiB are
//     zeros), it is the only blank disk, no disk carries the data disk's
//     label, and the person at the console typed "format NAME".
//   - Nothing here listens on a network socket or brings a link up.
//   - Every hardware access goes through the interfaces of Hardware, so the
//     steps run in tests against fakes; Linux returns the real ones.
package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"strings"
	"sync"
	"time"

	"drawbridge/boot/blockdev"
	"drawbridge/boot/kmod"

	"drawbridge/vault/units"
)

// Where things are on the appliance.
const (
	// DataLabel is the filesystem label of the vault's data disk.
	DataLabel = "DRAWBRIDGE"
	// DataDir is where the data disk is mounted.
	DataDir = "/data"
	// ConfigFile is the daemon's configuration, on the data disk.
	ConfigFile = DataDir + "/drawbridge.toml"
	// StoreDir is the vault's store, on the data disk; StoreMarker is the
	// file every store has.
	StoreDir    = DataDir + "/store"
	StoreMarker = StoreDir + "/store.json"
	// Daemon is the vault's binary.
	Daemon = "/bin/drawbridge"
	// Mke2fs formats the data disk.
	Mke2fs = "/sbin/mke2fs"
	// HeartbeatFile is touched by the daemon while it is alive.
	HeartbeatFile = "/run/drawbridge/heartbeat"
	// ConsoleTTY is the screen and keyboard of the box, given to the
	// daemon's console besides the kernel's console= devices.
	ConsoleTTY = "/dev/tty1"
	// ModulesDir holds a directory per kernel release with its modules.
	ModulesDir = "/lib/modules"
)

// Modules are the kernel modules PID 1 loads, in this order (each after
// what it needs), and that the image builder puts in the initramfs. A
// module missing from the image is a warning at boot, not a failure.
var Modules = []string{
	// Buses and disks: virtio, SATA, NVMe, SCSI disks (also behind USB).
	"virtio_pci", "virtio_blk", "ahci", "nvme", "sd_mod",
	// USB: the host controllers, sticks and drives, keyboards for the console.
	"xhci_pci", "xhci_hcd", "ehci_pci", "usb_storage", "uas", "usbhid", "hid_generic",
	// Filesystems: ext4 on the data disk (crc32c for its metadata
	// checksums: the kernel would ask modprobe for it, and there is none),
	// FAT and exFAT on export drives with the character sets they use
	// (Debian's FAT default is ascii).
	"crc32c_intel", "crc32c_generic", "ext4", "vfat", "exfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8",
	// Network: virtio and Intel 1 and 10 gigabit.
	"virtio_net", "e1000e", "igb", "ixgbe",
	// Firewall: nftables with connection tracking (hw/firewall matches on
	// ct state; the kernel would ask modprobe for nft_ct).
	"nf_tables", "nf_conntrack", "nft_ct",
	// Entropy from a virtual machine's host, the watchdog, the power button.
	"virtio_rng", "i6300esb", "button", "evdev",
}

// Timing bounds the waits of the boot and the shutdown.
type Timing struct {
	// Entropy bounds the wait for the kernel's random pool.
	Entropy time.Duration
	// DiskSettle is how long the list of block devices must stay the same
	// before PID 1 concludes there is no data disk; DiskTimeout bounds the
	// whole wait. Disks behind AHCI and USB appear some time after their
	// driver loads (usb-storage waits a second before it scans a stick).
	DiskSettle, DiskTimeout time.Duration
	// Watchdog is how often the watchdog is petted; Heartbeat is how old
	// the daemon's heartbeat may get before PID 1 stops petting it, and
	// Startup how long a daemon may take to its first heartbeat (opening
	// a large store).
	Watchdog, Heartbeat, Startup time.Duration
	// Stop is how long a service has to exit after SIGTERM.
	Stop time.Duration
	// Confirm bounds the wait for an answer at the console; no answer is
	// "no".
	Confirm time.Duration
	// Format bounds mke2fs.
	Format time.Duration
}

// DefaultTiming is the appliance's timing.
var DefaultTiming = Timing{
	Entropy:     30 * time.Second,
	DiskSettle:  2 * time.Second,
	DiskTimeout: 10 * time.Second,
	Watchdog:    10 * time.Second,
	Heartbeat:   30 * time.Second,
	Startup:     10 * time.Minute,
	Stop:        10 * time.Second,
	Confirm:     10 * time.Minute,
	Format:      30 * time.Minute,
}

// Hardware is the kernel and the devices as PID 1 uses them.
type Hardware struct {
	Mounts  Mounter
	Modules ModuleSource
	Random  Random
	RTC     RTC
	Clock   func() time.Time
	// Sys is the sysfs tree; Disks opens block devices by kernel name.
	Sys   fs.FS
	Disks blockdev.Opener
	// Watchdog opens the hardware watchdog; an error wrapping
	// fs.ErrNotExist means there is none.
	Watchdog func() (Watchdog, error)
	// PowerButtons opens the input devices that have a power key.
	PowerButtons func() ([]io.ReadCloser, error)
	Procs        Starter
	Power        Power
	// Stat reports whether a file exists (the daemon, its configuration)
	// and when it was last written (the heartbeat).
	Stat     func(name string) (fs.FileInfo, error)
	MkdirAll func(name string, perm fs.FileMode) error
	// OpenConsole opens a terminal for PID 1's lines.
	OpenConsole func(dev string) (io.WriteCloser, error)
	// Terminal opens the keyboards of the given terminals for PID 1's
	// questions: an answer may come from any of them.
	Terminal func(devs []string) (Terminal, error)
	// Cmdline is the kernel command line.
	Cmdline func() (string, error)
	// KernelLogLevel sets the level below which the kernel's messages
	// reach the console.
	KernelLogLevel func(level int) error
}

// Terminal is the console as PID 1 reads answers from it: whole lines.
type Terminal interface {
	// ReadLine returns the next line typed on any of the terminals,
	// without its line ending, and the terminal it was typed on; an error
	// wrapping os.ErrDeadlineExceeded when none came within timeout.
	ReadLine(timeout time.Duration) (line, dev string, err error)
	Close() error
}

// Mounter mounts and unmounts filesystems.
type Mounter interface {
	// Mount mounts source on target (creating target if needed).
	Mount(source, target, fstype string, flags uintptr, data string) error
	Unmount(target string) error
	// Remount makes a mounted filesystem read-only.
	RemountReadOnly(target string) error
	// Mounts lists what is mounted, in mount order.
	Mounts() ([]Mount, error)
}

// Mount is one mounted filesystem.
type Mount struct {
	Source, Target, FSType string
}

// ModuleSource finds the module directory of the running kernel and loads
// modules from it.
type ModuleSource interface {
	// Release is the running kernel's release ("6.1.0-27-amd64").
	Release() string
	// Dir is the module directory of that release.
	Dir() (fs.FS, error)
	kmod.Loader
}

// Random is the kernel's random number generator.
type Random interface {
	// Ready reports, without blocking, whether the kernel's random pool
	// is initialized.
	Ready() (bool, error)
}

// RTC is the battery-backed real-time clock.
type RTC interface {
	Read() (time.Time, error)
}

// Watchdog is an armed hardware watchdog.
type Watchdog interface {
	Identity() string
	Timeout() (time.Duration, error)
	SetTimeout(time.Duration) error
	// Pet tells the watchdog the system is alive.
	Pet() error
	// Disarm stops the watchdog (the "magic close") for a clean power-off.
	Disarm() error
}

// Power is the kernel's reboot interface and the page cache.
type Power interface {
	// CtrlAltDelSignals makes ctrl-alt-del send SIGINT to PID 1 instead
	// of rebooting at once.
	CtrlAltDelSignals() error
	Sync()
	PowerOff() error
	Reboot() error
}

// Appliance is PID 1's state: the hardware, what the boot found, the
// services it started.
type Appliance struct {
	HW      Hardware
	Console *Console
	// DebugShell, when set, is a shell started on the console after the
	// boot; only the debug image sets it.
	DebugShell string
	Timing     Timing

	requests chan Request

	mu        sync.Mutex
	cmdline   *Cmdline
	disk      *blockdev.Device // the data disk, nil when none
	ambiguous bool             // more than one disk has the data disk's label
	mounted   bool             // the data disk is mounted on DataDir
	watchdog  Watchdog
	stopPet   chan struct{}
	petDone   chan struct{}
	services  []*Service
	daemon    *Service // also in services; nil when not started
	heartbeat string   // the daemon's heartbeat file; "" when it has none
	// answeredOn is the terminal the person answered the format question
	// on: the store's passphrase is asked there too.
	answeredOn string
}

// Request is a request to go down.
type Request struct {
	Why    string // said on the console
	Reboot bool   // reboot rather than power off
}

// New returns PID 1's state for the given hardware, writing to console.
func New(hw Hardware, console io.Writer) *Appliance {
	return &Appliance{HW: hw, Console: NewConsole(console), Timing: DefaultTiming, requests: make(chan Request, 4)}
}

// Steps are the boot, in order.
func (a *Appliance) Steps() []Step {
	steps := []Step{
		{"mount", a.mountPseudo},
		{"consoles", a.openConsoles},
		{"modules", a.loadModules},
		{"entropy", a.waitEntropy},
		{"rtc", a.readRTC},
		{"ctrl-alt-del", a.ctrlAltDel},
		{"watchdog", a.startWatchdog},
		{"power-button", a.watchPowerButton},
		{"data-disk", a.findDataDisk},
		{"format", a.formatBlankDisk},
		{"mount-data", a.mountData},
		{"store", a.makeStore},
		{"config", a.importConfig},
		{"daemon", a.startDaemon},
	}
	if a.DebugShell != "" {
		steps = append(steps, Step{"debug-shell", a.startDebugShell})
	}
	return steps
}

// RequestShutdown asks PID 1 to power off; why is said on the console.
func (a *Appliance) RequestShutdown(why string) { a.request(Request{Why: why}) }

// RequestReboot asks PID 1 to reboot.
func (a *Appliance) RequestReboot(why string) { a.request(Request{Why: why, Reboot: true}) }

func (a *Appliance) request(r Request) {
	select {
	case a.requests <- r:
	default: // enough are already pending
	}
}

// QuietLogLevel is the kernel's console log level after ready: errors and
// worse only, so that the kernel does not write over the full-screen
// console.
const QuietLogLevel = 4

// Boot runs the boot steps and announces that the box is ready. From then
// on the kernel writes only its errors to the console.
func (a *Appliance) Boot(ctx context.Context) []Result {
	r := Run(ctx, a.Console, "boot", a.Steps())
	a.Console.Printf("drawbridge: ready")
	if a.HW.KernelLogLevel != nil {
		if err := a.HW.KernelLogLevel(QuietLogLevel); err != nil {
			a.Console.Printf("drawbridge: kernel log level: %v", err)
		}
	}
	return r
}

// Wait blocks until a power-off or a reboot is requested, or ctx is done.
func (a *Appliance) Wait(ctx context.Context) Request {
	select {
	case r := <-a.requests:
		return r
	case <-ctx.Done():
		return Request{Why: ctx.Err().Error()}
	}
}

// pseudoMounts are the kernel's filesystems PID 1 mounts first.
var pseudoMounts = []struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}{
	{"proc", "/proc", "proc", msNoSuid | msNoDev | msNoExec, ""},
	{"sysfs", "/sys", "sysfs", msNoSuid | msNoDev | msNoExec, ""},
	{"devtmpfs", "/dev", "devtmpfs", msNoSuid | msNoExec, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", msNoSuid | msNoExec, "mode=0620,ptmxmode=0666"},
	{"tmpfs", "/run", "tmpfs", msNoSuid | msNoDev, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", msNoSuid | msNoDev, "mode=1777"},
}

// Mount flags (as in <sys/mount.h>), spelled here so that fakes and tests
// need no build constraints.
const (
	msRdOnly  = 0x1
	msNoSuid  = 0x2
	msNoDev   = 0x4
	msNoExec  = 0x8
	msNoAtime = 0x400
)

// ErrBusy is wrapped by Mounter.Mount when something is already mounted
// there (the kernel mounted devtmpfs itself, or PID 1 was restarted).
var ErrBusy = errors.New("already mounted")

func (a *Appliance) mountPseudo(ctx context.Context, log *Log) error {
	var errs []error
	for _, m := range pseudoMounts {
		err := a.HW.Mounts.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		if errors.Is(err, ErrBusy) {
			log.Printf("%s was already mounted", m.target)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

// openConsoles makes PID 1 write to every console of the kernel command
// line and to the screen, not only to /dev/console (the last console=): a
// person may be at the screen or on the serial line.
func (a *Appliance) openConsoles(ctx context.Context, log *Log) error {
	if a.HW.OpenConsole == nil {
		return Skipped("/dev/console only")
	}
	var ws []io.Writer
	var names []string
	var errs []string
	for _, dev := range a.consoles() {
		w, err := a.HW.OpenConsole(dev)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		ws = append(ws, w)
		names = append(names, dev)
	}
	if len(ws) == 0 {
		return fmt.Errorf("no terminal opens (%s): writing to /dev/console only", strings.Join(errs, "; "))
	}
	for _, e := range errs {
		log.Warnf("%s", e)
	}
	a.Console.SetOutputs(ws...)
	log.Printf("%s", strings.Join(names, ", "))
	return nil
}

func (a *Appliance) loadModules(ctx context.Context, log *Log) error {
	release := a.HW.Modules.Release()
	dir, err := a.HW.Modules.Dir()
	if err != nil {
		return fmt.Errorf("modules of kernel %s: %w", release, err)
	}
	ix, err := kmod.Parse(dir)
	if err != nil {
		return fmt.Errorf("modules of kernel %s: %w", release, err)
	}
	plan := ix.Resolve(Modules...)
	for _, m := range plan.Missing {
		log.Warnf("module %s is not in the image", m)
	}
	r := kmod.LoadAll(a.HW.Modules, plan, max(2, runtime.NumCPU()))
	for _, err := range r.Failed {
		log.Warnf("%v", err)
	}
	msg := fmt.Sprintf("kernel %s: %d loaded, %d built in", release, len(r.Loaded)+len(r.Already), len(plan.Builtin))
	if len(r.NoDevice) > 0 {
		msg += fmt.Sprintf(", %d not for this machine (%s)", len(r.NoDevice), strings.Join(r.NoDevice, ", "))
	}
	if len(plan.Missing) > 0 {
		msg += fmt.Sprintf(", %d missing", len(plan.Missing))
	}
	if len(r.Failed) > 0 {
		msg += fmt.Sprintf(", %d would not load", len(r.Failed))
	}
	log.Printf("%s", msg)
	if len(plan.Load) > 0 && len(r.Failed) == len(plan.Load) {
		return fmt.Errorf("no module would load (%d tried)", len(plan.Load))
	}
	return nil
}

func (a *Appliance) waitEntropy(ctx context.Context, log *Log) error {
	start := a.HW.Clock()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.NewTimer(a.Timing.Entropy)
	defer timeout.Stop()
	for {
		ok, err := a.HW.Random.Ready()
		if err != nil {
			return fmt.Errorf("getrandom: %w", err)
		}
		if ok {
			log.Printf("random pool ready after %v", a.HW.Clock().Sub(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-tick.C:
		case <-timeout.C:
			return fmt.Errorf("the kernel's random pool is not ready after %v: keys cannot be made yet", a.Timing.Entropy)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (a *Appliance) readRTC(ctx context.Context, log *Log) error {
	t, err := a.HW.RTC.Read()
	if err != nil {
		return fmt.Errorf("read the real-time clock: %w", err)
	}
	log.Printf("%s", t.UTC().Format("2006-01-02 15:04:05 UTC"))
	if d := a.HW.Clock().Sub(t); d > 2*time.Second || d < -2*time.Second {
		log.Warnf("the system clock is %v away from the real-time clock", d.Round(time.Second))
	}
	return nil
}

func (a *Appliance) ctrlAltDel(ctx context.Context, log *Log) error {
	return a.HW.Power.CtrlAltDelSignals()
}

func (a *Appliance) startWatchdog(ctx context.Context, log *Log) error {
	wd, err := a.HW.Watchdog()
	if errors.Is(err, fs.ErrNotExist) {
		return Skipped("no hardware watchdog")
	}
	if err != nil {
		return err
	}
	if d := a.Cmdline().WatchdogTimeout; d > 0 {
		if err := wd.SetTimeout(d); err != nil {
			log.Warnf("set the timeout to %v: %v", d, err)
		}
	}
	if err := wd.Pet(); err != nil {
		wd.Disarm()
		return fmt.Errorf("pet %s: %w", wd.Identity(), err)
	}
	every := a.Timing.Watchdog
	if t, err := wd.Timeout(); err == nil {
		// A watchdog with a short timeout is petted thrice within it.
		if t > 0 && t/3 < every {
			every = t / 3
		}
		log.Printf("%s, reboots a hung box after %v; petted every %v while the daemon is alive", wd.Identity(), t, every)
	} else {
		log.Printf("%s, petted every %v while the daemon is alive", wd.Identity(), every)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	a.mu.Lock()
	a.watchdog, a.stopPet, a.petDone = wd, stop, done
	a.mu.Unlock()
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		failing, hung := false, false
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			alive, age := a.daemonAlive()
			if !alive {
				if !hung {
					a.Console.Printf("drawbridge: watchdog: no heartbeat from the daemon for %v: it seems hung; no longer petting the watchdog, which resets the box", age.Round(time.Second))
					hung = true
				}
				continue
			}
			if hung {
				a.Console.Printf("drawbridge: watchdog: the daemon's heartbeat is fresh again; petting")
				hung = false
			}
			if err := wd.Pet(); err != nil && !failing {
				a.Console.Printf("drawbridge: watchdog: pet: %v", err)
				failing = true
			} else if err == nil {
				failing = false
			}
		}
	}()
	return nil
}

func (a *Appliance) watchPowerButton(ctx context.Context, log *Log) error {
	devs, err := a.HW.PowerButtons()
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		return Skipped("no power button found")
	}
	for _, d := range devs {
		go func() {
			defer d.Close()
			if err := WaitPowerKey(d); err != nil {
				a.Console.Printf("drawbridge: power-button: %v", err)
				return
			}
			a.RequestShutdown("power button")
		}()
	}
	log.Printf("%d input device(s) with a power key", len(devs))
	return nil
}

func (a *Appliance) findDataDisk(ctx context.Context, log *Log) error {
	s := blockdev.Scanner{Sys: a.HW.Sys, Dev: a.HW.Disks}
	start := a.HW.Clock()
	var last string
	lastChange := start
	for {
		d, err := s.Find(DataLabel)
		if errors.Is(err, blockdev.ErrAmbiguous) {
			a.mu.Lock()
			a.ambiguous = true
			a.mu.Unlock()
			a.Console.Printf("drawbridge: no data disk: %v", err)
			return err
		}
		if d != nil {
			a.mu.Lock()
			a.disk = d
			a.mu.Unlock()
			log.Printf("%s (%s, label %s, uuid %s)", d.Path(), units.Bytes(d.Size), d.Label, d.UUID)
			return nil
		}
		devs, _ := s.Scan()
		now := a.HW.Clock()
		if names := deviceNames(devs); names != last {
			last, lastChange = names, now
		}
		if now.Sub(lastChange) >= a.Timing.DiskSettle || now.Sub(start) >= a.Timing.DiskTimeout {
			if err != nil {
				log.Warnf("%v", err)
			}
			if last == "" {
				last = "none"
			}
			log.Printf("block devices: %s", last)
			a.Console.Printf("drawbridge: no data disk: no disk holds an ext4 filesystem labelled %s", DataLabel)
			return nil
		}
		select {
		case <-time.After(min(250*time.Millisecond, a.Timing.DiskSettle/4)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func deviceNames(devs []blockdev.Device) string {
	var names []string
	for _, d := range devs {
		names = append(names, d.Name)
	}
	return strings.Join(names, " ")
}

func (a *Appliance) mountData(ctx context.Context, log *Log) error {
	a.mu.Lock()
	d := a.disk
	a.mu.Unlock()
	if d == nil {
		return Skipped("no data disk")
	}
	if err := a.HW.Mounts.Mount(d.Path(), DataDir, "ext4", msNoSuid|msNoDev|msNoExec|msNoAtime, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", d.Path(), DataDir, err)
	}
	a.mu.Lock()
	a.mounted = true
	a.mu.Unlock()
	log.Printf("%s on %s", d.Path(), DataDir)
	return nil
}

func (a *Appliance) startDebugShell(ctx context.Context, log *Log) error {
	a.Console.Printf("drawbridge: DEBUG IMAGE: shell on console")
	s := &Service{
		Name:    "debug-shell",
		Cmd:     Cmd{Argv: []string{a.DebugShell}, TTY: true},
		Procs:   a.HW.Procs,
		Console: a.Console,
	}
	if err := s.Start(); err != nil {
		return err
	}
	a.mu.Lock()
	a.services = append(a.services, s)
	a.mu.Unlock()
	return nil
}

// ShutdownSteps are the way down, in order.
func (a *Appliance) ShutdownSteps() []Step {
	return []Step{
		{"services", a.stopServices},
		{"sync", func(context.Context, *Log) error { a.HW.Power.Sync(); return nil }},
		{"unmount", a.unmountAll},
		{"watchdog", a.disarmWatchdog},
	}
}

// Shutdown runs the shutdown steps, then powers off or reboots as r asks.
// It returns only if that fails.
func (a *Appliance) Shutdown(ctx context.Context, r Request) error {
	if r.Reboot {
		a.Console.Printf("drawbridge: rebooting: %s", r.Why)
	} else {
		a.Console.Printf("drawbridge: shutting down: %s", r.Why)
	}
	Run(ctx, a.Console, "shutdown", a.ShutdownSteps())
	if r.Reboot {
		a.Console.Printf("drawbridge: reboot")
		return a.HW.Power.Reboot()
	}
	a.Console.Printf("drawbridge: power off")
	return a.HW.Power.PowerOff()
}

func (a *Appliance) stopServices(ctx context.Context, log *Log) error {
	a.mu.Lock()
	services := a.services
	a.services, a.daemon = nil, nil
	a.mu.Unlock()
	if len(services) == 0 {
		return Skipped("none running")
	}
	var wg sync.WaitGroup
	errs := make([]error, len(services))
	for i, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Stop(a.Timing.Stop)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// unmountAll unmounts every filesystem on a block device, the last mounted
// first; one that will not unmount (still busy) is made read-only so that
// nothing more is written to it.
func (a *Appliance) unmountAll(ctx context.Context, log *Log) error {
	mounts, err := a.HW.Mounts.Mounts()
	if err != nil {
		return err
	}
	var targets []string
	for _, m := range mounts {
		if strings.HasPrefix(m.Source, "/dev/") {
			targets = append(targets, m.Target)
		}
	}
	if len(targets) == 0 {
		return Skipped("no disk mounted")
	}
	var errs []error
	for i := len(targets) - 1; i >= 0; i-- {
		t := targets[i]
		if err := a.HW.Mounts.Unmount(t); err != nil {
			if rerr := a.HW.Mounts.RemountReadOnly(t); rerr != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w; read-only: %w", t, err, rerr))
				continue
			}
			log.Warnf("%s is busy (%v): left mounted read-only", t, err)
			continue
		}
		log.Printf("%s", t)
	}
	a.HW.Power.Sync()
	return errors.Join(errs...)
}

func (a *Appliance) disarmWatchdog(ctx context.Context, log *Log) error {
	a.mu.Lock()
	wd, stop, done := a.watchdog, a.stopPet, a.petDone
	a.watchdog = nil
	a.mu.Unlock()
	if wd == nil {
		return Skipped("no watchdog armed")
	}
	close(stop)
	<-done
	return wd.Disarm()
}
