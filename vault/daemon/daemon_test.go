package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/vault/config"
	"drawbridge/vault/journal"
	"drawbridge/vault/pull"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
	"drawbridge/vault/window"
)

var (
	testPass = []byte("test passphrase")
	// t0 is far from the machine's time, so that a record stamped by any
	// clock but the injected one shows.
	t0    = time.Date(2031, 3, 4, 1, 58, 30, 0, time.UTC)
	daily = []time.Weekday{0, 1, 2, 3, 4, 5, 6}
)

// fakeClock is the RTC of a test. With a budget, its After advances it at
// once instead of waiting, and cancels the test's daemon when the time
// passes stop.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	stop   time.Time
	cancel context.CancelFunc
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.t = c.t.Add(d)
	now, over := c.t, !c.stop.IsZero() && c.t.After(c.stop)
	c.mu.Unlock()
	if over && c.cancel != nil {
		c.cancel()
	}
	ch := make(chan time.Time, 1)
	ch <- now
	return ch
}

func newStore(t testing.TB, clock func() time.Time) (*store.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	return storetest.New(t, dir, string(testPass), store.InitOptions{PackTarget: 4 << 20, Options: store.Options{Clock: clock}}), dir
}

func testConfig(dir string) *config.Config {
	return &config.Config{
		Path:  "test.toml",
		Store: dir,
		Network: config.Network{Interface: "eth0", Address: "198.18.0.2/24",
			Prefix: netip.MustParsePrefix("198.18.0.2/24")},
		Windows: []config.Window{{Days: daily, Start: 2 * time.Hour, Duration: 300 * time.Millisecond}},
		Sources: []config.Source{
			{Name: "db1", Kind: config.KindExec, Host: "198.18.0.1", Port: 22},
			{Name: "web", Kind: config.KindSFTP, Host: "198.18.0.1", Port: 2222, Priority: 1},
		},
	}
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// rig is a daemon over fakes.
type rig struct {
	t     *testing.T
	clock *fakeClock
	s     *store.Store
	dir   string
	cfg   *config.Config
	link  *link.Fake
	fw    *firewall.Fake
	o     Options

	mu     sync.Mutex
	events []string // link operations and pulls, in order
}

func newRig(t *testing.T) *rig {
	r := &rig{t: t, clock: &fakeClock{t: t0}}
	r.s, r.dir = newStore(t, r.clock.Now)
	r.cfg = testConfig(r.dir)
	r.link = link.NewFake("eth0")
	r.link.Hook = func(op, name string) error { r.event("link " + op); return nil }
	r.fw = &firewall.Fake{}
	r.o = Options{
		Store: r.s, Config: r.cfg, Link: r.link, Firewall: r.fw,
		Clock: r.clock.Now, After: r.clock.After, Location: time.UTC,
		Grace:     time.Second,
		FreeSpace: func(string) (uint64, uint64, error) { return 100 << 30, 200 << 30, nil },
		Pull: func(ctx context.Context) []pull.Result {
			r.event("pull")
			return []pull.Result{{Source: "db1", Snapshot: &store.Snapshot{ID: "ab12", Source: "db1", Time: r.clock.Now()}},
				{Source: "web", Err: errors.New("pull web: connection refused")}}
		},
		Log: testLog(t),
	}
	return r
}

func (r *rig) event(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *rig) Events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// run runs the daemon until the fake clock passes stop, or until cancel.
func (r *rig) run(stop time.Time) *Daemon {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.clock.stop, r.clock.cancel = stop, cancel
	d, err := New(r.o)
	if err != nil {
		r.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			r.t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		r.t.Fatal("Run did not return")
	}
	return d
}

func records(t testing.TB, s *store.Store) []journal.Record {
	t.Helper()
	var out []journal.Record
	if err := s.Journal().Scan(func(r journal.Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func types(recs []journal.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Type)
	}
	return out
}

func ofType(recs []journal.Record, typ string) []journal.Record {
	var out []journal.Record
	for _, r := range recs {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

func data(t testing.TB, r journal.Record) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestScheduledWindows: windows open at their scheduled times by the
// injected clock, and every transition is journaled with its times.
func TestScheduledWindows(t *testing.T) {
	r := newRig(t)
	r.link.SetState("eth0", true, netip.MustParsePrefix("198.18.0.2/24")) // left up by someone
	d := r.run(t0.Add(48 * time.Hour))

	recs := records(t, r.s)[1:] // after init
	want := []string{"link-down"}
	for range 2 {
		want = append(want, "window-open", "firewall-on", "link-up", "link-down", "firewall-off", "window-close")
	}
	if got := types(recs); !slices.Equal(got, want) {
		t.Fatalf("journal %q, want %q", got, want)
	}
	if m := data(t, recs[0]); m["reason"] != ReasonStartup {
		t.Fatalf("first record %s %v, want the start-up link-down", recs[0].Type, m)
	}
	if ev := r.Events(); len(ev) < 1 || ev[0] != "link "+link.OpDownAll {
		t.Fatalf("events %q: the link did not go down first", ev)
	}
	if up, _, _ := r.link.State("eth0"); up {
		t.Fatal("eth0 up after the daemon stopped")
	}
	day1 := time.Date(2031, 3, 4, 2, 0, 0, 0, time.UTC)
	opens := ofType(recs, window.RecordWindowOpen)
	for i, o := range opens {
		start := day1.AddDate(0, 0, i)
		if !o.Time.Equal(start) {
			t.Errorf("window %d opened at %v by the journal, want %v (the injected clock)", i, o.Time, start)
		}
		m := data(t, o)
		if m["opened_by"] != OpenSchedule || m["deadline"] != start.Add(300*time.Millisecond).Format(time.RFC3339Nano) {
			t.Errorf("window-open data %v", m)
		}
	}
	for _, c := range ofType(recs, window.RecordWindowClose) {
		if m := data(t, c); m["reason"] != window.ReasonRunFinished || !strings.Contains(m["run_error"].(string), "1 of 2 sources failed") {
			t.Errorf("window-close data %v", m)
		}
	}
	for _, rec := range recs {
		if rec.Time.Before(t0) || rec.Time.After(t0.Add(49*time.Hour)) {
			t.Errorf("%s record at %v, not by the injected clock", rec.Type, rec.Time)
		}
	}

	st, err := ReadStatus(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastWindow == nil || st.LastWindow.Result != window.ReasonRunFinished || !st.LastWindow.Start.Equal(day1.AddDate(0, 0, 1)) {
		t.Fatalf("status last window %+v", st.LastWindow)
	}
	if st.NextWindow == nil || !st.NextWindow.Start.Equal(day1.AddDate(0, 0, 2)) {
		t.Fatalf("status next window %+v", st.NextWindow)
	}
	if len(st.Sources) != 2 || st.Sources[0].Name != "db1" || st.Sources[0].LastSnapshotID != "ab12" || st.Sources[0].LastError != "" ||
		st.Sources[1].Name != "web" || !strings.Contains(st.Sources[1].LastError, "connection refused") {
		t.Fatalf("status sources %+v", st.Sources)
	}
	if got := d.Status(); got.LastWindow == nil || got.LastWindow.Result != st.LastWindow.Result {
		t.Fatalf("Status() %+v", got)
	}
}

// TestStartupClosesInterruptedWindow: a journal that ends inside a window
// (a crash) gets the link down first, then the window closed.
func TestStartupClosesInterruptedWindow(t *testing.T) {
	r := newRig(t)
	j, id := r.s.Journal(), r.s.Keys().Identity
	opened := t0.Add(-time.Hour)
	for _, typ := range []string{window.RecordWindowOpen, window.RecordFirewallOn, window.RecordLinkUp} {
		if _, err := j.Append(id, opened, typ, typ, map[string]any{"deadline": opened.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := j.Last()
	var seqAtDown uint64
	r.link.Hook = func(op, name string) error {
		if op == link.OpDownAll && seqAtDown == 0 {
			seqAtDown, _ = j.Last()
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // start up, then stop
	d, err := New(r.o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if seqAtDown != before {
		t.Fatalf("the journal had %d records when the link went down, want %d: something came first", seqAtDown, before)
	}
	recs := records(t, r.s)[before:]
	if got, want := types(recs), []string{"link-down", "firewall-off", "window-close"}; !slices.Equal(got, want) {
		t.Fatalf("journal after the crash %q, want %q", got, want)
	}
	m := data(t, recs[2])
	if m["reason"] != ReasonInterrupted || m["opened_seq"] != float64(before-2) {
		t.Fatalf("window-close data %v", m)
	}
	if !recs[2].Time.Equal(t0) {
		t.Fatalf("window-close at %v, want the injected clock's %v", recs[2].Time, t0)
	}
	if st := d.Status(); st.LastWindow == nil || st.LastWindow.Result != ReasonInterrupted {
		t.Fatalf("status %+v", st.LastWindow)
	}

	// A second start-up finds nothing open.
	d, _ = New(r.o)
	d.Run(ctx)
	if got := types(records(t, r.s)[before+3:]); !slices.Equal(got, []string{"link-down"}) {
		t.Fatalf("second start-up journaled %q", got)
	}
}

// TestMissingInterface: a window whose interface does not exist fails,
// is journaled, and the daemon waits for the next one.
func TestMissingInterface(t *testing.T) {
	r := newRig(t)
	r.o.Link = link.NewFake() // no eth0
	r.run(t0.Add(48 * time.Hour))
	recs := records(t, r.s)
	closes := ofType(recs, window.RecordWindowClose)
	if len(closes) != 2 || len(ofType(recs, window.RecordWindowOpen)) != 2 {
		t.Fatalf("journal %q, want two failed windows, one a day", types(recs))
	}
	for _, c := range closes {
		m := data(t, c)
		if m["reason"] != window.ReasonFailed || !strings.Contains(m["error"].(string), "no such network interface") {
			t.Fatalf("window-close %v", m)
		}
	}
	if slices.Contains(r.Events(), "pull") {
		t.Fatal("pulled without a link")
	}
}

// TestDiskNearlyFull: no window opens while the store's disk is nearly
// full; the link stays down and the journal says why.
func TestDiskNearlyFull(t *testing.T) {
	for _, tc := range []struct {
		name        string
		free, total uint64
		min         MinFree
		skip        bool
	}{
		{"below 1 GiB", 900 << 20, 10 << 40, MinFree{}, true},
		{"below 2%", 10 << 30, 1 << 40, MinFree{}, true},
		{"enough", 30 << 30, 1 << 40, MinFree{}, false},
		{"configured", 30 << 30, 1 << 40, MinFree{Bytes: 40 << 30}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.o.MinFree = tc.min
			r.o.FreeSpace = func(dir string) (uint64, uint64, error) {
				if dir != r.dir {
					t.Errorf("free space of %s, want the store's %s", dir, r.dir)
				}
				return tc.free, tc.total, nil
			}
			r.run(t0.Add(24 * time.Hour))
			recs := records(t, r.s)
			skipped := ofType(recs, RecordPullSkipped)
			if !tc.skip {
				if len(skipped) != 0 || len(ofType(recs, window.RecordWindowOpen)) != 1 {
					t.Fatalf("journal %q", types(recs))
				}
				return
			}
			if len(skipped) != 1 || len(ofType(recs, window.RecordWindowOpen)) != 0 || len(ofType(recs, window.RecordLinkUp)) != 0 {
				t.Fatalf("journal %q, want one pull-skipped and no window", types(recs))
			}
			if m := data(t, skipped[0]); m["reason"] != "disk-full" || m["free_bytes"] != float64(tc.free) {
				t.Fatalf("pull-skipped %v: %s", m, skipped[0].Message)
			}
			for _, e := range r.Events() {
				if e == "link "+link.OpUp || e == "pull" {
					t.Fatalf("events %q", r.Events())
				}
			}
		})
	}
}

// TestClockBackwards: the clock going back below the journal's mark is
// journaled once, and no time is trusted for retention afterwards.
func TestClockBackwards(t *testing.T) {
	r := newRig(t)
	r.cfg.Windows = nil
	r.o.CheckEvery = time.Minute
	jumped := false
	after := r.clock.After
	r.o.After = func(d time.Duration) <-chan time.Time {
		ch := after(d)
		if !jumped && r.clock.Now().After(t0.Add(10*time.Minute)) {
			jumped = true
			r.clock.Set(t0.Add(-3 * time.Hour))
		}
		return ch
	}
	d := r.run(t0.Add(time.Hour))
	alerts := ofType(records(t, r.s), window.RecordClockAlert)
	if len(alerts) != 1 {
		t.Fatalf("%d clock-alert records, want 1", len(alerts))
	}
	m := data(t, alerts[0])
	if m["kind"] != string(window.AlertBackwards) || !alerts[0].Time.Before(t0) {
		t.Fatalf("clock-alert %v at %v", m, alerts[0].Time)
	}
	if _, err := d.Trusted(); !errors.Is(err, window.ErrClockAlert) {
		t.Fatalf("Trusted after a backwards jump: %v", err)
	}
	if st := d.Status(); !strings.Contains(st.ClockAlert, "backwards") {
		t.Fatalf("status clock alert %q", st.ClockAlert)
	}
}

// TestClockBehindJournalAtStartup: an RTC behind the newest journal record
// (a flat battery) is an alert at start-up.
func TestClockBehindJournalAtStartup(t *testing.T) {
	r := newRig(t) // the store was created at t0
	r.clock.Set(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, _ := New(r.o)
	d.Run(ctx)
	recs := records(t, r.s)[1:]
	if got := types(recs); !slices.Equal(got, []string{"link-down", "clock-alert"}) {
		t.Fatalf("journal %q", got)
	}
	if _, err := d.Trusted(); !errors.Is(err, window.ErrClockAlert) {
		t.Fatalf("Trusted: %v", err)
	}
}

// TestShutdownDuringWindow: when the daemon is stopped during a window the
// link goes down before the pulls hear of it, and Run returns.
func TestShutdownDuringWindow(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	r.o.WindowNow = time.Hour
	r.o.After = time.After
	r.o.Pull = func(pctx context.Context) []pull.Result {
		close(started)
		<-pctx.Done()
		up, _, _ := r.link.State("eth0")
		r.event("pulls cancelled, link up=" + map[bool]string{true: "true", false: "false"}[up])
		return nil
	}
	d, _ := New(r.o)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	<-started
	if up, _, _ := r.link.State("eth0"); !up {
		t.Fatal("eth0 not up during the window")
	}
	if st := d.Status(); st.Open == nil || st.Open.OpenedBy != OpenNow {
		t.Fatalf("status during the window: %+v", st.Open)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	ev := r.Events()
	if i := slices.Index(ev, "link "+link.OpDown); i < 0 || !slices.Contains(ev[i:], "pulls cancelled, link up=false") {
		t.Fatalf("events %q: want the link down before the pulls were cancelled", ev)
	}
	closes := ofType(records(t, r.s), window.RecordWindowClose)
	if len(closes) != 1 || data(t, closes[0])["reason"] != window.ReasonCancelled {
		t.Fatalf("window-close records %v", closes)
	}
	opens := ofType(records(t, r.s), window.RecordWindowOpen)
	if len(opens) != 1 || data(t, opens[0])["opened_by"] != OpenNow || !strings.HasSuffix(opens[0].Message, "(now)") {
		t.Fatalf("window-open records %v", opens)
	}
}

// TestStuckPullsDoNotOverlap: pulls that outlive their window keep the
// next window's pulls waiting instead of running beside them.
func TestStuckPullsDoNotOverlap(t *testing.T) {
	r := newRig(t)
	r.o.Grace = 50 * time.Millisecond
	release := make(chan struct{})
	var mu sync.Mutex
	running, most, calls := 0, 0, 0
	r.o.Pull = func(ctx context.Context) []pull.Result {
		mu.Lock()
		running++
		calls++
		most = max(most, running)
		first := calls == 1
		mu.Unlock()
		if first {
			<-release // ignores ctx
		}
		mu.Lock()
		running--
		mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.clock.stop, r.clock.cancel = t0.Add(48*time.Hour), cancel
	d, _ := New(r.o)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	<-done
	close(release)
	mu.Lock()
	defer mu.Unlock()
	if most != 1 || calls != 1 {
		t.Fatalf("pulls at once: %d, calls %d; want the second window to wait for the first's", most, calls)
	}
	closes := ofType(records(t, r.s), window.RecordWindowClose)
	if len(closes) != 2 {
		t.Fatalf("%d windows", len(closes))
	}
	if m := data(t, closes[0]); m["reason"] != window.ReasonDeadline || m["run_stuck"] != true {
		t.Fatalf("first window-close %v", m)
	}
	if m := data(t, closes[1]); !strings.Contains(m["run_error"].(string), "earlier window") {
		t.Fatalf("second window-close %v", m)
	}
}

func TestNewChecks(t *testing.T) {
	r := newRig(t)
	bad := r.o
	bad.Link = nil
	if _, err := New(bad); err == nil {
		t.Fatal("New without a Link")
	}
	bad = r.o
	bad.WindowNow = 25 * time.Hour
	if _, err := New(bad); err == nil {
		t.Fatal("New with a 25h window")
	}
}

// TestLinkStuckUp: when the window cannot take its interface down, the
// daemon takes every interface down and journals it; the firewall stays on.
func TestLinkStuckUp(t *testing.T) {
	r := newRig(t)
	r.link.Hook = func(op, name string) error {
		if op == link.OpDown {
			return errors.New("device busy")
		}
		return nil
	}
	r.run(t0.Add(time.Hour))
	recs := records(t, r.s)[1:]
	want := []string{"link-down", "window-open", "firewall-on", "link-up", "window-close", "link-down"}
	if got := types(recs); !slices.Equal(got, want) {
		t.Fatalf("journal %q, want %q", got, want)
	}
	if m := data(t, recs[5]); m["reason"] != "window-close-failed" || m["error"] != nil {
		t.Fatalf("last link-down %v", m)
	}
	if up, _, _ := r.link.State("eth0"); up {
		t.Fatal("eth0 still up")
	}
	if on, _ := r.fw.State(); !on {
		t.Fatal("firewall off while the link was in doubt")
	}
}

// TestStatusWhileRecording: Status is a copy, taken whole while the
// window's results are recorded (the race detector watches).
func TestStatusWhileRecording(t *testing.T) {
	r := newRig(t)
	d, err := New(r.o)
	if err != nil {
		t.Fatal(err)
	}
	results := r.o.Pull(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			d.record(results)
			d.finish(&WindowStatus{Start: t0, End: t0.Add(time.Hour), OpenedBy: OpenNow})
		}
	}()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if st := d.Status(); len(st.Sources) != 2 {
			t.Fatalf("sources %+v", st.Sources)
		}
	}
	if st := d.Status(); st.Sources[0].LastSnapshotID != "ab12" || st.Sources[1].LastError == "" || st.LastWindow == nil {
		t.Fatalf("status %+v", st)
	}
}
