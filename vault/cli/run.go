package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/vault/admin"
	"drawbridge/vault/config"
	"drawbridge/vault/console"
	"drawbridge/vault/daemon"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/window"
)

// takeOverHint is what run says when it will not take the network of the
// machine it runs on.
const takeOverHint = `run takes every network interface of its network namespace down and drops all
incoming traffic there: on this machine that would cut it off the network.
On the appliance it runs as the child of PID 1 from the initramfs and needs no flag.
Elsewhere, name a network namespace made for the vault with --netns NAME
(ip netns add NAME; move the vault's interface into it), or, on a machine
that is to be the vault, pass --take-over-network`

// cmdRun is the daemon: windows, links, pulls, journal; with --console, the
// full-screen console on each terminal named, sharing the daemon's store;
// with --heartbeat, the file PID 1 watches before it pets the watchdog.
func cmdRun(ctx context.Context, c *call) error {
	if len(c.args.pos) > 0 {
		return usagef("run takes no arguments")
	}
	var now time.Duration
	if s := c.args.get("window-now"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > window.MaxLength {
			return usagef("--window-now %q: expected a duration up to 24h, e.g. 30m", s)
		}
		now = d
	}
	nsName, takeOver := c.args.get("netns"), c.args.has("take-over-network")
	if nsName != "" && takeOver {
		return usagef("--netns and --take-over-network exclude each other: --netns runs in that namespace, --take-over-network in this one")
	}
	cfg, dir, err := c.loadConfig("run")
	if err != nil {
		return err
	}
	if dir == "" {
		return usagef("no store given: use --store DIR, `store` in %s, or DRAWBRIDGE_STORE", cfg.Path)
	}
	if cfg.Network.Interface == "" {
		return usagef("%s has no [network] interface: run needs the interface its windows bring up", cfg.Path)
	}
	// The window's firewall lets through only the sources' addresses, and
	// the vault asks no name server: a source must be named by its address.
	for _, src := range cfg.Sources {
		if _, err := netip.ParseAddr(src.Host); err != nil {
			return usagef("%s: source %s: host %q is a name; the vault resolves no names and its window's firewall lets through addresses only: give the source's IP address", cfg.Path, src.Name, src.Host)
		}
	}

	// The links, the firewall and the sockets of the pulls all live in one
	// network namespace: the named one, or this process's own.
	var (
		lk   link.Link
		fw   firewall.Firewall
		dial func(ctx context.Context, network, addr string) (net.Conn, error)
	)
	switch {
	case nsName != "":
		ns, err := netns.GetFromName(nsName)
		if err != nil {
			return fmt.Errorf("network namespace %s: %w (create it with: ip netns add %s)", nsName, err, nsName)
		}
		defer ns.Close()
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			return fmt.Errorf("netlink in network namespace %s: %w", nsName, err)
		}
		defer h.Close()
		lk, fw, dial = link.NewNetlinkAt(h, ns), firewall.NewNFTablesAt(ns), daemon.DialIn(ns)
	case takeOver || onAppliance():
		lk, fw = link.NewNetlink(nil), firewall.NewNFTables()
	default:
		return exitError{2, takeOverHint}
	}

	consoles, heartbeat := c.args.getAll("console"), c.args.get("heartbeat")
	for _, dev := range consoles {
		if dev == "" {
			return usagef("--console needs a terminal device, e.g. /dev/ttyS0")
		}
	}
	level := slog.LevelInfo
	if c.quiet() {
		level = slog.LevelWarn
	}
	logOut := c.env.Stderr
	if logPath := daemonLogPath(c.args.get("log"), heartbeat, len(consoles) > 0); logPath != "" {
		// Not on the consoles' terminals, where it would trash the screen.
		lf, err := openCappedLog(logPath, maxDaemonLog)
		switch {
		case err == nil:
			defer lf.Close()
			logOut = lf
		case len(consoles) > 0:
			// The vault runs without its log rather than not at all.
			fmt.Fprintf(c.env.Stderr, "drawbridge: daemon log %s: %v; logging nothing\n", logPath, err)
			logOut = io.Discard
		default:
			return fmt.Errorf("daemon log: %w", err)
		}
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))

	// Before the store is opened, which may take a while: whatever state a
	// crash left the network in, it is down. The daemon does it again and
	// journals it.
	if err := lk.DownAll(ctx); err != nil {
		log.Error("cannot take the network down", "err", err)
	}

	s, err := store.Open(dir, store.Options{Log: log})
	if err != nil {
		return err
	}
	defer s.Close()
	d, err := daemon.New(daemon.Options{
		Store:     s,
		Config:    cfg,
		Dir:       dir,
		Link:      lk,
		Firewall:  fw,
		Dial:      dial,
		WindowNow: now,
		Heartbeat: heartbeat,
		Log:       log,
	})
	if err != nil {
		return err
	}
	if len(consoles) == 0 {
		return d.Run(ctx)
	}

	// A hang-up of a console's line must not stop the daemon, whose
	// terminal it may have become.
	signal.Ignore(syscall.SIGHUP, syscall.SIGTTOU, syscall.SIGTTIN)
	b := &console.StoreBackend{Store: s, Dir: dir, Writable: true, Daemon: d, NowLength: nowLength(cfg),
		Admin:  admin.ForStore(s, admin.Options{}), // the settings stay shut until one is set
		Config: func() ([]string, error) { return settingsLines(s, cfg.Path) }}
	u, done, err := consoleDrives(s, dir, cfg.Path, b.Admin, false)
	if err != nil {
		return err
	}
	defer done()
	b.USB = u
	if onAppliance() {
		// PID 1 shuts down cleanly on these: SIGUSR2 powers off, SIGUSR1
		// reboots.
		b.PowerOff = func() error { return unix.Kill(1, unix.SIGUSR2) }
		b.Reboot = func() error { return unix.Kill(1, unix.SIGUSR1) }
	}
	var wg sync.WaitGroup
	for _, dev := range consoles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runConsole(ctx, dev, b, log, c.env.Getenv)
		}()
	}
	err = d.Run(ctx)
	wg.Wait() // each console gives its terminal back
	return err
}

