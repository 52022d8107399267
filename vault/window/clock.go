package window

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"drawbridge/vault/journal"
)

// MaxForward is how far past the high-water mark the clock may move between
// two checks. A running vault checks far more often than this; a larger
// step means the RTC was set, not that time passed.
const MaxForward = 7 * 24 * time.Hour

// ErrClockAlert is wrapped by Trusted while a clock alert is active: no
// retention decision may be taken until a person has looked at the clock.
var ErrClockAlert = errors.New("clock alert: the vault's time is not trusted")

// AlertKind says which way the clock jumped.
type AlertKind string

// Kinds of clock alert.
const (
	AlertBackwards AlertKind = "backwards" // below the high-water mark
	AlertForward   AlertKind = "forward"   // more than MaxForward past it between two checks
)

// Alert describes a jump of the clock.
type Alert struct {
	Kind      AlertKind `json:"kind"`
	Now       time.Time `json:"now"`        // the time read from the clock
	HighWater time.Time `json:"high_water"` // the mark it was compared with
}

func (a Alert) String() string {
	switch a.Kind {
	case AlertBackwards:
		return fmt.Sprintf("clock went backwards: %s is %v before the high-water mark %s",
			a.Now.UTC().Format(time.RFC3339), a.HighWater.Sub(a.Now).Round(time.Second), a.HighWater.UTC().Format(time.RFC3339))
	case AlertForward:
		return fmt.Sprintf("clock jumped forward: %s is %v past the high-water mark %s",
			a.Now.UTC().Format(time.RFC3339), a.Now.Sub(a.HighWater).Round(time.Second), a.HighWater.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("clock alert %s at %s", a.Kind, a.Now.UTC().Format(time.RFC3339))
}

// Clock is the vault's time: the RTC, read through an injected source, and a
// high-water mark that never goes backwards. The vault takes no time from
// the network, so the mark starts from the newest time in the journal and
// rises with every check that finds the clock sane.
//
// Invariants: the mark never decreases (an acknowledged forward jump raises
// it); Trusted never returns a time below the mark and returns none while an
// alert is active. Times are compared as wall-clock readings, never by
// monotonic clock readings, so a stepped system clock is seen.
type Clock struct {
	source func() time.Time

	mu      sync.Mutex
	high    time.Time
	checked bool   // a check in this process has confirmed the mark
	alert   *Alert // active until acknowledged
}

// NewClock returns a Clock reading source, with the high-water mark
// highWater (see HighWater).
func NewClock(source func() time.Time, highWater time.Time) *Clock {
	return &Clock{source: source, high: highWater.Round(0)}
}

// HighWater returns the newest time among the records of a journal, the
// mark a Clock starts from; scan is the journal's Scan. The newest time is
// the largest one, not the last record's: records written while the clock
// was wrong carry earlier times.
func HighWater(scan func(func(journal.Record) error) error) (time.Time, error) {
	var high time.Time
	err := scan(func(r journal.Record) error {
		if r.Time.After(high) {
			high = r.Time
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("clock high-water mark from the journal: %w", err)
	}
	return high, nil
}

// Now returns the source's time, unchecked: for schedules and for stamping
// records, not for retention.
func (c *Clock) Now() time.Time { return c.source() }

// HighWater returns the current high-water mark.
func (c *Clock) HighWater() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.high
}

// Check compares now with the high-water mark. A time below the mark, or
// more than MaxForward past it when the mark was confirmed by an earlier
// Check in this process, raises an alert; otherwise the mark rises to now.
// The first check after NewClock raises no forward alert, because a vault
// may have been switched off for weeks. Check returns the active alert and
// true while one is active, whether it was raised now or earlier.
func (c *Clock) Check(now time.Time) (Alert, bool) {
	now = now.Round(0)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.alert != nil {
		return *c.alert, true
	}
	switch {
	case now.Before(c.high):
		c.alert = &Alert{Kind: AlertBackwards, Now: now, HighWater: c.high}
	case c.checked && now.Sub(c.high) > MaxForward:
		c.alert = &Alert{Kind: AlertForward, Now: now, HighWater: c.high}
	default:
		c.high = now
		c.checked = true
		return Alert{}, false
	}
	return *c.alert, true
}

// Active returns the active alert, if any.
func (c *Clock) Active() (Alert, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.alert == nil {
		return Alert{}, false
	}
	return *c.alert, true
}

// Acknowledge clears the active alert; it is for the person at the console.
// A forward jump is accepted: the mark moves to the time that raised it. A
// backward jump leaves the mark where it was, so the next Check raises the
// alert again unless the clock has been set right.
func (c *Clock) Acknowledge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.alert == nil {
		return
	}
	if c.alert.Kind == AlertForward && c.alert.Now.After(c.high) {
		c.high = c.alert.Now
	}
	c.alert = nil
}

// Trusted returns the time for retention decisions: the later of the
// high-water mark and the source's time, after checking the source. While
// an alert is active it returns an error wrapping ErrClockAlert.
func (c *Clock) Trusted() (time.Time, error) {
	now := c.source().Round(0)
	if a, bad := c.Check(now); bad {
		return time.Time{}, fmt.Errorf("%w: %v", ErrClockAlert, a)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.After(c.high) {
		return now, nil
	}
	return c.high, nil
}
