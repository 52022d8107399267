package window

import (
	"testing"
	"time"
	_ "time/tzdata" // the zones below, also on machines without zoneinfo

	"drawbridge/vault/config"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

var (
	daily    = []time.Weekday{0, 1, 2, 3, 4, 5, 6}
	monWeFri = []time.Weekday{time.Monday, time.Wednesday, time.Friday}
)

func win(days []time.Weekday, start, dur string) config.Window {
	s, _ := time.ParseDuration(start)
	d, _ := time.ParseDuration(dur)
	return config.Window{Days: days, Start: s, Duration: d}
}

func TestNext(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	newYork := mustLoc(t, "America/New_York")
	auckland := mustLoc(t, "Pacific/Auckland")
	at := func(loc *time.Location, s string) time.Time {
		t.Helper()
		v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name       string
		ws         []config.Window
		loc        *time.Location
		now        string
		start, end string // in loc; "" when !ok
	}{
		{"before today's", []config.Window{win(daily, "2h", "1h")}, berlin, "2025-06-10 01:00", "2025-06-10 02:00", "2025-06-10 03:00"},
		{"inside", []config.Window{win(daily, "2h", "1h")}, berlin, "2025-06-10 02:30", "2025-06-10 02:00", "2025-06-10 03:00"},
		{"at the start", []config.Window{win(daily, "2h", "1h")}, berlin, "2025-06-10 02:00", "2025-06-10 02:00", "2025-06-10 03:00"},
		{"at the end", []config.Window{win(daily, "2h", "1h")}, berlin, "2025-06-10 03:00", "2025-06-11 02:00", "2025-06-11 03:00"},
		// 2025-06-13 is a Friday.
		{"weekdays skip the weekend", []config.Window{win(monWeFri, "2h", "1h")}, berlin, "2025-06-13 04:00", "2025-06-16 02:00", "2025-06-16 03:00"},
		{"same day next week", []config.Window{win([]time.Weekday{time.Friday}, "2h", "1h")}, berlin, "2025-06-13 04:00", "2025-06-20 02:00", "2025-06-20 03:00"},
		// Monday 23:00 for 2h belongs to Monday and is still open on Tuesday.
		{"across midnight, open", []config.Window{win([]time.Weekday{time.Monday}, "23h", "2h")}, berlin, "2025-06-17 00:30", "2025-06-16 23:00", "2025-06-17 01:00"},
		{"across midnight, over", []config.Window{win([]time.Weekday{time.Monday}, "23h", "2h")}, berlin, "2025-06-17 01:30", "2025-06-23 23:00", "2025-06-24 01:00"},
		{"full day", []config.Window{win([]time.Weekday{time.Sunday}, "0s", "24h")}, berlin, "2025-06-15 23:59", "2025-06-15 00:00", "2025-06-16 00:00"},
		// Overlapping windows: an open one that ends last, else the first to start.
		{"overlap, open", []config.Window{win(daily, "2h", "1h"), win(daily, "2h30m", "2h")}, berlin, "2025-06-10 02:45", "2025-06-10 02:30", "2025-06-10 04:30"},
		{"overlap, ahead", []config.Window{win(daily, "2h30m", "2h"), win(daily, "2h", "1h")}, berlin, "2025-06-10 01:00", "2025-06-10 02:00", "2025-06-10 03:00"},
		{"same start, longer", []config.Window{win(daily, "2h", "1h"), win(daily, "2h", "3h")}, berlin, "2025-06-10 01:00", "2025-06-10 02:00", "2025-06-10 05:00"},
		// Spring forward in Berlin: 02:00 became 03:00 on 2025-03-30. A
		// start in the gap opens at the jump; the window keeps its length.
		{"start in the skipped hour", []config.Window{win(daily, "2h30m", "1h")}, berlin, "2025-03-30 00:00", "2025-03-30 03:00", "2025-03-30 04:00"},
		{"New York start in the skipped hour", []config.Window{win(daily, "2h30m", "1h")}, newYork, "2025-03-09 00:00", "2025-03-09 03:00", "2025-03-09 04:00"},
		{"spans the skipped hour", []config.Window{win(daily, "1h", "2h")}, berlin, "2025-03-30 00:00", "2025-03-30 01:00", "2025-03-30 04:00"},
		// Fall back: 02:00-03:00 happened twice on 2025-10-26.
		{"spans the repeated hour", []config.Window{win(daily, "1h", "2h")}, berlin, "2025-10-26 00:00", "2025-10-26 01:00", "2025-10-26 02:00"},
		{"New York spring forward", []config.Window{win(daily, "1h", "3h")}, newYork, "2025-03-09 00:00", "2025-03-09 01:00", "2025-03-09 05:00"},
		// The weekday is the local one: Sunday 20:00 UTC is Monday 09:00
		// in Auckland.
		{"local weekday", []config.Window{win([]time.Weekday{time.Monday}, "10h", "1h")}, auckland, "2025-01-13 09:00", "2025-01-13 10:00", "2025-01-13 11:00"},
		{"no windows", nil, berlin, "2025-06-10 01:00", "", ""},
		{"no days", []config.Window{win(nil, "2h", "1h")}, berlin, "2025-06-10 01:00", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := at(tt.loc, tt.now)
			start, end, ok := Next(tt.ws, now.UTC(), tt.loc)
			if tt.start == "" {
				if ok {
					t.Fatalf("Next = %v, %v, want none", start, end)
				}
				return
			}
			if !ok {
				t.Fatal("Next found no window")
			}
			ws, we := at(tt.loc, tt.start), at(tt.loc, tt.end)
			if !start.Equal(ws) || !end.Equal(we) {
				t.Fatalf("Next = %s – %s, want %s – %s", start.In(tt.loc), end.In(tt.loc), ws, we)
			}
		})
	}
}

