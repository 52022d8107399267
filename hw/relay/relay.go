// Package relay drives the optional relay that cuts the vault's network cable
// outside windows (DESIGN.md §5): open, the cable is cut; closed, it is
// connected.
//
// No relay board is attached to the machines Drawbridge is developed on, so
// the package holds only the interface its callers use and a fake for their
// tests. A driver for a real board implements Relay.
//
// Invariant for implementations: Open cuts the cable even when ctx is done,
// because cutting is what keeps the vault offline; Close (connecting) refuses
// a done ctx.
package relay

import (
	"context"
	"fmt"
	"sync"
)

// Relay is a switch in the network cable.
type Relay interface {
	// Open cuts the cable.
	Open(ctx context.Context) error
	// Close connects the cable.
	Close(ctx context.Context) error
	// State reports whether the cable is connected.
	State() (closed bool)
}

// Operations a Fake records.
const (
	OpOpen  = "open"
	OpClose = "close"
)

// Fake is a Relay that remembers its state and every transition, for tests
// of callers. It starts open. Its zero value is ready to use; it is safe for
// concurrent use.
type Fake struct {
	// Hook, when set, is called at the start of every Open and Close with
	// OpOpen or OpClose; an error it returns fails the operation and leaves
	// the state unchanged. Tests use it to record a global order of events
	// or to inject a failure.
	Hook func(op string) error

	mu     sync.Mutex
	closed bool
	ops    []string
}

// Open cuts the cable (it does so even when ctx is done).
func (f *Fake) Open(ctx context.Context) error {
	if err := f.hook(OpOpen); err != nil {
		return fmt.Errorf("open relay: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = false
	f.ops = append(f.ops, OpOpen)
	return nil
}

// Close connects the cable.
func (f *Fake) Close(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("close relay: %w", err)
	}
	if err := f.hook(OpClose); err != nil {
		return fmt.Errorf("close relay: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.ops = append(f.ops, OpClose)
	return nil
}

// State reports whether the cable is connected.
func (f *Fake) State() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Transitions returns the operations that succeeded, oldest first.
func (f *Fake) Transitions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ops...)
}

func (f *Fake) hook(op string) error {
	if f.Hook == nil {
		return nil
	}
	return f.Hook(op)
}
