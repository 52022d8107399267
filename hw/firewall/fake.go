package firewall

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Operations a Fake records.
const (
	OpOn  = "on"
	OpOff = "off"
)

// Fake is a Firewall that remembers whether it is on, with which rules, and
// every transition, for tests of callers. Its zero value is off and ready to
// use; it is safe for concurrent use.
type Fake struct {
	// Hook, when set, is called at the start of On and Off with OpOn or
	// OpOff; an error it returns fails the operation before it changes
	// anything.
	Hook func(op string) error

	mu    sync.Mutex
	on    bool
	rules Rules
	ops   []string
}

func (f *Fake) On(ctx context.Context, r Rules) error {
	if err := r.Check(); err != nil {
		return fmt.Errorf("firewall on: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("firewall on: %w", err)
	}
	if f.Hook != nil {
		if err := f.Hook(OpOn); err != nil {
			return fmt.Errorf("firewall on: %w", err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.on = true
	f.rules = Rules{Interface: r.Interface, Allow: slices.Clone(r.Allow), DHCP: r.DHCP}
	f.ops = append(f.ops, OpOn)
	return nil
}

func (f *Fake) Off(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("firewall off: %w", err)
	}
	if f.Hook != nil {
		if err := f.Hook(OpOff); err != nil {
			return fmt.Errorf("firewall off: %w", err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.on = false
	f.rules = Rules{}
	f.ops = append(f.ops, OpOff)
	return nil
}

// State reports whether the rules are on, and which.
func (f *Fake) State() (on bool, r Rules) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on, Rules{Interface: f.rules.Interface, Allow: slices.Clone(f.rules.Allow), DHCP: f.rules.DHCP}
}

// Transitions returns the operations that succeeded, oldest first.
func (f *Fake) Transitions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}
