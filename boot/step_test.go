package boot

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var order []string
	step := func(name string, err error) Step {
		return Step{name, func(ctx context.Context, log *Log) error {
			order = append(order, name)
			return err
		}}
	}
	for _, tc := range []struct {
		name    string
		steps   []Step
		want    []string // console lines, in order
		wantRun []string
		errs    []string // per step: "" ok, else a substring of the error
	}{
		{
			name:    "every step runs and reports once",
			steps:   []Step{step("mount", nil), step("modules", nil)},
			want:    []string{"drawbridge: boot: mount: ok", "drawbridge: boot: modules: ok"},
			wantRun: []string{"mount", "modules"},
			errs:    []string{"", ""},
		},
		{
			name:    "a failure does not stop the steps after it",
			steps:   []Step{step("rtc", errors.New("open /dev/rtc0: no such device")), step("daemon", nil)},
			want:    []string{"drawbridge: boot: rtc: failed: open /dev/rtc0: no such device", "drawbridge: boot: daemon: ok"},
			wantRun: []string{"rtc", "daemon"},
			errs:    []string{"no such device", ""},
		},
		{
			name:    "skipped",
			steps:   []Step{step("watchdog", Skipped("no hardware watchdog"))},
			want:    []string{"drawbridge: boot: watchdog: skipped: no hardware watchdog"},
			wantRun: []string{"watchdog"},
			errs:    []string{"no hardware watchdog"},
		},
		{
			name: "a panic is recovered, reported, and the next step runs",
			steps: []Step{
				{"entropy", func(context.Context, *Log) error {
					order = append(order, "entropy")
					var m map[string]int
					m["x"] = 1
					return nil
				}},
				step("rtc", nil),
			},
			want:    []string{"drawbridge: boot: entropy: failed: panic: assignment to entry in nil map", "drawbridge: boot: rtc: ok"},
			wantRun: []string{"entropy", "rtc"},
			errs:    []string{"panic", ""},
		},
		{
			name:    "a multi-line error stays on the step's line",
			steps:   []Step{step("mount", errors.Join(errors.New("mount proc on /proc: EPERM"), errors.New("mount sysfs on /sys: EPERM")))},
			want:    []string{"drawbridge: boot: mount: failed: mount proc on /proc: EPERM mount sysfs on /sys: EPERM"},
			wantRun: []string{"mount"},
			errs:    []string{"EPERM"},
		},
		{
			name:  "a step with nothing to run fails",
			steps: []Step{{Name: "empty"}},
			want:  []string{"drawbridge: boot: empty: failed: step has nothing to run"},
			errs:  []string{"nothing to run"},
		},
		{
			name: "a step's own lines come before its result",
			steps: []Step{{"rtc", func(ctx context.Context, log *Log) error {
				log.Printf("2025-01-02 03:04:05 UTC")
				log.Warnf("drift")
				return nil
			}}},
			want:    []string{"drawbridge: boot: rtc: 2025-01-02 03:04:05 UTC", "drawbridge: boot: rtc: warning: drift", "drawbridge: boot: rtc: ok"},
			wantRun: nil,
			errs:    []string{""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			order = nil
			var out bytes.Buffer
			results := Run(context.Background(), NewConsole(&out), "boot", tc.steps)
			lines := nonStackLines(out.String())
			if strings.Join(lines, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("console:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(tc.want, "\n"))
			}
			if strings.Join(order, ",") != strings.Join(tc.wantRun, ",") {
				t.Errorf("ran %v, want %v", order, tc.wantRun)
			}
			if len(results) != len(tc.steps) {
				t.Fatalf("%d results for %d steps", len(results), len(tc.steps))
			}
			for i, r := range results {
				if r.Name != tc.steps[i].Name {
					t.Errorf("result %d is %q, want %q", i, r.Name, tc.steps[i].Name)
				}
				switch {
				case tc.errs[i] == "" && r.Err != nil:
					t.Errorf("step %s: %v", r.Name, r.Err)
				case tc.errs[i] != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), tc.errs[i])):
					t.Errorf("step %s: err %v, want %q", r.Name, r.Err, tc.errs[i])
				}
			}
		})
	}
}

// nonStackLines drops the indented stack trace a panic prints.
func nonStackLines(s string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if strings.Contains(l, ":   ") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

func TestPanicPrintsStack(t *testing.T) {
	var out bytes.Buffer
	Run(context.Background(), NewConsole(&out), "boot", []Step{{"boom", func(context.Context, *Log) error { panic("boom") }}})
	if !strings.Contains(out.String(), "drawbridge: boot: boom:   goroutine") {
		t.Errorf("no stack trace on the console:\n%s", out.String())
	}
}
