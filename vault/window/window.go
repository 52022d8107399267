// Package window owns the vault's schedule and the hard deadline of a
// window (DESIGN.md §5): when windows open (Next), what time the vault
// trusts (Clock), and the sequence that lowers and raises the drawbridge
// around the pulls (Window.Open).
//
// Invariants kept by Open:
//   - The firewall is on before the link comes up, and goes off only once
//     the link is down; if the link cannot be taken down, the firewall
//     stays on.
//   - The end of a window does not depend on the pulls: a timer takes the
//     link down at the deadline even while they are stuck, and only then are
//     they cancelled.
//   - The length of a window is measured on the monotonic clock from the
//     moment it opens, so a clock stepped during a window cannot stretch it.
//   - Every transition is journaled: window-open, firewall-on, link-up,
//     link-down, firewall-off, window-close, and clock-alert when the clock
//     check at the opening fails.
package window

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/hw/relay"
)

// Journal record types written by Open.
const (
	RecordWindowOpen  = "window-open"
	RecordWindowClose = "window-close"
	RecordLinkUp      = "link-up"
	RecordLinkDown    = "link-down"
	RecordFirewallOn  = "firewall-on"
	RecordFirewallOff = "firewall-off"
	RecordClockAlert  = "clock-alert"
)

// Reasons a window closed, as its window-close record says.
const (
	// ReasonRunFinished: the pulls were done before the end.
	ReasonRunFinished = "run-finished"
	// ReasonScheduleEnd: the end came and the pulls stopped when told.
	ReasonScheduleEnd = "schedule-end"
	// ReasonDeadline: the end came and the pulls did not stop within the
	// grace period; the link was cut regardless.
	ReasonDeadline = "deadline"
	// ReasonCancelled: the caller closed the window early (shutdown, a
	// request at the console).
	ReasonCancelled = "cancelled"
	// ReasonFailed: the window could not be opened.
	ReasonFailed = "failed"
)

var (
	// ErrWindowClosed is wrapped when Open is asked for a window whose
	// deadline has passed.
	ErrWindowClosed = errors.New("window closed")
	// ErrRunStuck is wrapped when the pulls had not returned a grace period
	// after they were cancelled. The link is down and the firewall off all
	// the same; the pulls' goroutine is still running.
	ErrRunStuck = errors.New("pulls did not stop after the window closed")
	// ErrLinkStillUp is wrapped when the link could not be taken down; the
	// firewall was left on.
	ErrLinkStillUp = errors.New("link could not be taken down; firewall left on")
)

const (
	// MaxLength caps the time from opening to deadline: no configured
	// window is longer.
	MaxLength = 24 * time.Hour
	// DefaultGrace is how long Open waits for cancelled pulls to return.
	DefaultGrace = 30 * time.Second

	downAttempts = 3
	downPause    = 100 * time.Millisecond
)

// Window is what a window acts on. Open may be called again for the next
// window, but not concurrently.
type Window struct {
	Clock    *Clock
	Link     link.Link
	Firewall firewall.Firewall
	Relay    relay.Relay // nil when the vault has no relay
	// Journal appends a record to the vault's journal, stamped with the
	// vault's time; it returns once the record is durable.
	Journal func(typ, msg string, data any) error

	Interface string           // config.Network.Interface
	Address   netip.Prefix     // config.Network.Prefix; invalid asks for DHCP
	Gateway   netip.Addr       // config.Network.GatewayAddr; may be invalid
	Allow     []netip.AddrPort // the sources' addresses and ports

	// Grace is how long Open waits, after cancelling the pulls at the end,
	// for them to return. Zero means DefaultGrace.
	Grace time.Duration
}

// Result says how a window went.
type Result struct {
	Reason   string    // one of the Reason constants
	Opened   time.Time // clock time when Open began
	Deadline time.Time
	LinkDown time.Time // clock time when the link went down
	RunErr   error     // what run returned, if it returned
	RunStuck bool      // run had not returned when Open gave up on it
}

