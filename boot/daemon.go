package boot

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"strings"
	"syscall"
	"time"
)

// Cmdline is what PID 1 takes from the kernel command line.
type Cmdline struct {
	// Consoles are the devices of the console= entries, in order
	// ("/dev/ttyS0"); console=tty0, the foreground virtual terminal, is
	// ConsoleTTY.
	Consoles []string
	// WindowNow (drawbridge.window_now=DURATION) makes the daemon open a
	// window at once, for that long.
	WindowNow time.Duration
	// WatchdogTimeout (drawbridge.watchdog_timeout=DURATION) is set on
	// the hardware watchdog; zero leaves the driver's.
	WatchdogTimeout time.Duration
	// Faults (drawbridge.fault=ACTION-daemon-after:DURATION,…) are for
	// tests only: they make the daemon die (kill: SIGKILL) or hang (stop:
	// SIGSTOP) that long after it starts, to show that it is restarted
	// or that the watchdog resets the box.
	Faults []Fault
	// Warnings are entries PID 1 did not understand.
	Warnings []string
}

// Fault is a signal sent to the daemon some time after it starts.
type Fault struct {
	Signal syscall.Signal
	After  time.Duration
}

// ParseCmdline reads the kernel command line. Bad entries are warnings,
// never errors: the box boots whatever its command line says.
func ParseCmdline(s string) *Cmdline {
	c := &Cmdline{}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "console":
			name, _, _ := strings.Cut(v, ",")
			if name == "" || strings.Contains(name, "/") || strings.Contains(name, "..") {
				continue
			}
			dev := "/dev/" + name
			if name == "tty0" {
				dev = ConsoleTTY
			}
			if !contains(c.Consoles, dev) {
				c.Consoles = append(c.Consoles, dev)
			}
		case "drawbridge.window_now":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				c.Warnings = append(c.Warnings, fmt.Sprintf("%s: want a positive duration like 30m", f))
				continue
			}
			c.WindowNow = d
		case "drawbridge.watchdog_timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > time.Hour {
				c.Warnings = append(c.Warnings, fmt.Sprintf("%s: want a duration from 1s to 1h", f))
				continue
			}
			c.WatchdogTimeout = d
		case "drawbridge.fault":
			for _, e := range strings.Split(v, ",") {
				what, after, _ := strings.Cut(e, "-daemon-after:")
				d, err := time.ParseDuration(after)
				sig := map[string]syscall.Signal{"kill": syscall.SIGKILL, "stop": syscall.SIGSTOP}[what]
				if err != nil || d < 0 || sig == 0 {
					c.Warnings = append(c.Warnings, fmt.Sprintf("drawbridge.fault=%s: want kill-daemon-after:DURATION or stop-daemon-after:DURATION", e))
					continue
				}
				c.Faults = append(c.Faults, Fault{Signal: sig, After: d})
			}
		}
	}
	return c
}

func contains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

// Cmdline returns the parsed kernel command line, read once (after /proc
// is mounted); an unreadable one is an empty one.
func (a *Appliance) Cmdline() *Cmdline {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmdline == nil {
		s := ""
		if a.HW.Cmdline != nil {
			if b, err := a.HW.Cmdline(); err == nil {
				s = b
			} else {
				a.Console.Printf("drawbridge: the kernel command line: %v", err)
			}
		}
		a.cmdline = ParseCmdline(s)
		for _, w := range a.cmdline.Warnings {
			a.Console.Printf("drawbridge: kernel command line: ignored %s", w)
		}
	}
	return a.cmdline
}

// consoles are the terminals of the daemon's console: the kernel's
// console= devices, and the screen.
func (a *Appliance) consoles() []string {
	c := append([]string(nil), a.Cmdline().Consoles...)
	if !contains(c, ConsoleTTY) {
		c = append(c, ConsoleTTY)
	}
	return c
}

// DaemonArgv is the daemon's command line, given its "run --help" text:
// a flag is passed only to a drawbridge whose help names it.
func (a *Appliance) DaemonArgv(help string) (argv []string, heartbeat string) {
	argv = []string{Daemon, "run", "--config", ConfigFile}
	if strings.Contains(help, "--console") {
		for _, c := range a.consoles() {
			argv = append(argv, "--console", c)
		}
	}
	if strings.Contains(help, "--heartbeat") {
		heartbeat = HeartbeatFile
		argv = append(argv, "--heartbeat", heartbeat)
	}
	if d := a.Cmdline().WindowNow; d > 0 {
		argv = append(argv, "--window-now", d.String())
	}
	return argv, heartbeat
}

