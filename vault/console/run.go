package console

import (
	"context"
	"fmt"
	"time"

	"github.com/gdamore/tcell/v2"
)

// tickEvery turns the spinner and refreshes progress.
const tickEvery = 100 * time.Millisecond

// Run shows the console on s until the person quits or ctx ends, or the
// terminal fails (an error). It owns s: it initialises it and restores the
// terminal before returning.
func Run(ctx context.Context, s tcell.Screen, b Backend, o Options) error {
	if err := s.Init(); err != nil {
		return fmt.Errorf("open the terminal: %w", err)
	}
	defer s.Fini()
	m := New(b, o)
	m.Width, m.Height = s.Size()

	msgs := make(chan Msg, 64)
	quit := make(chan struct{})
	defer close(quit)
	events := make(chan tcell.Event, 64)
	go s.ChannelEvents(events, quit)
	start := func(cmds []Cmd) {
		for _, c := range cmds {
			go func() {
				msg := c()
				select {
				case msgs <- msg:
				case <-quit:
				}
			}()
		}
	}
	start(m.Init())
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	lastW, lastH := s.Size()
	for {
		s.HideCursor()
		Draw(s, m)
		s.Show()
		var msg Msg
		select {
		case <-ctx.Done():
			m.quit()
			return nil
		case ev := <-events:
			switch ev := ev.(type) {
			case *tcell.EventKey:
				msg = keyOf(ev)
			case *tcell.EventResize:
				// A serial line that reports no size sends a resize
				// event at each check of it: repaint all only on a
				// real change, or every frame crosses the line whole.
				w, h := ev.Size()
				if w == lastW && h == lastH {
					continue
				}
				lastW, lastH = w, h
				msg = Resize{w, h}
				s.Sync()
			case *tcell.EventError:
				// The terminal stopped giving input (a serial line hung
				// up): nothing more can be read from it.
				m.quit()
				return fmt.Errorf("read the terminal: %w", ev)
			}
		case msg = <-msgs:
		case <-tick.C:
			msg = Tick{}
		}
		if msg == nil {
			continue
		}
		start(m.Update(msg))
		if m.Quit {
			return nil
		}
	}
}

var keyNames = map[tcell.Key]string{
	tcell.KeyEnter: "Enter", tcell.KeyEscape: "Esc", tcell.KeyUp: "Up", tcell.KeyDown: "Down",
	tcell.KeyLeft: "Left", tcell.KeyRight: "Right", tcell.KeyPgUp: "PgUp", tcell.KeyPgDn: "PgDn",
	tcell.KeyHome: "Home", tcell.KeyEnd: "End", tcell.KeyBackspace: "Backspace",
	tcell.KeyBackspace2: "Backspace", tcell.KeyTab: "Tab", tcell.KeyCtrlC: "Ctrl-C",
}

func keyOf(ev *tcell.EventKey) Msg {
	if ev.Key() == tcell.KeyRune {
		return Key{Name: "Rune", Rune: ev.Rune()}
	}
	if n, ok := keyNames[ev.Key()]; ok {
		return Key{Name: n}
	}
	return nil
}
