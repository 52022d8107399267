package boot

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestServiceRestartsAndStops(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	starts := 0
	procs := &fakeProcs{run: func(argv []string) (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		starts++
		// The first two runs crash at once; the third stays up.
		if starts <= 2 {
			return 3, false
		}
		return 0, true
	}}
	s := &Service{Name: "daemon", Cmd: Cmd{Argv: []string{"/bin/drawbridge", "run"}}, Procs: procs, Console: NewConsole(&out), Backoff: 10 * time.Millisecond}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := starts
		mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("started %d times", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Stop(time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"drawbridge: daemon: exited with status 3; restarting in 10ms",
		"drawbridge: daemon: exited with status 3; restarting in 20ms",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("console %q, want %q", lines, want)
	}
}

func TestServiceStopKillsAStubbornProcess(t *testing.T) {
	p := &fakeProc{pid: 7, done: make(chan struct{}), ignoreTerm: true}
	s := &Service{Name: "daemon", Cmd: Cmd{Argv: []string{"x"}}, Procs: oneProc{p}, Console: NewConsole(io.Discard)}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	err := s.Stop(20 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop = %v, want a kill", err)
	}
	if !slices.Equal(p.signals, []syscall.Signal{sigTerm, sigKill}) {
		t.Errorf("signals %v", p.signals)
	}
}

type oneProc struct{ p *fakeProc }

func (o oneProc) Start(Cmd) (Process, error) { return o.p, nil }

func TestHasPowerKey(t *testing.T) {
	for _, tc := range []struct {
		caps string
		bits int
		want bool
	}{
		// The ACPI power button: only KEY_POWER.
		{"10000000000000 0", 64, true},
		// A full keyboard with a power key, and one without.
		{"402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe", 64, true},
		{"402000000 3803078f800d001 feefffdfffefffff fffffffffffffffe", 64, false},
		{"0", 64, false},
		{"", 64, false},
		{"zz 0", 64, false},
		// 32-bit longs: bit 116 is bit 20 of the fourth word from the right.
		{"100000 0 0 0", 32, true},
	} {
		if got := HasPowerKey(tc.caps, tc.bits); got != tc.want {
			t.Errorf("HasPowerKey(%q, %d) = %v, want %v", tc.caps, tc.bits, got, tc.want)
		}
	}
}

func TestWaitPowerKey(t *testing.T) {
	if err := WaitPowerKey(bytes.NewReader(powerKeyEvents())); err != nil {
		t.Errorf("WaitPowerKey: %v", err)
	}
	ev := powerKeyEvents()
	if err := WaitPowerKey(bytes.NewReader(ev[:len(ev)-inputEventSize])); err == nil {
		t.Error("WaitPowerKey without a press: no error")
	}
}
