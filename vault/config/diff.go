package config

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Change is one difference between two configurations, for a person to
// read before confirming an import.
type Change struct {
	Op      byte   // '+' added, '-' removed, '~' changed
	Subject string // "store", "network", "window 2", "source db1"
	Detail  string // what was added or removed, or "host 198.18.0.1 → 198.18.0.5"
}

// String is the change as one line: "+ source web2: …", "- window 2: …",
// "source db1: host 198.18.0.1 → 198.18.0.5".
func (c Change) String() string {
	s := c.Subject
	if c.Op != '~' {
		s = string(c.Op) + " " + s
	}
	if c.Detail != "" {
		s += ": " + c.Detail
	}
	return s
}

// Diff lists what changes from old to next: store, network, windows by
// their position (window 1 is the first [[window]]), sources by name. A nil
// old (no configuration yet) shows everything in next as added. No changes
// gives nil.
func Diff(old, next *Config) []Change {
	if old == nil {
		old = &Config{}
	}
	if next == nil {
		next = &Config{}
	}
	var out []Change
	switch {
	case old.Store == next.Store:
	case old.Store == "":
		out = append(out, Change{'+', "store", next.Store})
	case next.Store == "":
		out = append(out, Change{'-', "store", old.Store})
	default:
		out = append(out, Change{'~', "store", arrow(old.Store, next.Store)})
	}

	on, nn := networkFields(old.Network), networkFields(next.Network)
	switch {
	case on == nil && nn != nil:
		out = append(out, Change{'+', "network", joinFields(nn)})
	case on != nil && nn == nil:
		out = append(out, Change{'-', "network", joinFields(on)})
	case on != nil:
		if d := fieldDiff(on, nn); d != "" {
			out = append(out, Change{'~', "network", d})
		}
	}

	for i := 0; i < max(len(old.Windows), len(next.Windows)); i++ {
		subj := fmt.Sprintf("window %d", i+1)
		switch {
		case i >= len(old.Windows):
			out = append(out, Change{'+', subj, joinFields(windowFields(&next.Windows[i]))})
		case i >= len(next.Windows):
			out = append(out, Change{'-', subj, joinFields(windowFields(&old.Windows[i]))})
		default:
			if d := fieldDiff(windowFields(&old.Windows[i]), windowFields(&next.Windows[i])); d != "" {
				out = append(out, Change{'~', subj, d})
			}
		}
	}

	for i := range next.Sources {
		n := &next.Sources[i]
		subj := "source " + n.Name
		o, ok := old.Source(n.Name)
		if !ok {
			out = append(out, Change{'+', subj, joinFields(sourceFields(n))})
			continue
		}
		if d := fieldDiff(sourceFields(o), sourceFields(n)); d != "" {
			out = append(out, Change{'~', subj, d})
		}
	}
	for i := range old.Sources {
		o := &old.Sources[i]
		if _, ok := next.Source(o.Name); !ok {
			out = append(out, Change{'-', "source " + o.Name, joinFields(sourceFields(o))})
		}
	}
	return out
}

// field is one named value of a section, as a person would write it.
type field struct{ name, value string }

func arrow(a, b string) string {
	if a == "" {
		a = "(none)"
	}
	if b == "" {
		b = "(none)"
	}
	return a + " → " + b
}

// fieldDiff lists the fields whose value differs, "name old → new", joined
// with "; ". Both lists have the same names in the same order.
func fieldDiff(a, b []field) string {
	var parts []string
	for i := range a {
		if a[i].value != b[i].value {
			parts = append(parts, a[i].name+" "+arrow(a[i].value, b[i].value))
		}
	}
	return strings.Join(parts, "; ")
}

// joinFields writes the fields that have a value: "kind agent, host …".
func joinFields(fs []field) string {
	var parts []string
	for _, f := range fs {
		if f.value != "" {
			parts = append(parts, f.name+" "+f.value)
		}
	}
	return strings.Join(parts, ", ")
}

// networkFields is nil for a configuration without a [network].
func networkFields(n Network) []field {
	if n == (Network{}) {
		return nil
	}
	return []field{{"interface", n.Interface}, {"address", n.Address}, {"gateway", n.Gateway}}
}

func windowFields(w *Window) []field {
	return []field{{"days", daysString(w.Days)}, {"start", clock(w.Start)}, {"duration", shortDuration(w.Duration)}}
}

func sourceFields(s *Source) []field {
	paths := strings.Join(s.Paths, " ")
	return []field{
		{"kind", s.Kind},
		{"host", s.Host},
		{"port", fmt.Sprint(s.Port)},
		{"user", s.User},
		{"host_key", keyFingerprint(s)},
		{"paths", paths},
		{"command", s.Command},
		{"priority", fmt.Sprint(s.Priority)},
		{"timeout", shortDuration(s.Timeout)},
	}
}

// keyFingerprint shows a pinned host key the way ssh-keygen -l does, which
// is what a person compares with the source's.
func keyFingerprint(s *Source) string {
	if s.HostKeyParsed == nil {
		return s.HostKey
	}
	return s.HostKeyParsed.Type() + " " + ssh.FingerprintSHA256(s.HostKeyParsed)
}

var dayAbbrev = [...]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

func daysString(days []time.Weekday) string {
	var set [7]bool
	for _, d := range days {
		if d >= 0 && d < 7 {
			set[d] = true
		}
	}
	var parts []string
	for i := 1; i <= 7; i++ { // Monday first, as people write weeks
		if set[i%7] {
			parts = append(parts, dayAbbrev[i%7])
		}
	}
	switch s := strings.Join(parts, ","); s {
	case "mon,tue,wed,thu,fri,sat,sun":
		return "daily"
	case "mon,tue,wed,thu,fri":
		return "weekdays"
	case "sat,sun":
		return "weekends"
	default:
		return s
	}
}

func clock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// shortDuration writes 1h, 90m → 1h30m, 5m, without Go's trailing 0s.
func shortDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
