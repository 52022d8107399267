package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/vault/daemon"
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

// cmdRun is the daemon: windows, links, pulls, journal.
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

	level := slog.LevelInfo
	if c.quiet() {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(c.env.Stderr, &slog.HandlerOptions{Level: level}))

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
		Log:       log,
	})
	if err != nil {
		return err
	}
	return d.Run(ctx)
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
