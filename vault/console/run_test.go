package console

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gdamore/tcell/v2"

	"drawbridge/vault/journal"
)

// shownScreen keeps the text of each frame shown, for the test goroutine
// to read while the loop draws the next.
type shownScreen struct {
	tcell.SimulationScreen
	mu   sync.Mutex
	text string
}

func (s *shownScreen) Show() {
	s.SimulationScreen.Show()
	text := screenText(s.SimulationScreen)
	s.mu.Lock()
	s.text = text
	s.mu.Unlock()
}

func (s *shownScreen) shown() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.text
}

// TestRun drives the loop on a simulated terminal: the status screen, into
// the big directory of 100,000 entries, and out with q.
func TestRun(t *testing.T) {
	s := &shownScreen{SimulationScreen: tcell.NewSimulationScreen("UTF-8")}
	s.SetSize(100, 30)
	b := newFake(100_000)
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), s, b, Options{}) }()
	waitScreen := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			time.Sleep(10 * time.Millisecond)
			if strings.Contains(s.shown(), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("screen lacks %q:\n%s", want, s.shown())
			}
		}
	}
	key := func(k tcell.Key, r rune) { s.InjectKey(k, r, tcell.ModNone) }
	waitScreen("no daemon status")
	key(tcell.KeyEnter, 0)
	waitScreen("Sources")
	key(tcell.KeyEnter, 0)
	waitScreen("Snapshots of home")
	key(tcell.KeyEnter, 0)
	waitScreen("Passphrase:")
	for _, r := range "right" {
		key(tcell.KeyRune, r)
	}
	key(tcell.KeyEnter, 0)
	waitScreen("big/")
	key(tcell.KeyEnter, 0)
	waitScreen("100000 entries")
	key(tcell.KeyPgDn, 0)
	_, h := s.Size()
	waitScreen(fmt.Sprintf("%d/100000", h-6+1)) // a page is the screen less six rows
	for range 5 {                               // back to the root, the snapshots, the sources, the status; out
		key(tcell.KeyRune, 'q')
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("q did not leave:\n%s", s.shown())
	}
}

// BenchmarkPageDown100k is one PgDn and one frame in a directory of
// 100,000 entries.
func BenchmarkPageDown100k(b *testing.B) {
	fb := newFake(100_000)
	m := New(fb, Options{})
	drive(m, Resize{Width: 120, Height: 40})
	for _, c := range m.Init() {
		drive(m, c())
	}
	keys(m, "Enter", "Enter", "Enter")
	for _, r := range "right" {
		drive(m, Key{Name: "Rune", Rune: r})
	}
	keys(m, "Enter", "Enter")
	s := tcell.NewSimulationScreen("UTF-8")
	if err := s.Init(); err != nil {
		b.Fatal(err)
	}
	defer s.Fini()
	s.SetSize(120, 40)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%2000 == 0 {
			keys(m, "Home")
		}
		keys(m, "PgDn")
		Draw(s, m)
		s.Show()
	}
}

// slowJournal is a backend whose journal is large and slow to read.
type slowJournal struct {
	*fakeBackend
	n int
}

func (b slowJournal) ScanJournal(ctx context.Context, last func(uint64), fn func(journal.Record) error) error {
	last(uint64(b.n))
	for i := range b.n {
		if i%1000 == 0 {
			time.Sleep(time.Millisecond) // reading and checking records takes time
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(journal.Record{Seq: uint64(i + 1), Type: "snapshot", Message: "a record"}); err != nil {
			return err
		}
	}
	return nil
}

// TestJournalResponsive: while a journal of 300,000 records loads, keys
// move the selection at once; the time from a key to the frame showing it
// is logged, and must stay under the console's 200 ms.
func TestJournalResponsive(t *testing.T) {
	s := &shownScreen{SimulationScreen: tcell.NewSimulationScreen("UTF-8")}
	s.SetSize(100, 30)
	const n = 300_000
	b := slowJournal{newFake(1), n}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, s, b, Options{}) }()
	wait := func(re *regexp.Regexp) (time.Duration, string) {
		t.Helper()
		start := time.Now()
		for {
			if m := re.FindStringSubmatch(s.shown()); m != nil {
				return time.Since(start), m[1]
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("screen lacks %v:\n%s", re, s.shown())
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait(regexp.MustCompile(`(no daemon status)`))
	s.InjectKey(tcell.KeyRune, 'j', tcell.ModNone)
	wait(regexp.MustCompile(`reading record ([1-9]\d*) of`)) // the first records are in
	var worst time.Duration
	for range 20 {
		s.InjectKey(tcell.KeyHome, 0, tcell.ModNone)
		took, _ := wait(regexp.MustCompile(` (1)/\d+ `))
		worst = max(worst, took)
		s.InjectKey(tcell.KeyDown, 0, tcell.ModNone)
		took2, _ := wait(regexp.MustCompile(` (2)/\d+ `))
		worst = max(worst, took2)
	}
	took, _ := wait(regexp.MustCompile(`(300000 records)`))
	t.Logf("worst key to frame while loading: %s; the rest of the journal loaded %s later", worst, took)
	if worst > 200*time.Millisecond {
		t.Errorf("a key took %s to show", worst)
	}
	cancel()
	<-done
}

// TestRunTerminalGone: a terminal that stops giving input ends Run with an
// error, for the daemon to open it again.
func TestRunTerminalGone(t *testing.T) {
	s := &shownScreen{SimulationScreen: tcell.NewSimulationScreen("UTF-8")}
	s.SetSize(80, 24)
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), s, newFake(1), Options{Fixed: true}) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.shown(), "no daemon status") {
		if time.Now().After(deadline) {
			t.Fatalf("no status screen:\n%s", s.shown())
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.PostEvent(tcell.NewEventError(errors.New("input/output error")))
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "input/output error") {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run goes on without its terminal")
	}
}
