// Package daemon is the vault daemon behind `drawbridge run` (DESIGN.md §5):
// it takes the network down at start-up, closes in the journal a window
// that a crash left open, then opens the scheduled windows one after the
// other and pulls every source in each.
//
// With Options.Heartbeat it touches a file every few seconds while its main
// loop keeps within its own deadlines, for PID 1 to pet the watchdog by.
//
// Invariants:
//   - The first thing Run does is take every interface but loopback down,
//     before it reads the journal or anything else, and journal it.
//   - A window that the journal shows opened and never closed is closed in
//     the journal with reason "interrupted" at the next start-up.
//   - A window is opened only through window.Window.Open, so the link is up
//     only inside one and goes down at its deadline whatever the pulls do.
//   - Nothing the sources do stops the daemon: a failing source, a missing
//     interface or a full disk is journaled and the daemon waits for the
//     next window. A window that was handled (opened, failed or skipped) is
//     not opened again, so a failure never turns into a loop.
//   - No retention decision takes the time from anywhere but the Clock's
//     Trusted; the daemon journals a clock alert the first time it sees one.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/hw/relay"
	"drawbridge/vault/config"
	"drawbridge/vault/journal"
	"drawbridge/vault/pull"
	"drawbridge/vault/store"
	"drawbridge/vault/window"

	"drawbridge/vault/units"
)

// Journal record types the daemon writes itself; the window's transitions
// are window.Record*, the pulls' are pull's.
const (
	RecordPullSkipped = "pull-skipped"
)

// Why a window opened, in its window-open record and in Status.
const (
	OpenSchedule = "schedule" // the configured schedule
	OpenNow      = "now"      // asked for at once (--window-now, the console)
)

// Reasons the daemon itself gives for closing or not opening a window, next
// to the window package's.
const (
	// ReasonInterrupted closes, at start-up, a window the journal shows
	// open: the vault stopped (crash, power cut, kill) while it was open.
	ReasonInterrupted = "interrupted"
	// ReasonSkipped: the window was not opened (see the pull-skipped record).
	ReasonSkipped = "skipped"
	// ReasonStartup is the reason of the link-down record written at
	// start-up.
	ReasonStartup = "startup"
)

// Defaults of Options.
const (
	DefaultMinFreeBytes    = 1 << 30
	DefaultMinFreeFraction = 0.02
	DefaultCheckEvery      = time.Minute
)

// MinFree is how much room the store's disk must have for a window to open.
// A zero field takes its default.
type MinFree struct {
	Bytes    uint64  // DefaultMinFreeBytes
	Fraction float64 // of the filesystem's size; DefaultMinFreeFraction
}

// Options are what a Daemon works with. Store, Config, Link and Firewall
// are required; everything else has a default.
type Options struct {
	Store  *store.Store
	Config *config.Config
	// Dir is the store's directory, whose filesystem must have MinFree
	// free; empty means Config.Store.
	Dir string

	Link     link.Link
	Firewall firewall.Firewall
	Relay    relay.Relay // nil when the vault has none

	// Clock is the RTC; nil means time.Now. Every record the daemon
	// writes is stamped with it. Give the store and the pulls the same.
	Clock func() time.Time
	// After waits like time.After; nil means time.After. The daemon never
	// waits longer than CheckEvery at a time.
	After func(time.Duration) <-chan time.Time
	// CheckEvery is how often the clock is checked while waiting for a
	// window; 0 means DefaultCheckEvery.
	CheckEvery time.Duration
	// Location is the zone of the schedule; nil means time.Local.
	Location *time.Location

	// Pull pulls every configured source and returns one result per
	// source; each result is already journaled. nil means pull.Run with
	// Dial, Concurrency, Log and Clock.
	Pull        func(ctx context.Context) []pull.Result
	Dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	Concurrency int

	// Grace is how long a closing window waits for the pulls to stop; 0
	// means window.DefaultGrace.
	Grace time.Duration
	// MinFree is the room the store's disk must have for a window.
	MinFree MinFree
	// FreeSpace reports the free and total bytes of the filesystem
	// holding dir; nil means statfs(2).
	FreeSpace func(dir string) (free, total uint64, err error)

	// WindowNow, when positive, opens one window for that long as soon as
	// Run has started, before the schedule.
	WindowNow time.Duration

	// Heartbeat, when set, is a file whose modification time the daemon
	// sets every HeartbeatEvery while its main loop keeps within its own
	// deadlines; PID 1 pets the hardware watchdog only while the file is
	// fresh. It lives on tmpfs: when it exists at start-up, an earlier
	// daemon of this boot ran, and a daemon-restarted record says when
	// that one was last alive.
	Heartbeat string
	// HeartbeatEvery is how often Heartbeat is touched; 0 means
	// DefaultHeartbeatEvery.
	HeartbeatEvery time.Duration

	// Log receives diagnostics; nil means slog.Default().
	Log *slog.Logger
}

