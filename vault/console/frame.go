package console

import "github.com/gdamore/tcell/v2"

// frame collects one Draw and hands it to the screen once, every cell
// written a single time: what was not drawn is blank. Clearing the screen
// before drawing would not do: tcell marks a cell for sending whenever its
// content changes, even back to what the terminal already shows, so each
// frame (ten a second) crossed the serial line whole.
type frame struct {
	tcell.Screen
	w, h  int
	cells []frameCell
}

type frameCell struct {
	r  rune
	st tcell.Style
}

func newFrame(s tcell.Screen) *frame {
	w, h := s.Size()
	f := &frame{Screen: s, w: w, h: h, cells: make([]frameCell, w*h)}
	for i := range f.cells {
		f.cells[i] = frameCell{' ', tcell.StyleDefault}
	}
	return f
}

// SetContent records the cell; flush sends it.
func (f *frame) SetContent(x, y int, r rune, _ []rune, st tcell.Style) {
	if x >= 0 && y >= 0 && x < f.w && y < f.h {
		f.cells[y*f.w+x] = frameCell{r, st}
	}
}

// flush writes every cell to the screen, which sends only the changed ones
// at its next Show.
func (f *frame) flush() {
	for i, c := range f.cells {
		f.Screen.SetContent(i%f.w, i/f.w, c.r, nil, c.st)
	}
}
