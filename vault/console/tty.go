package console

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gdamore/tcell/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Terminal types of the appliance's consoles.
const (
	// TermVT is for the virtual terminals (/dev/tty1…): the kernel's own
	// console, with colours.
	TermVT = "linux"
	// TermSerial is for serial lines. Whatever is at the other end (a
	// terminal server, minicom or screen in some terminal, a real VT, tmux)
	// understands the DEC VT220 subset: cursor addressing, erase, bold and
	// reverse video, hiding the cursor. vt100's description asks for
	// padding delays after every cursor move, which tcell turns into sleeps
	// (a redraw would take a second); xterm and ansi assume colours, mouse
	// reporting and an alternate screen that a bare serial terminal may not
	// have. Nothing the console shows needs colour.
	TermSerial = "vt220"
)

// Environment variables that override the defaults.
const (
	EnvSerialTerm = "DRAWBRIDGE_SERIAL_TERM"  // the terminal type of serial lines
	EnvSize       = "DRAWBRIDGE_CONSOLE_SIZE" // COLSxROWS of a line that does not report its size
)

// DefaultSize is the size of a terminal that reports none (a serial line
// reports 0x0): the size every serial terminal has.
var DefaultSize = tcell.WindowSize{Width: 80, Height: 24}

var vtName = regexp.MustCompile(`^/dev/tty[0-9]+$`)

// TermFor is the terminal type of device dev: TermVT for a virtual
// terminal, else the serial one, EnvSerialTerm when set.
func TermFor(dev string, getenv func(string) string) string {
	if vtName.MatchString(filepath.Clean(dev)) {
		return TermVT
	}
	if t := getenv(EnvSerialTerm); t != "" {
		return t
	}
	return TermSerial
}

// ParseSize reads COLSxROWS.
func ParseSize(s string) (tcell.WindowSize, error) {
	c, r, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "x")
	w, err1 := strconv.Atoi(c)
	h, err2 := strconv.Atoi(r)
	if !ok || err1 != nil || err2 != nil || w < 20 || h < 8 || w > 1000 || h > 1000 {
		return tcell.WindowSize{}, fmt.Errorf("%q: expected COLSxROWS, e.g. 132x43", s)
	}
	return tcell.WindowSize{Width: w, Height: h}, nil
}

// OpenTTY opens the terminal device dev (/dev/ttyS0, /dev/tty1) as a tcell
// screen for Run, with the terminal type TermFor gives. A line that reports
// no size gets EnvSize's, else DefaultSize.
func OpenTTY(dev string, getenv func(string) string) (tcell.Screen, error) {
	size := DefaultSize
	if s := getenv(EnvSize); s != "" {
		var err error
		if size, err = ParseSize(s); err != nil {
			return nil, fmt.Errorf("%s: %w", EnvSize, err)
		}
	}
	name := TermFor(dev, getenv)
	ti, err := tcell.LookupTerminfo(name)
	if err != nil {
		return nil, fmt.Errorf("console on %s: terminal type %s: %w", dev, name, err)
	}
	// Opened once, without becoming the daemon's controlling terminal.
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("console on %s: %w", dev, err)
	}
	if !term.IsTerminal(int(f.Fd())) {
		f.Close()
		return nil, fmt.Errorf("console on %s: not a terminal", dev)
	}
	scr, err := tcell.NewTerminfoScreenFromTtyTerminfo(&lineTty{f: f, fallback: size}, ti)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("console on %s: %w", dev, err)
	}
	return scr, nil
}

// lineTty is a terminal line as tcell uses it: one descriptor, opened
// without becoming a controlling terminal and closed with the screen (the
// daemon restarts its consoles, and each start must not leave a descriptor
// behind), whose size falls back to a fixed one when the line reports none.
// Resizes come only from that size: the daemon gets no SIGWINCH.
type lineTty struct {
	f        *os.File
	fallback tcell.WindowSize
	saved    *term.State
}

func (t *lineTty) Read(b []byte) (int, error)  { return t.f.Read(b) }
func (t *lineTty) Write(b []byte) (int, error) { return t.f.Write(b) }
func (t *lineTty) Close() error                { return t.f.Close() }
func (t *lineTty) NotifyResize(func())         {}

// Start puts the line in raw mode, saving its state for Stop.
func (t *lineTty) Start() error {
	t.f.SetReadDeadline(time.Time{})
	saved, err := term.MakeRaw(int(t.f.Fd()))
	if err != nil {
		return err
	}
	t.saved = saved
	return nil
}

// Drain wakes a blocked Read.
func (t *lineTty) Drain() error { return t.f.SetReadDeadline(time.Now()) }

// Stop gives the line back its state.
func (t *lineTty) Stop() error {
	t.f.SetReadDeadline(time.Now())
	if t.saved == nil {
		return nil
	}
	return term.Restore(int(t.f.Fd()), t.saved)
}

func (t *lineTty) WindowSize() (tcell.WindowSize, error) {
	ws, err := unix.IoctlGetWinsize(int(t.f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 || ws.Row == 0 {
		return t.fallback, nil
	}
	return tcell.WindowSize{Width: int(ws.Col), Height: int(ws.Row)}, nil
}