// Daemon runs the vault's windows.
type Daemon struct {
	o     Options
	clock *window.Clock
	log   *slog.Logger

	now     chan time.Duration // windows asked for at once
	started chan struct{}      // closed once start-up is done

	// pulling is held while pulls run; pulls that outlived their window
	// keep it, and the next window's pulls wait for them.
	pulling chan struct{}

	mu        sync.Mutex
	status    Status
	done      span  // the last window handled, not to be opened again
	lastAlert Alert // the clock alert last journaled
	live      liveness
	idle      map[uint64]context.CancelCauseFunc // work running through WhileIdle
	idleSeq   uint64
}

type span struct{ start, end time.Time }

// Alert is window.Alert as Status shows it.
type Alert = window.Alert

// New checks o and returns a Daemon; nothing is touched until Run.
func New(o Options) (*Daemon, error) {
	switch {
	case o.Store == nil, o.Config == nil, o.Link == nil, o.Firewall == nil:
		return nil, errors.New("daemon: Store, Config, Link and Firewall are required")
	case o.Config.Network.Interface == "":
		return nil, fmt.Errorf("daemon: %s names no network interface ([network] interface)", o.Config.Path)
	case o.WindowNow < 0 || o.WindowNow > window.MaxLength:
		return nil, fmt.Errorf("daemon: a window of %v: expected up to %v", o.WindowNow, window.MaxLength)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.After == nil {
		o.After = time.After
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = DefaultCheckEvery
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Dir == "" {
		o.Dir = o.Config.Store
	}
	if o.MinFree.Bytes == 0 {
		o.MinFree.Bytes = DefaultMinFreeBytes
	}
	if o.MinFree.Fraction == 0 {
		o.MinFree.Fraction = DefaultMinFreeFraction
	}
	if o.FreeSpace == nil {
		o.FreeSpace = statfs
	}
	if o.HeartbeatEvery <= 0 {
		o.HeartbeatEvery = DefaultHeartbeatEvery
	}
	d := &Daemon{o: o, log: o.Log, now: make(chan time.Duration, 1), started: make(chan struct{}), pulling: make(chan struct{}, 1)}
	d.live = liveness{phase: phaseStarting, since: time.Now()}
	if o.Pull == nil {
		d.o.Pull = func(ctx context.Context) []pull.Result {
			return pull.Run(ctx, o.Store, o.Config, "", pull.Options{
				Concurrency: o.Concurrency, Log: o.Log, Dial: o.Dial, Clock: o.Clock})
		}
	}
	d.status.Sources = make([]SourceStatus, len(o.Config.Sources))
	for i, s := range o.Config.Sources {
		d.status.Sources[i].Name = s.Name
	}
	return d, nil
}

// Started is closed once Run has done its start-up: the link is down and
// Status shows what the journal says of earlier windows and pulls.
func (d *Daemon) Started() <-chan struct{} { return d.started }

// OpenNow asks a running daemon to open a window for length at once (the
// console's "back up now"). A request made while one is pending is dropped.
func (d *Daemon) OpenNow(length time.Duration) {
	select {
	case d.now <- length:
	default:
	}
}

// Run starts the vault and runs windows until ctx is done, then returns
// nil. A window open when ctx is done is closed link first. Run returns an
// error only when it cannot start at all.
func (d *Daemon) Run(ctx context.Context) error {
	prevBeat, restarted := d.previousBeat()
	d.beat(phaseStarting, time.Time{})
	if d.o.Heartbeat != "" {
		hbCtx, stop := context.WithCancel(ctx)
		defer stop()
		go d.heartbeat(hbCtx)
	}
	d.startup(ctx, prevBeat, restarted)
	d.saveStatus()
	close(d.started)
	if d.o.WindowNow > 0 {
		now := d.o.Clock()
		d.window(ctx, now, now.Add(d.o.WindowNow), OpenNow)
	}
	for ctx.Err() == nil {
		d.beat(phaseWaiting, time.Time{})
		d.checkClock()
		now := d.o.Clock()
		start, end, ok := d.next(now)
		if ok && !start.After(now) {
			d.window(ctx, start, end, OpenSchedule)
			continue
		}
		wait := d.o.CheckEvery
		if ok && start.Sub(now) < wait {
			wait = start.Sub(now)
		}
		select {
		case <-ctx.Done():
		case <-d.o.After(wait):
		case length := <-d.now:
			now := d.o.Clock()
			d.window(ctx, now, now.Add(length), OpenNow)
		}
	}
	d.log.Info("daemon stopping", "reason", context.Cause(ctx))
	return nil
}

// startup brings the vault to its resting state: network down, an
// interrupted window closed in the journal, the clock checked.
func (d *Daemon) startup(ctx context.Context, prevBeat time.Time, restarted bool) {
	// Before anything else: whatever happened before, the link is down.
	downErr := d.o.Link.DownAll(context.WithoutCancel(ctx))
	var relayErr error
	if d.o.Relay != nil {
		relayErr = d.o.Relay.Open(context.WithoutCancel(ctx))
	}
	seqBefore, _ := d.o.Store.Journal().Last()
	rec := map[string]any{"reason": ReasonStartup, "interface": "all"}
	msg := "link down: every interface (start-up)"
	if downErr != nil {
		rec["error"] = downErr.Error()
		msg = "link down at start-up FAILED: " + downErr.Error()
		d.log.Error("cannot take the network down at start-up", "err", downErr)
	}
	if d.o.Relay != nil {
		rec["relay"] = "open"
		if relayErr != nil {
			rec["relay_error"] = relayErr.Error()
			d.log.Error("cannot open the relay at start-up", "err", relayErr)
		}
	}
	d.journal(window.RecordLinkDown, msg, rec)
	if restarted {
		d.journal(RecordRestarted, "the daemon was restarted; the previous one was last alive at "+stamp(prevBeat),
			map[string]any{"last_alive": prevBeat.UTC()})
		d.log.Warn("an earlier daemon of this boot stopped; restarted", "last_alive", stamp(prevBeat))
	}

	// One pass over the journal: the clock's high-water mark, a window
	// left open, and what the status shows.
	var open *journal.Record
	var fwOn bool
	high, err := window.HighWater(func(fn func(journal.Record) error) error {
		return d.o.Store.Journal().Scan(func(r journal.Record) error {
			if r.Seq > seqBefore {
				// Written by this start-up, with a time not yet checked.
				return nil
			}
			switch r.Type {
			case window.RecordWindowOpen:
				r := r
				open, fwOn = &r, false
			case window.RecordWindowClose:
				open = nil
			case window.RecordFirewallOn:
				fwOn = true
			case window.RecordFirewallOff:
				fwOn = false
			}
			d.learn(r)
			return fn(r)
		})
	})
	if err != nil {
		// A damaged journal is for verify to report; the vault still runs
		// and the last record, which Open checked, still bounds the clock.
		d.log.Error("cannot read the whole journal", "err", err)
		if _, t := d.o.Store.Journal().Last(); t.After(high) && seqBefore > 0 {
			high = t
		}
	}
	d.mu.Lock()
	d.clock = window.NewClock(d.o.Clock, high)
	d.mu.Unlock()

	if downErr == nil {
		// A crash during a window left the window's table; the vault boots
		// without one. With the link in doubt it stays.
		if err := d.o.Firewall.Off(context.WithoutCancel(ctx)); err != nil {
			d.log.Error("cannot remove the firewall table at start-up", "err", err)
		} else if open != nil && fwOn {
			d.journal(window.RecordFirewallOff, "firewall off (start-up)", map[string]any{"reason": ReasonStartup})
		}
	}
	if open != nil {
		var o struct {
			Deadline  time.Time `json:"deadline"`
			Interface string    `json:"interface"`
		}
		_ = json.Unmarshal(open.Data, &o)
		d.journal(window.RecordWindowClose,
			fmt.Sprintf("window closed: %s (the vault stopped during the window opened at %s)", ReasonInterrupted, stamp(open.Time)),
			map[string]any{"reason": ReasonInterrupted, "opened_seq": open.Seq, "opened": open.Time, "deadline": o.Deadline})
		d.mu.Lock()
		d.status.LastWindow = &WindowStatus{Start: open.Time, End: o.Deadline, Closed: d.o.Clock(), Result: ReasonInterrupted}
		d.mu.Unlock()
	}
	d.checkClock()
	d.log.Info("vault started", "interface", d.o.Config.Network.Interface, "sources", len(d.o.Config.Sources),
		"windows", len(d.o.Config.Windows), "high_water", stamp(high))
}

// checkClock checks the RTC against the high-water mark and journals an
// alert the first time it is seen.
func (d *Daemon) checkClock() {
	a, bad := d.clock.Check(d.o.Clock())
	d.mu.Lock()
	fresh := bad && a != d.lastAlert
	if bad {
		d.lastAlert = a
		d.status.ClockAlert = a.String()
	} else {
		d.status.ClockAlert = ""
	}
	d.mu.Unlock()
	if fresh {
		d.log.Error("clock alert", "alert", a.String())
		d.journal(window.RecordClockAlert, a.String(), a)
	}
}

// Trusted is the time for retention decisions, and the only one: an error
// while the clock is in doubt (window.ErrClockAlert) or before Run has read
// the journal's high-water mark.
func (d *Daemon) Trusted() (time.Time, error) {
	d.mu.Lock()
	c := d.clock
	d.mu.Unlock()
	if c == nil {
		return time.Time{}, errors.New("no trusted time before the daemon has read its journal")
	}
	return c.Trusted()
}

// next returns the next window to open at now, skipping the one already
// handled.
func (d *Daemon) next(now time.Time) (start, end time.Time, ok bool) {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	start, end, ok = window.Next(d.o.Config.Windows, now, d.o.Location)
	if ok && start.Equal(done.start) && end.Equal(done.end) {
		start, end, ok = window.Next(d.o.Config.Windows, end, d.o.Location)
	}
	return start, end, ok
}

// window handles one window from start to end: it opens it unless the disk
// is nearly full, pulls every source in it, and records how it went.
func (d *Daemon) window(ctx context.Context, start, end time.Time, why string) {
	if ctx.Err() != nil {
		return
	}
	d.enterWindow(end)
	d.mu.Lock()
	if why == OpenSchedule {
		d.done = span{start, end}
	}
	d.mu.Unlock()
	opened := d.o.Clock()
	if reason, data := d.diskLow(); reason != "" {
		data["window_start"], data["window_end"], data["opened_by"] = start, end, why
		d.journal(RecordPullSkipped, "window not opened: "+reason, data)
		d.log.Error("window not opened", "why", reason)
		d.finish(&WindowStatus{Start: start, End: end, OpenedBy: why, Closed: opened, Result: ReasonSkipped, Error: reason})
		return
	}

	cfg := d.o.Config
	w := &window.Window{
		Clock:     d.clock,
		Link:      d.o.Link,
		Firewall:  d.o.Firewall,
		Relay:     d.o.Relay,
		Journal:   d.windowJournal(why),
		Interface: cfg.Network.Interface,
		Address:   cfg.Network.Prefix,
		Gateway:   cfg.Network.GatewayAddr,
		Allow:     d.allow(),
		Grace:     d.o.Grace,
	}
	d.mu.Lock()
	d.status.Open = &WindowStatus{Start: opened, End: end, OpenedBy: why}
	d.mu.Unlock()
	d.saveStatus()
	d.log.Info("window opening", "until", stamp(end), "opened_by", why)

	res, err := w.Open(ctx, end, d.run)
	if errors.Is(err, window.ErrLinkStillUp) {
		// The window's own retries failed; try every interface once more.
		rec := map[string]any{"reason": "window-close-failed", "interface": "all"}
		msg := "link down: every interface (after the window could not take " + cfg.Network.Interface + " down)"
		if derr := d.o.Link.DownAll(context.WithoutCancel(ctx)); derr != nil {
			rec["error"] = derr.Error()
			msg = "link down FAILED: " + derr.Error()
		}
		d.journal(window.RecordLinkDown, msg, rec)
	}
	ws := &WindowStatus{Start: opened, End: end, OpenedBy: why, Closed: d.o.Clock(), Result: res.Reason}
	if err != nil {
		ws.Error = err.Error()
		if ws.Result == "" {
			ws.Result = window.ReasonFailed
		}
		d.log.Error("window", "reason", ws.Result, "err", err)
	} else {
		d.log.Info("window closed", "reason", res.Reason, "link_down", stamp(res.LinkDown))
	}
	if res.RunErr != nil && ws.Error == "" {
		ws.Error = res.RunErr.Error()
	}
	d.finish(ws)
}

// finish records a handled window in the status and saves it.
func (d *Daemon) finish(ws *WindowStatus) {
	d.mu.Lock()
	d.status.Open = nil
	d.status.LastWindow = ws
	d.mu.Unlock()
	d.saveStatus()
}

// run is the work of a window: every source, one result each.
func (d *Daemon) run(ctx context.Context) error {
	select {
	case d.pulling <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("pulls of an earlier window still running: %w", context.Cause(ctx))
	}
	defer func() { <-d.pulling }()
	results := d.o.Pull(ctx)
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
		}
	}
	d.record(results)
	if failed > 0 {
		return fmt.Errorf("%d of %d sources failed", failed, len(results))
	}
	return nil
}

