package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"drawbridge/vault/window"
)

// RecordRestarted is journaled at start-up when the heartbeat file shows
// that an earlier daemon of this boot ran: it crashed or was killed, and
// PID 1 started this one.
const RecordRestarted = "daemon-restarted"

// Heartbeat timing. The heartbeat measures real elapsed time, as the
// hardware watchdog does, not the RTC.
const (
	// DefaultHeartbeatEvery is how often the heartbeat file is touched.
	DefaultHeartbeatEvery = 5 * time.Second
	// loopSlack is how late the main loop may be past the longest it is
	// meant to sleep before it counts as hung.
	loopSlack = time.Minute
	// startupLimit bounds the start-up (the journal's scan) the same way.
	startupLimit = 10 * time.Minute
)

// ErrWindowOpen is why WhileIdle refused or stopped its work.
var ErrWindowOpen = errors.New("a backup window is open")

// phase is where the main loop is, for the heartbeat.
type phase int

const (
	phaseStarting phase = iota
	phaseWaiting        // between windows: wakes at least every CheckEvery
	phaseWindow         // inside a window: bounded by its deadline
)

// liveness is what the heartbeat checks; guarded by Daemon.mu.
type liveness struct {
	phase phase
	since time.Time // real time the phase began or the loop last went round
	until time.Time // phaseWindow: real time by which the window must be over
}

// beat records that the main loop went round.
func (d *Daemon) beat(p phase, until time.Time) {
	d.mu.Lock()
	d.live = liveness{phase: p, since: time.Now(), until: until}
	d.mu.Unlock()
}

// responsive says whether the main loop is within the time it allows
// itself, and if not, why. It takes d.mu: a daemon deadlocked on it stops
// the heartbeat by that alone.
func (d *Daemon) responsive(now time.Time) (bool, string) {
	d.mu.Lock()
	l := d.live
	d.mu.Unlock()
	switch l.phase {
	case phaseStarting:
		if now.Sub(l.since) > startupLimit {
			return false, fmt.Sprintf("start-up running for %s", now.Sub(l.since).Round(time.Second))
		}
	case phaseWaiting:
		if now.Sub(l.since) > d.o.CheckEvery+loopSlack {
			return false, fmt.Sprintf("main loop silent for %s", now.Sub(l.since).Round(time.Second))
		}
	case phaseWindow:
		if now.After(l.until) {
			return false, fmt.Sprintf("window past its deadline by %s", now.Sub(l.until).Round(time.Second))
		}
	}
	return true, ""
}

// previousBeat returns the time an earlier daemon of this boot last
// touched the heartbeat file, if there is one.
func (d *Daemon) previousBeat() (time.Time, bool) {
	if d.o.Heartbeat == "" {
		return time.Time{}, false
	}
	fi, err := os.Stat(d.o.Heartbeat)
	if err != nil {
		return time.Time{}, false
	}
	return fi.ModTime(), true
}

// heartbeat touches the heartbeat file every HeartbeatEvery while the main
// loop is responsive, until ctx is done.
func (d *Daemon) heartbeat(ctx context.Context) {
	every := d.o.HeartbeatEvery
	tick := time.NewTicker(every)
	defer tick.Stop()
	var failing, hung bool
	for {
		now := time.Now()
		if ok, why := d.responsive(now); !ok {
			if !hung {
				d.log.Error("the daemon is not responsive: heartbeat stopped, the watchdog will reboot", "why", why)
			}
			hung = true
		} else {
			hung = false
			if err := touch(d.o.Heartbeat, now); err != nil {
				if !failing {
					d.log.Error("cannot touch the heartbeat file", "file", d.o.Heartbeat, "err", err)
				}
				failing = true
			} else {
				failing = false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// touch sets file's modification time to now, creating it (and its
// directory) when missing.
func touch(file string, now time.Time) error {
	err := os.Chtimes(file, now, now)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Chtimes(file, now, now)
	}
	return err
}

// WhileIdle runs fn outside windows: it returns ErrWindowOpen at once when
// a window is open or pulls still run, and cancels fn's context with cause
// ErrWindowOpen as soon as a window opens, returning ErrWindowOpen then
// whatever fn returned. Read-only work that would misread a store being
// written (verify sees a pack before the index names it) runs through it;
// a backup never waits for it.
func (d *Daemon) WhileIdle(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.mu.Lock()
	if d.live.phase == phaseWindow || len(d.pulling) > 0 {
		d.mu.Unlock()
		return ErrWindowOpen
	}
	d.idleSeq++
	key := d.idleSeq
	if d.idle == nil {
		d.idle = map[uint64]context.CancelCauseFunc{}
	}
	d.idle[key] = cancel
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.idle, key)
		d.mu.Unlock()
	}()
	err := fn(ctx)
	if errors.Is(context.Cause(ctx), ErrWindowOpen) {
		return ErrWindowOpen
	}
	return err
}

// enterWindow marks a window open for the heartbeat and WhileIdle, and
// stops idle work; it returns before the link comes up.
func (d *Daemon) enterWindow(deadline time.Time) {
	grace := d.o.Grace
	if grace <= 0 {
		grace = window.DefaultGrace
	}
	// The deadline is RTC time; what is left of it is real time.
	left := max(deadline.Sub(d.o.Clock()), 0)
	until := time.Now().Add(left + grace + loopSlack)
	d.mu.Lock()
	d.live = liveness{phase: phaseWindow, since: time.Now(), until: until}
	for _, cancel := range d.idle {
		cancel(ErrWindowOpen)
	}
	d.mu.Unlock()
}
