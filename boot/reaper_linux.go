package boot

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reaper starts processes and reaps every child of PID 1: the ones it
// started, whose exit it reports to their Process, and the orphans the
// kernel hands to PID 1, which it just collects.
type Reaper struct {
	mu    sync.Mutex // held while starting a process and while reaping
	procs map[int]*reapedProc
}

// NewReaper starts reaping on SIGCHLD.
func NewReaper() *Reaper {
	r := &Reaper{procs: map[int]*reapedProc{}}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGCHLD)
	go func() {
		r.reap()
		for range ch {
			r.reap()
		}
	}()
	return r
}

func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if p, ok := r.procs[pid]; ok {
			delete(r.procs, pid)
			p.code = -1
			if ws.Exited() {
				p.code = ws.ExitStatus()
			}
			p.proc.Release()
			if p.copied != nil {
				// The output is complete once the pipe is drained.
				go func() { <-p.copied; close(p.done) }()
			} else {
				close(p.done)
			}
		}
	}
}

// childEnv is the environment of every process PID 1 starts.
var childEnv = []string{"PATH=/bin:/sbin", "HOME=/", "TERM=linux"}

// Start implements Starter. The lock keeps the reaper from collecting a
// child that exits at once before it is registered.
func (r *Reaper) Start(c Cmd) (Process, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command(c.Argv[0], c.Argv[1:]...)
	cmd.Env = childEnv
	var copied chan struct{}
	switch {
	case c.Out != nil:
		// A pipe of our own, not exec's: exec copies in a goroutine
		// that only Wait waits for, and only the reaper waits here.
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer pw.Close()
		cmd.Stdout, cmd.Stderr = pw, pw
		copied = make(chan struct{})
		go func() {
			defer close(copied)
			defer pr.Close()
			io.Copy(c.Out, io.LimitReader(pr, maxOutput))
			io.Copy(io.Discard, pr)
		}()
	case c.Quiet:
		// nil stdio is /dev/null
	case c.TTY:
		dev := c.TTYDevice
		if dev == "" {
			dev = consoleTTY()
		}
		tty, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, err
		}
		defer tty.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	default:
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &reapedProc{proc: cmd.Process, done: make(chan struct{}), copied: copied}
	r.procs[cmd.Process.Pid] = p
	return p, nil
}

// consoleTTY is the terminal behind /dev/console: the last console= of
// the kernel command line.
func consoleTTY() string {
	b, err := os.ReadFile("/sys/class/tty/console/active")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return "/dev/" + f[len(f)-1]
	}
	return "/dev/console"
}

// maxOutput caps what is kept of a process's output (Cmd.Out).
const maxOutput = 1 << 20

type reapedProc struct {
	proc   *os.Process
	done   chan struct{}
	copied chan struct{} // closed when its output is all read; nil without Cmd.Out
	code   int
}

func (p *reapedProc) Pid() int                        { return p.proc.Pid }
func (p *reapedProc) Signal(sig syscall.Signal) error { return p.proc.Signal(sig) }
func (p *reapedProc) Done() <-chan struct{}           { return p.done }
func (p *reapedProc) ExitCode() int                   { <-p.done; return p.code }

// Main is PID 1. It never returns: after the shutdown steps it powers off,
// and if even that fails it goes on reaping.
func Main(debugShell string) {
	reaper := NewReaper()
	a := New(Linux(reaper), os.Stdout)
	a.DebugShell = debugShell
	sigs := make(chan os.Signal, 4)
	// SIGINT comes from ctrl-alt-del once the ctrl-alt-del step has run;
	// SIGTERM, SIGUSR2 and SIGPWR are how other inits are asked to stop;
	// SIGUSR1 asks for a reboot.
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPWR)
	go func() {
		for s := range sigs {
			why := "signal " + unix.SignalName(s.(syscall.Signal))
			switch s {
			case unix.SIGINT:
				a.RequestShutdown("ctrl-alt-del")
			case unix.SIGUSR1:
				a.RequestReboot(why)
			default:
				a.RequestShutdown(why)
			}
		}
	}()
	ctx := context.Background()
	a.Boot(ctx)
	r := a.Wait(ctx)
	err := a.Shutdown(ctx, r)
	a.Console.Printf("drawbridge: power off or reboot failed: %v", err)
	select {}
}