func TestNextNilLocationIsUTC(t *testing.T) {
	now := time.Date(2025, 6, 10, 1, 0, 0, 0, time.UTC)
	start, _, ok := Next([]config.Window{win(daily, "2h", "1h")}, now, nil)
	if want := time.Date(2025, 6, 10, 2, 0, 0, 0, time.UTC); !ok || !start.Equal(want) {
		t.Fatalf("Next = %v, %v; want %v", start, ok, want)
	}
}

// TestNextWholeYear walks a year of windows in zones with daylight saving:
// every scheduled day has exactly one window, of the configured length, on
// the right local day, in order.
func TestNextWholeYear(t *testing.T) {
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "Australia/Sydney", "America/Santiago"} {
		for _, w := range []config.Window{
			win(daily, "2h30m", "1h"),
			win(monWeFri, "0s", "90m"),
			win(daily, "23h30m", "1h"),
			win([]time.Weekday{time.Sunday}, "1h", "24h"),
		} {
			loc := mustLoc(t, zone)
			now := time.Date(2025, 1, 1, 0, 0, 0, 0, loc)
			var last time.Time
			days := map[string]bool{}
			for now.Year() == 2025 {
				start, end, ok := Next([]config.Window{w}, now, loc)
				if !ok {
					t.Fatalf("%s %v: no window after %v", zone, w, now)
				}
				if end.Sub(start) != w.Duration {
					t.Fatalf("%s %v: window %v – %v lasts %v", zone, w, start, end, end.Sub(start))
				}
				if start.Before(last) {
					t.Fatalf("%s %v: window at %v before the previous end %v", zone, w, start, last)
				}
				// On the configured local time, or at the jump when that
				// time fell into the hour skipped in spring.
				local := start.In(loc)
				if late := local.Hour()*60 + local.Minute() - int(w.Start/time.Minute); late < 0 || late > 60 {
					t.Fatalf("%s %v: window at %v local", zone, w, local)
				}
				day := time.Date(local.Year(), local.Month(), local.Day(), 12, 0, 0, 0, time.UTC)
				key := day.Format("2006-01-02")
				if days[key] {
					t.Fatalf("%s %v: two windows on %s", zone, w, key)
				}
				days[key] = true
				found := false
				for _, d := range w.Days {
					found = found || d == day.Weekday()
				}
				if !found {
					t.Fatalf("%s %v: window on a %v", zone, w, day.Weekday())
				}
				last, now = end, end
			}
			want := 0
			for d := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC); d.Year() == 2025; d = d.AddDate(0, 0, 1) {
				for _, wd := range w.Days {
					if wd == d.Weekday() {
						want++
					}
				}
			}
			// The first window may have started in 2024 (still open on
			// January 1st) and be counted on that day.
			if got := len(days); got < want || got > want+1 {
				t.Fatalf("%s %v: %d windows in 2025, want %d", zone, w, got, want)
			}
		}
	}
}
