package linktest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"drawbridge/hw/link"
)

// Target is one link.Link under test and what the suite may do with it.
type Target struct {
	Link    link.Link
	Iface   string       // a non-loopback interface, down and without addresses
	Other   string       // a second non-loopback interface, up with an address
	Addr    netip.Prefix // an address for Iface
	Gateway netip.Addr   // a gateway inside Addr's prefix
}

// Run is the conformance suite for link.Link implementations. newTarget
// is called once per subtest and returns a fresh target.
func Run(t *testing.T, newTarget func(t *testing.T) Target) {
	ctx := context.Background()

	t.Run("UpStateDown", func(t *testing.T) {
		tg := newTarget(t)
		wantState(t, tg.Link, tg.Iface, false)
		if err := tg.Link.Up(ctx, tg.Iface, tg.Addr, tg.Gateway); err != nil {
			t.Fatalf("Up: %v", err)
		}
		wantState(t, tg.Link, tg.Iface, true, tg.Addr)
		if err := tg.Link.Down(ctx, tg.Iface); err != nil {
			t.Fatalf("Down: %v", err)
		}
		wantState(t, tg.Link, tg.Iface, false)
		if err := tg.Link.Down(ctx, tg.Iface); err != nil {
			t.Fatalf("Down of a down interface: %v", err)
		}
	})

	t.Run("UpReplacesAddress", func(t *testing.T) {
		tg := newTarget(t)
		if err := tg.Link.Up(ctx, tg.Iface, tg.Addr, netip.Addr{}); err != nil {
			t.Fatalf("Up: %v", err)
		}
		next := netip.PrefixFrom(tg.Addr.Addr().Next(), tg.Addr.Bits())
		if err := tg.Link.Up(ctx, tg.Iface, next, tg.Gateway); err != nil {
			t.Fatalf("second Up: %v", err)
		}
		wantState(t, tg.Link, tg.Iface, true, next)
		_, addrs, _ := tg.Link.State(tg.Iface)
		if slices.Contains(addrs, tg.Addr) {
			t.Fatalf("addresses %v still hold the first Up's %v", addrs, tg.Addr)
		}
	})

	t.Run("DownAll", func(t *testing.T) {
		tg := newTarget(t)
		if err := tg.Link.Up(ctx, tg.Iface, tg.Addr, tg.Gateway); err != nil {
			t.Fatalf("Up: %v", err)
		}
		if tg.Other != "" {
			wantState(t, tg.Link, tg.Other, true)
		}
		if err := tg.Link.DownAll(ctx); err != nil {
			t.Fatalf("DownAll: %v", err)
		}
		wantState(t, tg.Link, tg.Iface, false)
		if tg.Other != "" {
			wantState(t, tg.Link, tg.Other, false)
		}
		up, addrs, err := tg.Link.State("lo")
		if err != nil || !up || !slices.Contains(addrs, netip.MustParsePrefix("127.0.0.1/8")) {
			t.Fatalf("loopback after DownAll: up=%v addrs=%v err=%v, want up with 127.0.0.1/8", up, addrs, err)
		}
	})

	t.Run("DHCPWithoutLease", func(t *testing.T) {
		tg := newTarget(t)
		// No DHCP server answers on a target's interface.
		short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer cancel()
		err := tg.Link.Up(short, tg.Iface, netip.Prefix{}, netip.Addr{})
		if !errors.Is(err, link.ErrDHCPUnsupported) && !errors.Is(err, link.ErrNoLease) {
			t.Fatalf("Up with DHCP and no server: %v, want ErrDHCPUnsupported or ErrNoLease", err)
		}
		wantState(t, tg.Link, tg.Iface, false)
		if err := tg.Link.Up(ctx, tg.Iface, netip.Prefix{}, tg.Gateway); err == nil {
			t.Fatal("Up with DHCP and a gateway succeeded")
		}
		wantState(t, tg.Link, tg.Iface, false)
	})

	t.Run("NoInterface", func(t *testing.T) {
		tg := newTarget(t)
		const name = "dbnone0"
		if err := tg.Link.Up(ctx, name, tg.Addr, netip.Addr{}); !errors.Is(err, link.ErrNoInterface) {
			t.Fatalf("Up: %v, want ErrNoInterface", err)
		}
		if err := tg.Link.Down(ctx, name); !errors.Is(err, link.ErrNoInterface) {
			t.Fatalf("Down: %v, want ErrNoInterface", err)
		}
		if _, _, err := tg.Link.State(name); !errors.Is(err, link.ErrNoInterface) {
			t.Fatalf("State: %v, want ErrNoInterface", err)
		}
	})

	t.Run("Loopback", func(t *testing.T) {
		tg := newTarget(t)
		if err := tg.Link.Up(ctx, "lo", tg.Addr, netip.Addr{}); !errors.Is(err, link.ErrLoopback) {
			t.Fatalf("Up lo: %v, want ErrLoopback", err)
		}
		if err := tg.Link.Down(ctx, "lo"); !errors.Is(err, link.ErrLoopback) {
			t.Fatalf("Down lo: %v, want ErrLoopback", err)
		}
		if up, _, err := tg.Link.State("lo"); err != nil || !up {
			t.Fatalf("loopback: up=%v err=%v, want up", up, err)
		}
	})

	t.Run("GatewayOfOtherFamily", func(t *testing.T) {
		tg := newTarget(t)
		err := tg.Link.Up(ctx, tg.Iface, tg.Addr, netip.IPv6Loopback())
		if err == nil {
			t.Fatal("Up with an IPv6 gateway for an IPv4 address succeeded")
		}
		wantState(t, tg.Link, tg.Iface, false)
	})

	t.Run("DoneContext", func(t *testing.T) {
		tg := newTarget(t)
		if err := tg.Link.Up(ctx, tg.Iface, tg.Addr, tg.Gateway); err != nil {
			t.Fatalf("Up: %v", err)
		}
		done, cancel := context.WithCancel(ctx)
		cancel()
		if err := tg.Link.Down(done, tg.Iface); err != nil {
			t.Fatalf("Down with a done ctx: %v, want the link cut anyway", err)
		}
		wantState(t, tg.Link, tg.Iface, false)
		if err := tg.Link.Up(done, tg.Iface, tg.Addr, tg.Gateway); !errors.Is(err, context.Canceled) {
			t.Fatalf("Up with a done ctx: %v, want context.Canceled", err)
		}
		wantState(t, tg.Link, tg.Iface, false)
		if err := tg.Link.Up(ctx, tg.Iface, tg.Addr, tg.Gateway); err != nil {
			t.Fatalf("Up: %v", err)
		}
		if err := tg.Link.DownAll(done); err != nil {
			t.Fatalf("DownAll with a done ctx: %v, want the link cut anyway", err)
		}
		wantState(t, tg.Link, tg.Iface, false)
	})
}

// wantState checks that an interface is up or down; a down interface must
// have no addresses, an up one must have at least want.
func wantState(t *testing.T, l link.Link, name string, up bool, want ...netip.Prefix) {
	t.Helper()
	gotUp, addrs, err := l.State(name)
	if err != nil {
		t.Fatalf("State(%s): %v", name, err)
	}
	if gotUp != up {
		t.Fatalf("%s: up=%v, want %v (addresses %v)", name, gotUp, up, addrs)
	}
	if !up && len(addrs) > 0 {
		t.Fatalf("%s is down but has addresses %v", name, addrs)
	}
	for _, w := range want {
		if !slices.Contains(addrs, w) {
			t.Fatalf("%s: addresses %v, want %v among them", name, addrs, w)
		}
	}
}
