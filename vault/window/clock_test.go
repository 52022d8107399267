package window

import (
	"errors"
	"sync"
	"testing"
	"time"

	"drawbridge/vault/journal"
)

// fakeRTC is a settable time source.
type fakeRTC struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeRTC) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeRTC) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = t
}

var t0 = time.Date(2025, 6, 10, 2, 0, 0, 0, time.UTC)

func TestClockCheck(t *testing.T) {
	rtc := &fakeRTC{t: t0}
	c := NewClock(rtc.Now, t0.Add(-time.Hour))
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now = %v, want the source's %v", got, t0)
	}
	if a, bad := c.Check(t0); bad {
		t.Fatalf("Check after the mark: %v", a)
	}
	if got := c.HighWater(); !got.Equal(t0) {
		t.Fatalf("mark %v, want it raised to %v", got, t0)
	}
	// Six days between checks is a vault left running; fine.
	if a, bad := c.Check(t0.Add(6 * 24 * time.Hour)); bad {
		t.Fatalf("Check 6 days on: %v", a)
	}

	// Backwards: alert, mark kept, no trusted time.
	mark := c.HighWater()
	back := mark.Add(-time.Minute)
	a, bad := c.Check(back)
	if !bad || a.Kind != AlertBackwards || !a.Now.Equal(back) || !a.HighWater.Equal(mark) {
		t.Fatalf("Check a minute back: %+v %v, want a backwards alert", a, bad)
	}
	if !c.HighWater().Equal(mark) {
		t.Fatal("a backwards check moved the mark")
	}
	// The alert stays until acknowledged, even once the clock is right.
	if a2, bad := c.Check(mark.Add(time.Hour)); !bad || a2 != a {
		t.Fatalf("Check after the alert: %+v %v, want the same alert", a2, bad)
	}
	rtc.Set(mark.Add(time.Hour))
	if _, err := c.Trusted(); !errors.Is(err, ErrClockAlert) {
		t.Fatalf("Trusted during an alert: %v, want ErrClockAlert", err)
	}
	c.Acknowledge()
	if _, bad := c.Active(); bad {
		t.Fatal("alert still active after Acknowledge")
	}
	// Acknowledged but the clock is still behind: alert again.
	if a, bad := c.Check(back); !bad || a.Kind != AlertBackwards {
		t.Fatalf("Check still behind after Acknowledge: %+v %v", a, bad)
	}
	c.Acknowledge()
	if got, err := c.Trusted(); err != nil || !got.Equal(mark.Add(time.Hour)) {
		t.Fatalf("Trusted with the clock set right: %v, %v", got, err)
	}
}

func TestClockForward(t *testing.T) {
	rtc := &fakeRTC{t: t0}
	// A vault switched off for a month: the first check trusts the RTC.
	c := NewClock(rtc.Now, t0.Add(-30*24*time.Hour))
	if a, bad := c.Check(t0); bad {
		t.Fatalf("first check after a month off: %v", a)
	}
	// Between two checks, more than a week is a set clock.
	far := t0.Add(MaxForward + time.Second)
	a, bad := c.Check(far)
	if !bad || a.Kind != AlertForward || !a.HighWater.Equal(t0) {
		t.Fatalf("Check %v on: %+v %v, want a forward alert", far.Sub(t0), a, bad)
	}
	if !c.HighWater().Equal(t0) {
		t.Fatal("a forward jump moved the mark before it was acknowledged")
	}
	rtc.Set(far)
	if _, err := c.Trusted(); !errors.Is(err, ErrClockAlert) {
		t.Fatalf("Trusted during a forward alert: %v", err)
	}
	c.Acknowledge()
	if !c.HighWater().Equal(far) {
		t.Fatalf("mark %v after acknowledging the jump, want %v", c.HighWater(), far)
	}
	if got, err := c.Trusted(); err != nil || !got.Equal(far) {
		t.Fatalf("Trusted: %v, %v", got, err)
	}
	if a, bad := c.Check(far.Add(MaxForward)); bad {
		t.Fatalf("exactly MaxForward on: %v", a)
	}
}

// TestClockTrustedNeverBelowMark: the trusted time is the later of the mark
// and the clock, and it never goes backwards.
func TestClockTrustedNeverBelowMark(t *testing.T) {
	rtc := &fakeRTC{t: t0}
	c := NewClock(rtc.Now, t0.Add(time.Hour))
	if _, err := c.Trusted(); !errors.Is(err, ErrClockAlert) {
		t.Fatalf("Trusted with the clock behind the journal: %v, want ErrClockAlert", err)
	}
	c.Acknowledge()
	rtc.Set(t0.Add(2 * time.Hour))
	var last time.Time
	for i, step := range []time.Duration{0, time.Minute, time.Hour, 3 * time.Hour} {
		rtc.Set(t0.Add(2*time.Hour + step))
		got, err := c.Trusted()
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got.Before(last) || got.Before(c.HighWater()) {
			t.Fatalf("step %d: trusted %v went below %v or the mark %v", i, got, last, c.HighWater())
		}
		last = got
	}
}

func TestHighWater(t *testing.T) {
	records := []journal.Record{
		{Seq: 1, Time: t0},
		{Seq: 2, Time: t0.Add(2 * time.Hour)},
		{Seq: 3, Time: t0.Add(time.Hour)}, // written while the clock was behind
	}
	scan := func(fn func(journal.Record) error) error {
		for _, r := range records {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	got, err := HighWater(scan)
	if err != nil || !got.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("HighWater = %v, %v; want the newest time, not the last record's", got, err)
	}
	empty, err := HighWater(func(func(journal.Record) error) error { return nil })
	if err != nil || !empty.IsZero() {
		t.Fatalf("HighWater of an empty journal = %v, %v", empty, err)
	}
	if _, err := HighWater(func(func(journal.Record) error) error { return journal.ErrDamaged }); !errors.Is(err, journal.ErrDamaged) {
		t.Fatalf("HighWater of a damaged journal: %v", err)
	}
}
