package console

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gdamore/tcell/v2"
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
