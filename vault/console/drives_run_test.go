package console

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/gdamore/tcell/v2"
)

// TestDrivesResponsive: while listing the drives takes 1.5 s each time (a
// drive that hangs), keys move the selection in the drive list at once;
// the worst time from a key to the frame showing it must stay under the
// console's 200 ms.
func TestDrivesResponsive(t *testing.T) {
	s := &shownScreen{SimulationScreen: tcell.NewSimulationScreen("UTF-8")}
	s.SetSize(100, 30)
	dr := &fakeDrives{listDelay: 1500 * time.Millisecond}
	dr.set(stick, blank)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, s, driveBackend{newFake(1), dr}, Options{}) }()
	wait := func(re *regexp.Regexp, within time.Duration) (time.Duration, string) {
		t.Helper()
		start := time.Now()
		for {
			if m := re.FindStringSubmatch(s.shown()); m != nil {
				return time.Since(start), m[1]
			}
			if time.Since(start) > within {
				t.Fatalf("after %s the screen lacks %v:\n%s", within, re, s.shown())
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait(regexp.MustCompile(`(no daemon status)`), 5*time.Second)
	s.InjectKey(tcell.KeyRune, 'u', tcell.ModNone)
	if took, _ := wait(regexp.MustCompile(`(looking for drives)`), 5*time.Second); took > 200*time.Millisecond {
		t.Errorf("the drive list took %s to open", took)
	}
	wait(regexp.MustCompile(`\| > (sdb) SanDisk`), 5*time.Second)
	var worst time.Duration
	for range 10 {
		s.InjectKey(tcell.KeyDown, 0, tcell.ModNone)
		took, _ := wait(regexp.MustCompile(`\| >\s+(sdb1) `), 5*time.Second)
		worst = max(worst, took)
		s.InjectKey(tcell.KeyUp, 0, tcell.ModNone)
		took, _ = wait(regexp.MustCompile(`\| > (sdb) SanDisk`), 5*time.Second)
		worst = max(worst, took)
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("worst key to frame while the drives are listed: %s", worst)
	if worst > 200*time.Millisecond {
		t.Errorf("a key took %s to show", worst)
	}
	cancel()
	<-done
}

// TestDrivesFixedCtrlC: on the appliance's console Ctrl-C leaves the
// drive screens, stopping a restore that runs, for the status screen.
func TestDrivesFixedCtrlC(t *testing.T) {
	h := newDH(t)
	h.m.o.Fixed = true
	h.dr.set(stick)
	h.toHosts()
	h.keys("r", "Down")
	h.dr.hold, h.dr.running = make(chan struct{}), make(chan struct{})
	cmds := h.m.Update(Key{Name: "Enter"})
	res := make(chan Msg)
	go func() { res <- cmds[0]() }()
	<-h.dr.running
	h.keys("Ctrl-C")
	if h.d.open() || h.m.screen != ScreenStatus || h.m.reader != nil {
		t.Fatalf("Ctrl-C: open %v screen %v", h.d.open(), h.m.screen)
	}
	h.send(<-res) // the stopped restore ends, and is journaled
	if !h.journaled(RecordRestoreDrive) || h.d.open() {
		t.Fatalf("the stopped restore: journal %v open %v", h.b.journal, h.d.open())
	}
	h.keys("u")
	if h.d.stage != dsList || h.d.purpose != forLook {
		t.Fatalf("u after Ctrl-C: stage %v", h.d.stage)
	}
}