// allow lists the sources' addresses for the firewall. A source named by
// a DNS name cannot be let through: the vault has no resolver in a window,
// and a name would have to be trusted to mean the pinned address.
func (d *Daemon) allow() []netip.AddrPort {
	var out []netip.AddrPort
	seen := map[netip.AddrPort]bool{}
	for _, s := range d.o.Config.Sources {
		a, err := netip.ParseAddr(s.Host)
		if err != nil {
			d.log.Warn("source named by a host name, not an address: the firewall will not let it through", "source", s.Name, "host", s.Host)
			continue
		}
		ap := netip.AddrPortFrom(a.Unmap(), uint16(s.Port))
		if !seen[ap] {
			seen[ap] = true
			out = append(out, ap)
		}
	}
	return out
}

// windowJournal is the Journal of a window: it adds why the window opened
// to its window-open record.
func (d *Daemon) windowJournal(why string) func(typ, msg string, data any) error {
	return func(typ, msg string, data any) error {
		if typ == window.RecordWindowOpen {
			if b, err := json.Marshal(data); err == nil {
				var m map[string]any
				if json.Unmarshal(b, &m) == nil {
					m["opened_by"] = why
					data = m
				}
			}
			msg += " (" + why + ")"
		}
		_, err := d.o.Store.Journal().Append(d.o.Store.Keys().Identity, d.o.Clock(), typ, msg, data)
		return err
	}
}

