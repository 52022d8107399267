package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"drawbridge/vault/pull"
)

// TestHeartbeat: the file is touched while the daemon waits between
// windows; a second daemon of the same boot journals daemon-restarted with
// the time the first was last alive, right after its start-up link-down.
func TestHeartbeat(t *testing.T) {
	r := newRig(t)
	hb := filepath.Join(t.TempDir(), "run", "heartbeat")
	r.o.Heartbeat, r.o.HeartbeatEvery = hb, 20*time.Millisecond
	r.o.After = time.After // real waits: the heartbeat runs in real time
	r.o.CheckEvery = 50 * time.Millisecond

	start := func() (context.CancelFunc, chan error) {
		d, err := New(r.o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		return cancel, done
	}
	cancel, done := start()
	waitFor(t, "the heartbeat file", 5*time.Second, func() bool { _, err := os.Stat(hb); return err == nil })
	fi, _ := os.Stat(hb)
	first := fi.ModTime()
	waitFor(t, "a fresher heartbeat", 5*time.Second, func() bool { fi, err := os.Stat(hb); return err == nil && fi.ModTime().After(first) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(ofType(records(t, r.s), RecordRestarted)) != 0 {
		t.Fatal("the first daemon of a boot journaled a restart")
	}
	fi, _ = os.Stat(hb)
	last := fi.ModTime()

	cancel, done = start()
	waitFor(t, "the restart record", 5*time.Second, func() bool { return len(ofType(records(t, r.s), RecordRestarted)) == 1 })
	cancel()
	<-done
	recs := records(t, r.s)
	for i, rec := range recs {
		if rec.Type != RecordRestarted {
			continue
		}
		if recs[i-1].Type != "link-down" {
			t.Errorf("daemon-restarted follows %s, want the start-up link-down", recs[i-1].Type)
		}
		m := data(t, rec)
		if m["last_alive"] != last.UTC().Format(time.RFC3339Nano) || !strings.Contains(rec.Message, stamp(last)) {
			t.Errorf("daemon-restarted %q %v, want last alive %s", rec.Message, m, last.UTC().Format(time.RFC3339Nano))
		}
	}
}

// TestResponsive: the heartbeat stops when the main loop overstays what it
// allows itself.
func TestResponsive(t *testing.T) {
	r := newRig(t)
	d, err := New(r.o)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	d.beat(phaseWaiting, time.Time{})
	if ok, why := d.responsive(now); !ok {
		t.Fatalf("waiting, just beaten: %s", why)
	}
	if ok, _ := d.responsive(now.Add(DefaultCheckEvery + loopSlack + time.Second)); ok {
		t.Fatal("a loop silent past CheckEvery and the slack counts as responsive")
	}
	d.enterWindow(r.clock.Now().Add(time.Hour))
	if ok, why := d.responsive(now.Add(59 * time.Minute)); !ok {
		t.Fatalf("inside a window before its deadline: %s", why)
	}
	if ok, _ := d.responsive(now.Add(time.Hour + r.o.Grace + loopSlack + time.Minute)); ok {
		t.Fatal("a window past its deadline, grace and slack counts as responsive")
	}
}

// TestWhileIdle: idle work is refused during a window and cancelled when
// one opens; a backup never waits for it.
func TestWhileIdle(t *testing.T) {
	r := newRig(t)
	r.o.After = time.After
	r.o.CheckEvery = 20 * time.Millisecond
	pulled := make(chan struct{})
	release := make(chan struct{})
	r.o.Pull = func(ctx context.Context) []pull.Result {
		close(pulled)
		<-release
		return nil
	}
	d, err := New(r.o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ran := false
	if err := d.WhileIdle(ctx, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("idle work between windows: ran %v, %v", ran, err)
	}
	running := make(chan struct{})
	idleErr := make(chan error, 1)
	go func() {
		idleErr <- d.WhileIdle(ctx, func(ctx context.Context) error {
			close(running)
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	<-running
	d.OpenNow(time.Minute)
	select {
	case err := <-idleErr:
		if !errors.Is(err, ErrWindowOpen) {
			t.Fatalf("idle work when a window opened: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle work not cancelled when a window opened")
	}
	<-pulled
	if err := d.WhileIdle(ctx, func(context.Context) error { t.Error("ran during a window"); return nil }); !errors.Is(err, ErrWindowOpen) {
		t.Fatalf("idle work during a window: %v", err)
	}
	close(release)
}

// TestConcurrentJournal: the daemon's records and another goroutine's (the
// console's) go through the one Journal, whose appends are serialised;
// the chain verifies. Run with -race.
func TestConcurrentJournal(t *testing.T) {
	r := newRig(t)
	d, err := New(r.o)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	const n = 40
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if g == 0 {
					d.journal("test-daemon", fmt.Sprint("daemon ", i), nil)
				} else if _, err := r.s.Journal().Append(r.s.Keys().Identity, r.clock.Now(), "test-console", fmt.Sprint("console ", i), nil); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	recs := records(t, r.s)
	if len(ofType(recs, "test-daemon")) != n || len(ofType(recs, "test-console")) != n {
		t.Fatalf("%d records", len(recs))
	}
	rep, err := r.s.Verify(context.Background(), nil, nil)
	if err != nil || rep.Damaged() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}
