package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
)

// Console writes whole lines to the console, one writer at a time: steps,
// the watchdog, the power button and the service supervisor all report
// there, from their own goroutines.
type Console struct {
	mu sync.Mutex
	w  []io.Writer
}

// NewConsole returns a Console writing to w.
func NewConsole(w io.Writer) *Console { return &Console{w: []io.Writer{w}} }

// SetOutputs makes the console write each line to every w instead.
func (c *Console) SetOutputs(w ...io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w = w
}

// Printf writes one line (a trailing newline is added).
func (c *Console) Printf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	line = strings.TrimRight(line, "\n") + "\n"
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.w {
		io.WriteString(w, line) // a terminal that fails does not stop the others
	}
}

// Step is one named phase of the boot or of the shutdown.
type Step struct {
	Name string
	Run  func(ctx context.Context, log *Log) error
}

// Log is what a step writes to the console, each line prefixed with
// "drawbridge: PHASE: STEP: ".
type Log struct {
	c      *Console
	prefix string
}

// Printf writes one line about the step.
func (l *Log) Printf(format string, args ...any) {
	l.c.Printf("%s%s", l.prefix, fmt.Sprintf(format, args...))
}

// Warnf writes one warning line: something is missing or wrong, but the
// step goes on.
func (l *Log) Warnf(format string, args ...any) {
	l.c.Printf("%swarning: %s", l.prefix, fmt.Sprintf(format, args...))
}

// Skipped is returned by a step that had nothing to do; the runner reports
// it as "skipped: WHY" rather than "failed".
type Skipped string

func (s Skipped) Error() string { return string(s) }

// Result is the outcome of one step.
type Result struct {
	Name string
	Err  error // nil when the step succeeded; a Skipped when it was skipped
}

// Run runs the steps in order, whatever becomes of each: a step that fails
// or panics is reported on the console and the next step runs. Each step
// ends with one line: "drawbridge: PHASE: STEP: ok", "... skipped: WHY" or
// "... failed: WHY".
func Run(ctx context.Context, c *Console, phase string, steps []Step) []Result {
	results := make([]Result, 0, len(steps))
	for _, s := range steps {
		log := &Log{c: c, prefix: fmt.Sprintf("drawbridge: %s: %s: ", phase, s.Name)}
		err := runStep(ctx, s, log)
		var skip Skipped
		switch {
		case err == nil:
			c.Printf("%sok", log.prefix)
		case errors.As(err, &skip):
			c.Printf("%sskipped: %s", log.prefix, oneLine(skip.Error()))
		default:
			c.Printf("%sfailed: %s", log.prefix, oneLine(err.Error()))
		}
		results = append(results, Result{Name: s.Name, Err: err})
	}
	return results
}

// ErrPanic is wrapped by the error of a step that panicked.
var ErrPanic = errors.New("panic")

func runStep(ctx context.Context, s Step, log *Log) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, r)
			// The stack goes to the console too: a panic is a bug, and
			// the console is all there is to read on an appliance.
			for _, l := range strings.Split(strings.TrimSpace(string(debug.Stack())), "\n") {
				log.Printf("  %s", l)
			}
		}
	}()
	if s.Run == nil {
		return errors.New("step has nothing to run")
	}
	return s.Run(ctx, log)
}

// oneLine keeps an error on the step's line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
