package window

import (
	"slices"
	"time"

	"drawbridge/vault/config"
)

// Next returns the window of ws that is open at now, or else the next one
// to open: its start and end. Days and start times are read in loc (the
// RTC's local time; nil means UTC). A window that crosses midnight belongs
// to the day it starts on. ok is false when ws has no window with a day.
//
// Start times are placed on each calendar day with time.Date, so a window
// opens once on every scheduled day across daylight-saving changes: a start
// inside the hour skipped in spring opens when the clock jumps (02:30 opens
// at 03:00), a start inside the hour repeated in autumn opens once, and a
// window lasts its Duration of real time.
//
// When windows overlap, an open window that ends last is preferred, then
// the one that starts first; windows are not merged, so a caller that
// reaches the end of one finds the other still open.
func Next(ws []config.Window, now time.Time, loc *time.Location) (start, end time.Time, ok bool) {
	if loc == nil {
		loc = time.UTC
	}
	now = now.Round(0) // compare wall clocks, never monotonic readings
	y, m, d := now.In(loc).Date()
	for _, w := range ws {
		if w.Duration <= 0 {
			continue
		}
		h, mi := int(w.Start/time.Hour), int(w.Start%time.Hour/time.Minute)
		sec, ns := int(w.Start%time.Minute/time.Second), int(w.Start%time.Second)
		// Yesterday for a window still open past midnight, then a week
		// ahead, which holds every weekday once more than needed.
		for off := -1; off <= 7; off++ {
			// The weekday of a calendar date does not depend on the zone.
			if !slices.Contains(w.Days, time.Date(y, m, d+off, 12, 0, 0, 0, time.UTC).Weekday()) {
				continue
			}
			s := localTime(y, m, d+off, h, mi, sec, ns, loc)
			e := s.Add(w.Duration)
			if !e.After(now) {
				continue
			}
			if !ok || better(s, e, start, end, now) {
				start, end, ok = s, e, true
			}
		}
	}
	return start, end, ok
}

// better says whether window [s, e) is to be preferred to [bs, be), both
// ending after now.
func better(s, e, bs, be, now time.Time) bool {
	open, bestOpen := !s.After(now), !bs.After(now)
	switch {
	case open != bestOpen:
		return open
	case open:
		return e.After(be)
	case !s.Equal(bs):
		return s.Before(bs)
	default:
		return e.After(be)
	}
}

// localTime is time.Date, except that a wall-clock time that does not exist
// in loc (skipped by a daylight-saving jump) becomes the instant of the
// jump, where time.Date may pick a time before or after it.
func localTime(y int, m time.Month, d, h, mi, sec, ns int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, h, mi, sec, ns, loc)
	want := time.Date(y, m, d, h, mi, sec, ns, time.UTC)
	got := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	if got.Equal(want) {
		return t
	}
	start, end := t.ZoneBounds()
	if got.Before(want) {
		// t is in the zone before the jump, which ends at the jump.
		if !end.IsZero() {
			return end
		}
		return t
	}
	if !start.IsZero() {
		return start
	}
	return t
}