// consoleRetry is how long a console that failed waits before it opens its
// terminal again.
const consoleRetry = 30 * time.Second

// runConsole keeps a console on the terminal dev until ctx is done. A
// console that fails (no such device, not a terminal, a bug) is logged and
// tried again later; the daemon goes on.
func runConsole(ctx context.Context, dev string, b console.Backend, log *slog.Logger, getenv func(string) string) {
	for fails := 0; ctx.Err() == nil; fails++ {
		start := time.Now()
		err := func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("console crashed: %v", p)
				}
			}()
			scr, err := console.OpenTTY(dev, getenv)
			if err != nil {
				return err
			}
			log.Info("console started", "device", dev, "term", console.TermFor(dev, getenv))
			return console.Run(ctx, scr, b, console.Options{Fixed: true})
		}()
		if ctx.Err() != nil {
			return
		}
		wait := consoleRetry
		if time.Since(start) > consoleRetry {
			// It ran a while (a serial line that hung up): open it again
			// soon, and say so again if it fails.
			wait, fails = time.Second, 0
		}
		if fails == 0 {
			log.Error("console stopped or unavailable; trying again", "device", dev, "in", wait, "err", err)
		} else {
			log.Debug("console still unavailable", "device", dev, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// nowLength is how long back up now keeps a window open: as long as the
// first scheduled window, else an hour.
func nowLength(cfg *config.Config) time.Duration {
	if len(cfg.Windows) > 0 && cfg.Windows[0].Duration > 0 {
		return cfg.Windows[0].Duration
	}
	return time.Hour
}

// maxConfigShown caps the configuration file the settings screen shows.
const maxConfigShown = 1 << 20

// settingsLines is what the settings screen shows: the vault's keys with
// each source's authorized_keys line (which a person at the appliance has
// no other way to read), then the configuration file.
func settingsLines(s *store.Store, path string) ([]string, error) {
	conf, err := configLines(path)
	if err != nil {
		return nil, err
	}
	lines := []string{"# Keys (a writes each source's authorized_keys line to a USB drive)",
		"identity  " + seal.Fingerprint(s.Keys().Identity.Public()),
		"ssh key   " + s.Keys().SSHAuthorizedKey()}
	if text, err := keysText(s, path); err != nil {
		lines = append(lines, "# "+err.Error())
	} else {
		lines = append(lines, strings.Split(strings.TrimRight(text, "\n"), "\n")...)
	}
	return append(append(lines, ""), conf...), nil
}

// keysText is each source of the configuration at path with its
// authorized_keys line, as authorized-key prints them: the file the
// console writes to a drive.
func keysText(s *store.Store, path string) (string, error) {
	key := s.Keys().SSHAuthorizedKey()
	if key == "" {
		return "", errors.New("this store has no SSH client key")
	}
	// The store is this one, whatever the file says (hosted mode may name
	// it with --store).
	cfg, err := config.LoadWith(path, config.ParseOptions{AllowNoStore: true})
	if err != nil {
		return "", fmt.Errorf("the configuration does not load: %w", err)
	}
	head := fmt.Sprintf("# Drawbridge vault %s: the line for each source, in its authorized_keys file.\n\n",
		seal.Fingerprint(s.Keys().Identity.Public()))
	return head + authorizedKeysText(authorizedKeys(cfg, key, "")), nil
}

// configLines is the configuration file as the settings screen shows it.
func configLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigShown+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxConfigShown {
		return nil, fmt.Errorf("%s: larger than 1 MiB", path)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return append([]string{"# " + path}, lines...), nil
}

// maxDaemonLog is the size at which the daemon's log file starts over
// (the previous one kept as FILE.1): it lives on tmpfs, in memory.
const maxDaemonLog = 4 << 20

// daemonLogPath is where the daemon logs: --log, else beside the
// heartbeat file or in /run/drawbridge when consoles use the terminals;
// "" means standard error.
func daemonLogPath(flag, heartbeat string, consoles bool) string {
	switch {
	case flag != "":
		return flag
	case !consoles:
		return ""
	case heartbeat != "":
		return filepath.Join(filepath.Dir(heartbeat), "daemon.log")
	}
	return "/run/drawbridge/daemon.log"
}

// cappedLog is an append-only log file that is moved to FILE.1 and started
// again when it reaches max bytes.
type cappedLog struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	n    int64
}

func openCappedLog(path string, max int64) (*cappedLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	l := &cappedLog{path: path, max: max}
	return l, l.open()
}

func (l *cappedLog) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.n = f, fi.Size()
	return nil
}

func (l *cappedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n+int64(len(p)) > l.max && l.n > 0 {
		l.f.Close()
		_ = os.Rename(l.path, l.path+".1")
		if err := l.open(); err != nil {
			return 0, err
		}
	}
	n, err := l.f.Write(p)
	l.n += int64(n)
	return n, err
}

func (l *cappedLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// onAppliance reports whether this process is the appliance's daemon: the
// child of PID 1 on a system whose root is the initramfs. A service of a
// general-purpose system is a child of PID 1 too, but its root is a disk.
func onAppliance() bool {
	if os.Getppid() != 1 {
		return false
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return false
	}
	return st.Type == unix.RAMFS_MAGIC || st.Type == unix.TMPFS_MAGIC
}
