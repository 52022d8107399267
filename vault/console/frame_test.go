package console

import (
	"sync/atomic"
	"testing"
	"time"

	"drawbridge/vault/console/termtest"
)

// TestRedrawSendsOnlyChanges: the status screen drawn again and again on a
// serial-like line (a pty that reports no size, vt220) sends next to
// nothing after the first frame; a full repaint at each tick would swamp a
// 115200-baud line.
func TestRedrawSendsOnlyChanges(t *testing.T) {
	m, slave := termtest.PTY(t)
	var sent atomic.Int64
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, err := m.Read(buf)
			sent.Add(int64(k))
			if err != nil {
				return
			}
		}
	}()
	s, err := OpenTTY(slave, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	defer s.Fini()
	model := New(newFake(10), Options{})
	for _, c := range model.Init() {
		model.Update(c())
	}
	frame := func() {
		s.HideCursor()
		Draw(s, model)
		s.Show()
	}
	frame()
	time.Sleep(300 * time.Millisecond)
	first := sent.Load()
	const frames = 20
	for range frames {
		frame()
	}
	time.Sleep(300 * time.Millisecond)
	again := sent.Load() - first
	t.Logf("first frame %d bytes, %d more frames of the same screen %d bytes", first, frames, again)
	if first < 200 {
		t.Fatalf("the first frame sent only %d bytes", first)
	}
	if again > frames*16 {
		t.Errorf("%d unchanged frames sent %d bytes: the screen is repainted whole", frames, again)
	}
}
