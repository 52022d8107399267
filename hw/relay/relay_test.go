package relay

import (
	"context"
	"errors"
	"slices"
	"testing"
)

var _ Relay = (*Fake)(nil)

func TestFakeRecordsTransitions(t *testing.T) {
	ctx := context.Background()
	var f Fake
	if f.State() {
		t.Fatal("a new Fake is closed, want open (cable cut)")
	}
	if err := f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !f.State() {
		t.Fatal("after Close: open, want closed")
	}
	if err := f.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if f.State() {
		t.Fatal("after Open: closed, want open")
	}
	if got, want := f.Transitions(), []string{OpClose, OpOpen}; !slices.Equal(got, want) {
		t.Fatalf("transitions %q, want %q", got, want)
	}
}

func TestFakeOpensWithDoneContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var f Fake
	if err := f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := f.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close with a done ctx: %v, want context.Canceled", err)
	}
	if err := f.Open(ctx); err != nil {
		t.Fatalf("Open with a done ctx: %v, want the cable cut anyway", err)
	}
	if f.State() {
		t.Fatal("still closed after Open")
	}
}

func TestFakeHookFails(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("coil burnt out")
	var seen []string
	f := Fake{Hook: func(op string) error {
		seen = append(seen, op)
		if op == OpClose {
			return boom
		}
		return nil
	}}
	if err := f.Close(ctx); !errors.Is(err, boom) {
		t.Fatalf("Close: %v, want the hook's error", err)
	}
	if f.State() || len(f.Transitions()) != 0 {
		t.Fatalf("a failed Close changed the state: closed=%v transitions=%q", f.State(), f.Transitions())
	}
	if err := f.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{OpClose, OpOpen}; !slices.Equal(seen, want) {
		t.Fatalf("hook saw %q, want %q", seen, want)
	}
}
