package window

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/hw/relay"
)

// events is the order in which the fakes and the journal were called.
type events struct {
	mu      sync.Mutex
	list    []string
	records []record
}

type record struct {
	typ, msg string
	data     map[string]any
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, s)
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

func (e *events) journal(typ, msg string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, "journal "+typ)
	e.records = append(e.records, record{typ, msg, m})
	return nil
}

func (e *events) last(typ string) map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.records) - 1; i >= 0; i-- {
		if e.records[i].typ == typ {
			return e.records[i].data
		}
	}
	return nil
}

type rig struct {
	w   *Window
	ev  *events
	lk  *link.Fake
	fw  *firewall.Fake
	rl  *relay.Fake
	rtc *fakeRTC
}

const iface = "eth0"

var source = netip.MustParseAddrPort("198.18.0.1:22")

func newRig(t *testing.T) *rig {
	ev := &events{}
	r := &rig{ev: ev, lk: link.NewFake(iface), fw: &firewall.Fake{}, rl: &relay.Fake{}, rtc: &fakeRTC{t: t0}}
	r.lk.Hook = func(op, name string) error { ev.add("link " + op); return nil }
	r.fw.Hook = func(op string) error { ev.add("firewall " + op); return nil }
	r.rl.Hook = func(op string) error { ev.add("relay " + op); return nil }
	r.w = &Window{
		Clock:     NewClock(r.rtc.Now, t0.Add(-time.Hour)),
		Link:      r.lk,
		Firewall:  r.fw,
		Relay:     r.rl,
		Journal:   ev.journal,
		Interface: iface,
		Address:   netip.MustParsePrefix("198.18.0.2/24"),
		Gateway:   netip.MustParseAddr("198.18.0.1"),
		Allow:     []netip.AddrPort{source},
		Grace:     200 * time.Millisecond,
	}
	return r
}

// closed checks the state after a window: link down without addresses,
// firewall off, relay open.
func (r *rig) closed(t *testing.T) {
	t.Helper()
	if up, addrs, _ := r.lk.State(iface); up || len(addrs) > 0 {
		t.Errorf("link after the window: up=%v addrs=%v", up, addrs)
	}
	if on, _ := r.fw.State(); on {
		t.Error("firewall still on after the window")
	}
	if r.rl.State() {
		t.Error("relay still closed after the window")
	}
}

var (
	opening = []string{
		"journal window-open", "firewall on", "journal firewall-on", "relay close", "link up", "journal link-up",
	}
	closing = []string{
		"link down", "relay open", "journal link-down", "firewall off", "journal firewall-off", "journal window-close",
	}
)

