package console

import (
	"io"
	"testing"

	"github.com/gdamore/tcell/v2"
	"golang.org/x/sys/unix"

	"drawbridge/vault/console/termtest"
	"drawbridge/vault/internal/fixture"
)

// TestOpenTTYSize: a line that reports no size (a new pty, like a serial
// line) gets 80x24 or DRAWBRIDGE_CONSOLE_SIZE; one that reports its size
// keeps it.
func TestOpenTTYSize(t *testing.T) {
	for _, c := range []struct {
		name         string
		env          string
		set          *unix.Winsize
		wantW, wantH int
	}{
		{"no size", "", nil, 80, 24},
		{"no size, env", "100x30", nil, 100, 30},
		{"its own size", "100x30", &unix.Winsize{Col: 120, Row: 40}, 120, 40},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, slave := termtest.PTY(t)
			go io.Copy(io.Discard, m)
			if c.set != nil {
				if err := unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, c.set); err != nil {
					t.Fatal(err)
				}
			}
			scr, err := OpenTTY(slave, func(k string) string {
				if k == EnvSize {
					return c.env
				}
				return ""
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := scr.Init(); err != nil {
				t.Fatal(err)
			}
			defer scr.Fini()
			if w, h := scr.Size(); w != c.wantW || h != c.wantH {
				t.Fatalf("size %dx%d, want %dx%d", w, h, c.wantW, c.wantH)
			}
		})
	}
	if _, err := OpenTTY("/dev/null", func(k string) string {
		if k == EnvSize {
			return "huge"
		}
		return ""
	}); err == nil {
		t.Fatal("a bad DRAWBRIDGE_CONSOLE_SIZE was accepted")
	}
}

// TestOpenTTYReleasesTheLine: keys typed on the line reach the screen, and
// a console started and stopped again and again (the daemon restarts a
// console that failed) leaves no descriptor of the line open.
func TestOpenTTYReleasesTheLine(t *testing.T) {
	m, slave := termtest.PTY(t)
	go io.Copy(io.Discard, m)
	for i := range 5 {
		scr, err := OpenTTY(slave, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		if err := scr.Init(); err != nil {
			t.Fatal(err)
		}
		m.Write([]byte{'a' + byte(i)})
		for {
			ev := scr.PollEvent()
			if k, ok := ev.(*tcell.EventKey); ok {
				if k.Rune() != rune('a'+i) {
					t.Fatalf("key %q, want %q", k.Rune(), rune('a'+i))
				}
				break
			}
		}
		scr.Fini()
	}
	if open := fixture.OpenUnder(slave); len(open) > 0 {
		t.Errorf("after five consoles, still open: %v", open)
	}
}