// journal appends a record stamped with the RTC; a failure is logged, as
// there is nowhere else to put it.
func (d *Daemon) journal(typ, msg string, data any) {
	if _, err := d.o.Store.Journal().Append(d.o.Store.Keys().Identity, d.o.Clock(), typ, msg, data); err != nil {
		d.log.Error("cannot journal", "type", typ, "err", err)
	}
}

// diskLow says why the store's disk is too full for a window, with the
// pull-skipped record's data, or "" when there is room.
func (d *Daemon) diskLow() (string, map[string]any) {
	free, total, err := d.o.FreeSpace(d.o.Dir)
	if err != nil {
		// Not knowing is not a reason to miss a backup.
		d.log.Warn("cannot read the store disk's free space", "dir", d.o.Dir, "err", err)
		return "", nil
	}
	need := d.o.MinFree.Bytes
	if f := uint64(d.o.MinFree.Fraction * float64(total)); f > need {
		need = f
	}
	if free >= need {
		return "", nil
	}
	return fmt.Sprintf("the store disk is nearly full: %s free of %s, a window needs %s", units.Bytes(int64(free)), units.Bytes(int64(total)), units.Bytes(int64(need))),
		map[string]any{"reason": "disk-full", "free_bytes": free, "total_bytes": total, "min_free_bytes": need}
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}