// Open runs one window until deadline: firewall on, relay closed, link up,
// then run with a context that is cancelled at the end. The end is the
// deadline, run returning, or ctx being done, whichever comes first; then the
// link goes down first, run's context is cancelled, the relay opens and the
// firewall goes off. Open waits up to Grace for run to return.
//
// An active clock alert is journaled but does not keep the window shut:
// backups matter more than a wrong clock, and retention decisions check the
// clock themselves. The error reports what went wrong with the window
// itself (opening it, closing it, a stuck run); run's own error is in
// Result.RunErr.
func (w *Window) Open(ctx context.Context, deadline time.Time, run func(context.Context) error) (Result, error) {
	if err := w.check(); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("open window: %w", err)
	}
	now := w.Clock.Now()
	deadline = deadline.Round(0)
	res := Result{Opened: now, Deadline: deadline}
	var errs []error
	if a, bad := w.Clock.Check(now); bad {
		if err := w.Journal(RecordClockAlert, a.String(), a); err != nil {
			errs = append(errs, fmt.Errorf("journal clock alert: %w", err))
		}
	}
	left := deadline.Sub(now.Round(0))
	switch {
	case left <= 0:
		return res, errors.Join(append(errs, fmt.Errorf("open window until %s: %w", stamp(deadline), ErrWindowClosed))...)
	case left > MaxLength:
		return res, errors.Join(append(errs, fmt.Errorf("open window until %s: %v away, longer than a window may last (%v)", stamp(deadline), left.Round(time.Second), MaxLength))...)
	}

	// run's context does not inherit ctx's cancellation: when ctx is done
	// the link must go down before run hears of it.
	base := context.WithoutCancel(ctx)
	runCtx, cancelRun := context.WithCancel(base)
	defer cancelRun()
	// setup's context is cancelled as the cut begins, so that an Up still
	// waiting for a DHCP lease gives way to the cut's Down.
	setupCtx, cancelSetup := context.WithCancel(runCtx)
	defer cancelSetup()
	s := &session{w: w, base: base, cancelRun: cancelRun, cancelSetup: cancelSetup, cutDone: make(chan struct{})}
	deadlineTimer := time.AfterFunc(left, func() { s.cut(ReasonScheduleEnd) })
	defer deadlineTimer.Stop()
	stopWatch := context.AfterFunc(ctx, func() { s.cut(ReasonCancelled) })
	defer stopWatch()

	var (
		runDone  chan error
		returned bool
	)
	if err := s.setup(setupCtx, deadline); err != nil {
		if !errors.Is(err, errCut) {
			errs = append(errs, err)
		}
		s.cut(ReasonFailed)
	} else {
		runDone = make(chan error, 1)
		go func() { runDone <- run(runCtx) }()
		select {
		case res.RunErr = <-runDone:
			returned = true
			s.cut(ReasonRunFinished)
		case <-s.cutDone:
		}
	}
	<-s.cutDone
	res.LinkDown = s.downAt
	errs = append(errs, s.teardown(deadline)...)

	if runDone != nil && !returned {
		grace := w.Grace
		if grace <= 0 {
			grace = DefaultGrace
		}
		t := time.NewTimer(grace)
		select {
		case res.RunErr = <-runDone:
		case <-t.C:
			res.RunStuck = true
			errs = append(errs, fmt.Errorf("window until %s: %w (waited %v)", stamp(deadline), ErrRunStuck, grace))
		}
		t.Stop()
	}

	res.Reason = s.reason
	if res.Reason == ReasonScheduleEnd && res.RunStuck {
		res.Reason = ReasonDeadline
	}
	rec := closeRecord{Reason: res.Reason, RunStuck: res.RunStuck}
	if res.RunErr != nil {
		rec.RunError = res.RunErr.Error()
	}
	if err := errors.Join(errs...); err != nil {
		rec.Error = err.Error()
	}
	if err := w.Journal(RecordWindowClose, "window closed: "+res.Reason, rec); err != nil {
		errs = append(errs, fmt.Errorf("journal %s: %w", RecordWindowClose, err))
	}
	return res, errors.Join(errs...)
}

