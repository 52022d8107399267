package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"drawbridge/vault/units"
)

// bar draws a one-line progress bar (bytes, rate, ETA) on a terminal, and
// nothing when stderr is not one.
type bar struct {
	w      io.Writer
	label  string
	start  time.Time
	done   func() int64
	total  func() int64 // 0 while unknown
	extra  func() string
	stop   chan struct{}
	wg     sync.WaitGroup
	active bool
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func startBar(w io.Writer, quiet bool, label string, done, total func() int64, extra func() string) *bar {
	b := &bar{w: w, label: label, start: time.Now(), done: done, total: total, extra: extra, stop: make(chan struct{})}
	if quiet || !isTerminal(w) {
		return b
	}
	b.active = true
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.draw()
			}
		}
	}()
	return b
}

func (b *bar) draw() {
	done := b.done()
	var total int64
	if b.total != nil {
		total = b.total()
	}
	el := time.Since(b.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(done) / el
	}
	line := fmt.Sprintf("%s %s", b.label, units.Bytes(done))
	if total > 0 {
		frac := float64(done) / float64(total)
		if frac > 1 {
			frac = 1
		}
		const width = 24
		n := int(frac * width)
		line += fmt.Sprintf(" / %s %3.0f%% [%s%s]", units.Bytes(total), frac*100, strings.Repeat("=", n), strings.Repeat(" ", width-n))
		if rate > 0 && done < total {
			eta := time.Duration(float64(total-done) / rate * float64(time.Second))
			line += " ETA " + eta.Round(time.Second).String()
		}
	}
	line += fmt.Sprintf(" %s/s", units.Bytes(int64(rate)))
	if b.extra != nil {
		line += " " + b.extra()
	}
	fmt.Fprintf(b.w, "\r\033[K%s", line)
}

// finish stops the bar and clears its line.
func (b *bar) finish() {
	if !b.active {
		return
	}
	close(b.stop)
	b.wg.Wait()
	fmt.Fprint(b.w, "\r\033[K")
}