func (a *Appliance) startDaemon(ctx context.Context, log *Log) error {
	if _, err := a.HW.Stat(Daemon); err != nil {
		return fmt.Errorf("the vault daemon: %w", err)
	}
	a.mu.Lock()
	mounted := a.mounted
	a.mu.Unlock()
	if !mounted {
		a.Console.Printf("drawbridge: the vault daemon is not started: no data disk")
		return Skipped("no data disk")
	}
	if _, err := a.HW.Stat(ConfigFile); err != nil {
		a.Console.Printf("drawbridge: the vault daemon is not started: no configuration at %s", ConfigFile)
		return Skipped("no configuration at " + ConfigFile)
	}
	code, help, err := a.probe(ctx, Daemon, "run", "--help")
	if err != nil {
		return err
	}
	if code != 0 {
		a.Console.Printf("drawbridge: the vault daemon is not started: this %s has no 'run' command yet", path.Base(Daemon))
		return Skipped("no 'run' command in " + Daemon)
	}
	argv, heartbeat := a.DaemonArgv(help)
	if heartbeat != "" {
		if err := a.HW.MkdirAll(path.Dir(heartbeat), 0o755); err != nil {
			return fmt.Errorf("the heartbeat's directory: %w", err)
		}
	} else {
		log.Warnf("this %s writes no heartbeat: the watchdog cannot tell when it hangs", path.Base(Daemon))
	}
	s := &Service{
		Name:    "daemon",
		Cmd:     Cmd{Argv: argv},
		Procs:   a.HW.Procs,
		Console: a.Console,
		Clock:   a.HW.Clock,
	}
	if err := s.Start(); err != nil {
		return err
	}
	a.mu.Lock()
	a.services = append(a.services, s)
	a.daemon, a.heartbeat = s, heartbeat
	a.mu.Unlock()
	log.Printf("%s", strings.Join(argv, " "))
	for _, f := range a.Cmdline().Faults {
		log.Warnf("TEST FAULT: the daemon gets %s %v after it starts (drawbridge.fault on the kernel command line)", sigName(f.Signal), f.After)
		go a.injectFault(s, f)
	}
	return nil
}

// injectFault sends a test fault's signal to the daemon.
func (a *Appliance) injectFault(s *Service, f Fault) {
	time.Sleep(f.After)
	pid, err := s.Signal(f.Signal)
	if err != nil {
		a.Console.Printf("drawbridge: test fault: %s to the daemon: %v", sigName(f.Signal), err)
		return
	}
	a.Console.Printf("drawbridge: test fault: %s sent to the daemon (pid %d)", sigName(f.Signal), pid)
}

func sigName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGSTOP:
		return "SIGSTOP"
	}
	return s.String()
}

// daemonAlive reports whether the watchdog is to be petted: yes unless the
// daemon is running and its last heartbeat is older than Timing.Heartbeat,
// or it has given none in the Timing.Startup since it started. A daemon
// that is not expected (no data disk, no configuration, no heartbeat flag)
// or that has exited and waits to be restarted is no reason to reset the
// box.
func (a *Appliance) daemonAlive() (bool, time.Duration) {
	a.mu.Lock()
	d, hb := a.daemon, a.heartbeat
	a.mu.Unlock()
	if d == nil || hb == "" {
		return true, 0
	}
	p, started := d.Running()
	if p == nil {
		return true, 0
	}
	now := a.HW.Clock()
	if st, err := a.HW.Stat(hb); err == nil && st.ModTime().After(started) {
		age := now.Sub(st.ModTime())
		return age < a.Timing.Heartbeat, age
	}
	// No heartbeat from this process yet (the file may be an earlier
	// one's).
	age := now.Sub(started)
	return age < a.Timing.Startup, age
}

// probe runs a command quietly and returns its exit code and output.
func (a *Appliance) probe(ctx context.Context, argv ...string) (int, string, error) {
	var out bytes.Buffer
	code, err := a.runWait(ctx, Cmd{Argv: argv, Out: &out}, 10*time.Second)
	return code, out.String(), err
}

// runWait starts a command and waits for it to exit, at most timeout (zero:
// as long as it takes); a command still running then is killed.
func (a *Appliance) runWait(ctx context.Context, c Cmd, timeout time.Duration) (int, error) {
	what := strings.Join(c.Argv, " ")
	p, err := a.HW.Procs.Start(c)
	if err != nil {
		return -1, fmt.Errorf("start %s: %w", what, err)
	}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-p.Done():
		return p.ExitCode(), nil
	case <-expired:
		p.Signal(sigKill)
		return -1, fmt.Errorf("%s: no end after %v: killed", what, timeout)
	case <-ctx.Done():
		p.Signal(sigKill)
		return -1, ctx.Err()
	}
}
