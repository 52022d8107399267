package boot

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"
)

// Cmd is a process for PID 1 to start.
type Cmd struct {
	Argv []string
	// TTY gives the process a terminal as its controlling terminal, in a
	// session of its own (an interactive shell, a passphrase prompt):
	// TTYDevice, or the kernel's console when that is empty. Otherwise
	// its output goes to the console.
	TTY       bool
	TTYDevice string
	// Quiet sends the process's output nowhere.
	Quiet bool
	// Out, when set, receives the process's output (stdout and stderr)
	// instead of the console; it is complete once the process is Done.
	Out io.Writer
}

// Starter starts processes. Only PID 1 reaps them: a Process learns of its
// exit from the reaper, never from a wait of its own.
type Starter interface {
	Start(c Cmd) (Process, error)
}

// Process is a started process.
type Process interface {
	Pid() int
	Signal(sig syscall.Signal) error
	// Done is closed once the process has exited and been reaped.
	Done() <-chan struct{}
	// ExitCode is the exit status after Done, or -1 when a signal ended it.
	ExitCode() int
}

const (
	sigTerm = syscall.SIGTERM
	sigKill = syscall.SIGKILL
)

// Service keeps a process running: when it exits it is started again, after
// a pause that doubles with each quick exit (up to MaxBackoff), until Stop.
type Service struct {
	Name    string
	Cmd     Cmd
	Procs   Starter
	Console *Console
	// Backoff is the first pause before a restart (default 1s).
	Backoff time.Duration
	// Clock stamps the start of each process (default time.Now).
	Clock func() time.Time

	stop chan struct{} // closed by Stop
	done chan struct{} // closed when the supervisor has returned
	cur  chan Process  // the running process, for Stop

	mu        sync.Mutex
	proc      Process   // the latest process started
	startedAt time.Time // when it was
}

// MaxBackoff bounds the pause before a service is restarted.
const MaxBackoff = time.Minute

// Start starts the service's process and supervises it.
func (s *Service) Start() error {
	p, err := s.Procs.Start(s.Cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", s.Cmd.Argv[0], err)
	}
	s.stop, s.done, s.cur = make(chan struct{}), make(chan struct{}), make(chan Process, 1)
	s.started(p)
	s.cur <- p
	go s.supervise(p)
	return nil
}

func (s *Service) supervise(p Process) {
	defer close(s.done)
	backoff := s.Backoff
	if backoff <= 0 {
		backoff = time.Second
	}
	first := backoff
	for {
		started := time.Now()
		select {
		case <-p.Done():
		case <-s.stop:
			return // Stop takes the process down
		}
		select {
		case <-s.stop:
			return
		default:
		}
		<-s.cur
		if time.Since(started) > MaxBackoff {
			backoff = first
		}
		s.Console.Printf("drawbridge: %s: %s; restarting in %v", s.Name, exitText(p), backoff)
		select {
		case <-time.After(backoff):
		case <-s.stop:
			s.cur <- p // already exited: Stop finds it done
			return
		}
		backoff = min(backoff*2, MaxBackoff)
		np, err := s.Procs.Start(s.Cmd)
		if err != nil {
			s.Console.Printf("drawbridge: %s: start %s: %v", s.Name, s.Cmd.Argv[0], err)
			s.cur <- p // the exited one, so that the loop waits out the backoff again
			continue
		}
		p = np
		s.started(p)
		s.cur <- p
	}
}

func (s *Service) started(p Process) {
	now := time.Now
	if s.Clock != nil {
		now = s.Clock
	}
	s.mu.Lock()
	s.proc, s.startedAt = p, now()
	s.mu.Unlock()
}

// Running returns the service's process and when it started, or nil when
// none is running (it exited and waits to be restarted, or was stopped).
func (s *Service) Running() (Process, time.Time) {
	s.mu.Lock()
	p, t := s.proc, s.startedAt
	s.mu.Unlock()
	if p == nil {
		return nil, time.Time{}
	}
	select {
	case <-p.Done():
		return nil, time.Time{}
	default:
		return p, t
	}
}

// ErrNotRunning is returned by Signal when the service has no process.
var ErrNotRunning = errors.New("not running")

// Signal sends sig to the service's running process.
func (s *Service) Signal(sig syscall.Signal) (pid int, err error) {
	p, _ := s.Running()
	if p == nil {
		return 0, fmt.Errorf("%s: %w", s.Name, ErrNotRunning)
	}
	return p.Pid(), p.Signal(sig)
}

func exitText(p Process) string {
	if c := p.ExitCode(); c >= 0 {
		return fmt.Sprintf("exited with status %d", c)
	}
	return "killed by a signal"
}

// Stop stops the service: SIGTERM, then SIGKILL if it has not exited
// within timeout. It returns once the process is gone.
func (s *Service) Stop(timeout time.Duration) error {
	close(s.stop)
	<-s.done
	p := <-s.cur
	select {
	case <-p.Done():
		return nil
	default:
	}
	p.Signal(sigTerm)
	select {
	case <-p.Done():
		return nil
	case <-time.After(timeout):
	}
	p.Signal(sigKill)
	select {
	case <-p.Done():
		return fmt.Errorf("%s did not exit within %v of SIGTERM: killed", s.Name, timeout)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) would not die", s.Name, p.Pid())
	}
}