func wantEvents(t *testing.T, got []string, parts ...[]string) {
	t.Helper()
	if want := slices.Concat(parts...); !slices.Equal(got, want) {
		t.Fatalf("events:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestOpenRunFinishedEarly(t *testing.T) {
	r := newRig(t)
	res, err := r.w.Open(context.Background(), t0.Add(time.Hour), func(ctx context.Context) error {
		r.ev.add("run")
		if up, addrs, _ := r.lk.State(iface); !up || len(addrs) != 1 {
			t.Errorf("link during run: up=%v addrs=%v", up, addrs)
		}
		if on, rules := r.fw.State(); !on || rules.Interface != iface || !slices.Equal(rules.Allow, []netip.AddrPort{source}) {
			t.Errorf("firewall during run: on=%v %+v", on, rules)
		}
		if !r.rl.State() {
			t.Error("relay open during run")
		}
		if gw := r.lk.Gateway(iface); gw != r.w.Gateway {
			t.Errorf("gateway %v, want %v", gw, r.w.Gateway)
		}
		return errors.New("one source refused")
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if res.Reason != ReasonRunFinished || res.RunErr == nil || res.RunStuck {
		t.Fatalf("result %+v", res)
	}
	wantEvents(t, r.ev.get(), opening, []string{"run"}, closing)
	r.closed(t)
	if got := r.ev.last(RecordWindowClose); got["reason"] != ReasonRunFinished || got["run_error"] != "one source refused" {
		t.Fatalf("window-close record %v", got)
	}
	if got := r.ev.last(RecordWindowOpen); got["interface"] != iface || got["address"] != "198.18.0.2/24" {
		t.Fatalf("window-open record %v", got)
	}
}

// TestOpenDeadlineCutsLinkBeforeCancel: at the deadline the link is already
// down when run sees its context cancelled.
func TestOpenDeadlineCutsLinkBeforeCancel(t *testing.T) {
	r := newRig(t)
	deadline := t0.Add(100 * time.Millisecond)
	res, err := r.w.Open(context.Background(), deadline, func(ctx context.Context) error {
		r.ev.add("run")
		<-ctx.Done()
		if up, _, _ := r.lk.State(iface); up {
			t.Error("run's context was cancelled while the link was still up")
		}
		r.ev.add("run cancelled")
		return ctx.Err()
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if res.Reason != ReasonScheduleEnd || !errors.Is(res.RunErr, context.Canceled) {
		t.Fatalf("result %+v", res)
	}
	got := r.ev.get()
	// run sees the cancellation after the link went down; where it says so
	// among the closing steps depends on scheduling, so it is checked
	// apart.
	i := slices.Index(got, "run cancelled")
	if i < 0 || i < slices.Index(got, "link down") {
		t.Fatalf("events %q: run cancelled before the link went down", got)
	}
	got = slices.Delete(got, i, i+1)
	wantEvents(t, got, opening, []string{"run"}, closing)
	r.closed(t)
	if rec := r.ev.last(RecordLinkDown); rec["after_deadline_ms"] == nil {
		t.Fatalf("link-down record %v, want after_deadline_ms", rec)
	}
}

// TestOpenStuckRun: a run that ignores its context does not hold the link
// up; Open gives up on it after Grace.
func TestOpenStuckRun(t *testing.T) {
	r := newRig(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	start := time.Now()
	res, err := r.w.Open(context.Background(), t0.Add(100*time.Millisecond), func(ctx context.Context) error {
		<-release
		return nil
	})
	if !errors.Is(err, ErrRunStuck) {
		t.Fatalf("Open: %v, want ErrRunStuck", err)
	}
	if res.Reason != ReasonDeadline || !res.RunStuck {
		t.Fatalf("result %+v", res)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Open took %v with a 100ms window and 200ms grace", d)
	}
	wantEvents(t, r.ev.get(), opening, closing)
	r.closed(t)
	if rec := r.ev.last(RecordWindowClose); rec["reason"] != ReasonDeadline || rec["run_stuck"] != true {
		t.Fatalf("window-close record %v", rec)
	}
}

func TestOpenCancelled(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	res, err := r.w.Open(ctx, t0.Add(time.Hour), func(runCtx context.Context) error {
		cancel()
		<-runCtx.Done()
		if up, _, _ := r.lk.State(iface); up {
			t.Error("run's context was cancelled while the link was still up")
		}
		return runCtx.Err()
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if res.Reason != ReasonCancelled {
		t.Fatalf("result %+v", res)
	}
	wantEvents(t, r.ev.get(), opening, closing)
	r.closed(t)

	if _, err := r.w.Open(ctx, t0.Add(time.Hour), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a done ctx: %v", err)
	}
}

func TestOpenFirewallFails(t *testing.T) {
	r := newRig(t)
	boom := errors.New("nf_tables missing")
	r.fw.Hook = func(op string) error {
		r.ev.add("firewall " + op)
		if op == firewall.OpOn {
			return boom
		}
		return nil
	}
	ran := false
	res, err := r.w.Open(context.Background(), t0.Add(time.Hour), func(context.Context) error { ran = true; return nil })
	if !errors.Is(err, boom) || res.Reason != ReasonFailed || ran {
		t.Fatalf("Open: %v, result %+v, ran=%v", err, res, ran)
	}
	// The link never came up; it is taken down anyway, then the firewall
	// is cleared.
	wantEvents(t, r.ev.get(), []string{"journal window-open", "firewall on", "link down", "relay open", "firewall off", "journal window-close"})
	r.closed(t)
	if rec := r.ev.last(RecordWindowClose); rec["reason"] != ReasonFailed || !strings.Contains(rec["error"].(string), "nf_tables missing") {
		t.Fatalf("window-close record %v", rec)
	}
}

func TestOpenDHCPFails(t *testing.T) {
	r := newRig(t)
	r.w.Address, r.w.Gateway = netip.Prefix{}, netip.Addr{}
	res, err := r.w.Open(context.Background(), t0.Add(time.Hour), func(context.Context) error { return nil })
	if !errors.Is(err, link.ErrDHCPUnsupported) || res.Reason != ReasonFailed {
		t.Fatalf("Open: %v, result %+v", err, res)
	}
	r.closed(t)
	if rec := r.ev.last(RecordWindowOpen); rec["address"] != "dhcp" {
		t.Fatalf("window-open record %v", rec)
	}
}

// TestOpenLinkDownFails: a link that will not go down keeps the firewall on.
func TestOpenLinkDownFails(t *testing.T) {
	r := newRig(t)
	stuck := errors.New("device busy")
	r.lk.Hook = func(op, name string) error {
		r.ev.add("link " + op)
		if op == link.OpDown {
			return stuck
		}
		return nil
	}
	_, err := r.w.Open(context.Background(), t0.Add(time.Hour), func(context.Context) error { return nil })
	if !errors.Is(err, ErrLinkStillUp) || !errors.Is(err, stuck) {
		t.Fatalf("Open: %v, want ErrLinkStillUp", err)
	}
	if on, _ := r.fw.State(); !on {
		t.Fatal("firewall went off with the link still up")
	}
	if r.rl.State() {
		t.Fatal("relay still closed")
	}
	got := r.ev.get()
	if n := strings.Count(strings.Join(got, ","), "link down"); n != downAttempts {
		t.Fatalf("link down tried %d times, want %d", n, downAttempts)
	}
	if slices.Contains(got, "firewall off") || slices.Contains(got, "journal link-down") {
		t.Fatalf("events %q", got)
	}
}

func TestOpenJournalFails(t *testing.T) {
	r := newRig(t)
	full := errors.New("disk full")
	r.w.Journal = func(typ, msg string, data any) error {
		r.ev.add("journal " + typ)
		return full
	}
	res, err := r.w.Open(context.Background(), t0.Add(time.Hour), func(context.Context) error { return nil })
	if !errors.Is(err, full) || res.Reason != ReasonFailed {
		t.Fatalf("Open: %v, result %+v", err, res)
	}
	// Nothing opens without a record of it.
	wantEvents(t, r.ev.get(), []string{"journal window-open", "link down", "relay open", "firewall off", "journal window-close"})
}

// TestOpenDeadlineDuringOpening: a deadline that passes while the window is
// being opened keeps the link down.
func TestOpenDeadlineDuringOpening(t *testing.T) {
	r := newRig(t)
	j := r.w.Journal
	r.w.Journal = func(typ, msg string, data any) error {
		if typ == RecordFirewallOn {
			time.Sleep(300 * time.Millisecond) // a slow disk
		}
		return j(typ, msg, data)
	}
	ran := false
	res, err := r.w.Open(context.Background(), t0.Add(50*time.Millisecond), func(context.Context) error { ran = true; return nil })
	if err != nil || res.Reason != ReasonScheduleEnd || ran {
		t.Fatalf("Open: %v, result %+v, ran=%v", err, res, ran)
	}
	got := r.ev.get()
	if slices.Contains(got, "link up") || slices.Contains(got, "relay close") {
		t.Fatalf("events %q: the link came up after the deadline", got)
	}
	r.closed(t)
}

func TestOpenRefuses(t *testing.T) {
	r := newRig(t)
	if _, err := r.w.Open(context.Background(), t0, nil); !errors.Is(err, ErrWindowClosed) {
		t.Fatalf("deadline now: %v, want ErrWindowClosed", err)
	}
	if _, err := r.w.Open(context.Background(), t0.Add(MaxLength+time.Minute), nil); err == nil {
		t.Fatal("a window longer than MaxLength opened")
	}
	if got := r.ev.get(); len(got) != 0 {
		t.Fatalf("events %q for refused windows", got)
	}
	bad := *r.w
	bad.Firewall = nil
	if _, err := bad.Open(context.Background(), t0.Add(time.Hour), nil); err == nil {
		t.Fatal("a Window without a firewall opened")
	}
}

// TestOpenClockAlert: a clock behind the journal is journaled, and the
// window still opens.
func TestOpenClockAlert(t *testing.T) {
	r := newRig(t)
	r.w.Clock = NewClock(r.rtc.Now, t0.Add(24*time.Hour))
	res, err := r.w.Open(context.Background(), t0.Add(time.Hour), func(context.Context) error { return nil })
	if err != nil || res.Reason != ReasonRunFinished {
		t.Fatalf("Open: %v, result %+v", err, res)
	}
	wantEvents(t, r.ev.get(), []string{"journal clock-alert"}, opening, closing)
	if rec := r.ev.last(RecordClockAlert); rec["kind"] != string(AlertBackwards) {
		t.Fatalf("clock-alert record %v", rec)
	}
}

// TestOpenNoRelay: a vault without a relay skips it.
func TestOpenNoRelay(t *testing.T) {
	r := newRig(t)
	r.w.Relay = nil
	if _, err := r.w.Open(context.Background(), t0.Add(time.Hour), func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	without := func(s []string) []string {
		return slices.DeleteFunc(slices.Clone(s), func(e string) bool { return strings.HasPrefix(e, "relay") })
	}
	wantEvents(t, r.ev.get(), without(opening), without(closing))
}