func (w *Window) check() error {
	switch {
	case w.Clock == nil, w.Link == nil, w.Firewall == nil, w.Journal == nil:
		return errors.New("open window: Clock, Link, Firewall and Journal are required")
	case w.Interface == "":
		return errors.New("open window: no interface")
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// errCut ends setup when the window was cut (deadline, cancellation) while
// it was being opened.
var errCut = errors.New("window cut while opening")

// session is the state of one Open.
type session struct {
	w           *Window
	base        context.Context // not cancelled: for closing steps
	cancelRun   context.CancelFunc
	cancelSetup context.CancelFunc

	// linkMu orders link.Up against the cut: Up never runs after the cut
	// has started, and the cut's Down waits for an Up in progress.
	linkMu  sync.Mutex
	cutting bool

	// Set by setup, read by teardown, both on Open's goroutine.
	linkUpOK bool // Up was attempted, so link-down is journaled
	fwOn     bool // firewall.On succeeded

	once    sync.Once
	cutDone chan struct{}
	reason  string
	downErr error
	downAt  time.Time
}

type openRecord struct {
	Deadline  time.Time        `json:"deadline"`
	Interface string           `json:"interface"`
	Address   string           `json:"address"`
	Gateway   string           `json:"gateway,omitempty"`
	Sources   []netip.AddrPort `json:"sources"`
	Relay     bool             `json:"relay"`
}

type linkRecord struct {
	Interface string `json:"interface"`
	Address   string `json:"address,omitempty"`
	Gateway   string `json:"gateway,omitempty"`
	Relay     string `json:"relay,omitempty"` // "closed" or "open"; empty without a relay
	// AfterDeadlineMS is how long after the deadline the link went down,
	// by the vault's clock, when the deadline ended the window.
	AfterDeadlineMS *int64 `json:"after_deadline_ms,omitempty"`
}

type firewallRecord struct {
	Interface string           `json:"interface"`
	Allow     []netip.AddrPort `json:"allow,omitempty"`
}

type closeRecord struct {
	Reason   string `json:"reason"`
	RunError string `json:"run_error,omitempty"`
	RunStuck bool   `json:"run_stuck,omitempty"`
	Error    string `json:"error,omitempty"`
}

// setup opens the window; ctx is cancelled by the cut.
func (s *session) setup(ctx context.Context, deadline time.Time) error {
	w := s.w
	addr := "dhcp"
	if w.Address.IsValid() {
		addr = w.Address.String()
	}
	gw := ""
	if w.Gateway.IsValid() {
		gw = w.Gateway.String()
	}
	open := openRecord{Deadline: deadline, Interface: w.Interface, Address: addr, Gateway: gw, Sources: w.Allow, Relay: w.Relay != nil}
	if err := w.Journal(RecordWindowOpen, fmt.Sprintf("window open on %s until %s", w.Interface, stamp(deadline)), open); err != nil {
		return fmt.Errorf("journal %s: %w", RecordWindowOpen, err)
	}

	if ctx.Err() != nil {
		return errCut
	}
	rules := firewall.Rules{Interface: w.Interface, Allow: w.Allow, DHCP: !w.Address.IsValid()}
	if err := w.Firewall.On(ctx, rules); err != nil {
		return cutOr(ctx, err)
	}
	s.fwOn = true
	fw := firewallRecord{Interface: w.Interface, Allow: w.Allow}
	if err := w.Journal(RecordFirewallOn, fmt.Sprintf("firewall on: %s, %d sources", w.Interface, len(w.Allow)), fw); err != nil {
		return fmt.Errorf("journal %s: %w", RecordFirewallOn, err)
	}

	if w.Relay != nil {
		if ctx.Err() != nil {
			return errCut
		}
		if err := w.Relay.Close(ctx); err != nil {
			return cutOr(ctx, err)
		}
	}

	s.linkMu.Lock()
	if s.cutting {
		s.linkMu.Unlock()
		return errCut
	}
	s.linkUpOK = true
	err := w.Link.Up(ctx, w.Interface, w.Address, w.Gateway)
	s.linkMu.Unlock()
	if err != nil {
		return cutOr(ctx, err)
	}
	up := linkRecord{Interface: w.Interface, Address: addr, Gateway: gw, Relay: s.relayState()}
	if err := w.Journal(RecordLinkUp, fmt.Sprintf("link up: %s %s", w.Interface, addr), up); err != nil {
		return fmt.Errorf("journal %s: %w", RecordLinkUp, err)
	}
	return nil
}

// cutOr returns errCut when a step failed because the window was cut under
// it, and the step's error otherwise.
func cutOr(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return errCut
	}
	return err
}

// cut ends the window: the link goes down, then run's context is
// cancelled. The first caller's reason stands; later calls do nothing.
// It runs on the deadline timer's goroutine when the deadline ends the
// window, so nothing run does can delay it.
func (s *session) cut(reason string) {
	s.once.Do(func() {
		s.reason = reason
		s.cancelSetup()
		s.linkMu.Lock()
		s.cutting = true
		s.downErr = s.down()
		s.linkMu.Unlock()
		s.downAt = s.w.Clock.Now()
		s.cancelRun()
		close(s.cutDone)
	})
}

// down takes the link down, retrying a few times: while it is up, the
// firewall cannot go off.
func (s *session) down() error {
	var err error
	for i := 0; i < downAttempts; i++ {
		if i > 0 {
			time.Sleep(downPause)
		}
		err = s.w.Link.Down(s.base, s.w.Interface)
		if err == nil || errors.Is(err, link.ErrNoInterface) {
			// An interface that is not there is not up.
			return nil
		}
	}
	return err
}

// teardown finishes closing after the cut: relay open, firewall off (only
// with the link down), and their records.
func (s *session) teardown(deadline time.Time) []error {
	w := s.w
	var errs []error
	if w.Relay != nil {
		if err := w.Relay.Open(s.base); err != nil {
			errs = append(errs, err)
		}
	}
	if s.downErr != nil {
		return append(errs, fmt.Errorf("close window: %w: %w", ErrLinkStillUp, s.downErr))
	}
	if s.linkUpOK {
		rec := linkRecord{Interface: w.Interface, Relay: s.relayState()}
		if s.reason == ReasonScheduleEnd {
			ms := s.downAt.Round(0).Sub(deadline).Milliseconds()
			rec.AfterDeadlineMS = &ms
		}
		if err := w.Journal(RecordLinkDown, "link down: "+w.Interface, rec); err != nil {
			errs = append(errs, fmt.Errorf("journal %s: %w", RecordLinkDown, err))
		}
	}
	// Off also when On failed: it leaves the vault as it boots, without a
	// table from an earlier window that crashed.
	if err := w.Firewall.Off(s.base); err != nil {
		return append(errs, err)
	}
	if s.fwOn {
		rec := firewallRecord{Interface: w.Interface}
		if err := w.Journal(RecordFirewallOff, "firewall off", rec); err != nil {
			errs = append(errs, fmt.Errorf("journal %s: %w", RecordFirewallOff, err))
		}
	}
	return errs
}

func (s *session) relayState() string {
	switch {
	case s.w.Relay == nil:
		return ""
	case s.w.Relay.State():
		return "closed"
	default:
		return "open"
	}
}
