package link_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"drawbridge/hw/link"
	"drawbridge/hw/link/linktest"
)

func TestNetlinkConformance(t *testing.T) {
	linktest.Run(t, func(t *testing.T) linktest.Target {
		p := linktest.NewPair(t)
		p.AddCard("dbcard0", netip.MustParsePrefix("198.18.1.2/24"))
		return linktest.Target{
			Link:    link.NewNetlinkAt(p.VaultHandle(), p.Vault),
			Iface:   p.VaultIf,
			Other:   "dbcard0",
			Addr:    linktest.VaultAddr,
			Gateway: linktest.SourceAddr.Addr(),
		}
	})
}

// TestNetlinkSeenFromSource checks what the other end of the cable sees:
// carrier and reachability only between Up and Down, and a clean interface
// after Down.
func TestNetlinkSeenFromSource(t *testing.T) {
	ctx := context.Background()
	p := linktest.NewPair(t)
	h := p.VaultHandle()
	l := link.NewNetlink(h)
	src := p.ListenSource()

	wantCarrier(t, p, false)
	if _, err := p.DialFromVault(src, 500*time.Millisecond); err == nil {
		t.Fatal("the vault reached the source before Up")
	}

	gw := linktest.SourceAddr.Addr()
	if err := l.Up(ctx, p.VaultIf, linktest.VaultAddr, gw); err != nil {
		t.Fatalf("Up: %v", err)
	}
	wantCarrier(t, p, true)
	if got := defaultGateways(t, h, p.VaultIf); len(got) != 1 || got[0] != gw {
		t.Fatalf("default routes via %v, want one via %v", got, gw)
	}
	greeting, err := p.DialFromVault(src, 5*time.Second)
	if err != nil || greeting != linktest.Greeting {
		t.Fatalf("vault to source %v after Up: %q, %v; want the greeting", src, greeting, err)
	}

	if err := l.Down(ctx, p.VaultIf); err != nil {
		t.Fatalf("Down: %v", err)
	}
	wantCarrier(t, p, false)
	up, addrs, err := l.State(p.VaultIf)
	if err != nil || up || len(addrs) != 0 {
		t.Fatalf("after Down: up=%v addrs=%v err=%v, want down without addresses", up, addrs, err)
	}
	out := p.IP(p.VaultNS, "-brief", "addr", "show", "dev", p.VaultIf)
	if f := strings.Fields(out); len(f) != 2 || f[1] != "DOWN" {
		t.Fatalf("ip addr show after Down: %q, want the interface DOWN without addresses", out)
	}
	if got := defaultGateways(t, h, p.VaultIf); len(got) != 0 {
		t.Fatalf("default routes via %v after Down, want none", got)
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.LinkIndex == ifIndex(t, h, p.VaultIf) {
			t.Fatalf("route %v through %s after Down", r, p.VaultIf)
		}
	}
	if _, err := p.DialFromVault(src, 500*time.Millisecond); err == nil {
		t.Fatal("the vault reached the source after Down")
	}
}

// TestNetlinkCurrentNamespace checks NewNetlink(nil), which works in the
// namespace of the calling thread, by calling it from a thread inside the
// vault namespace.
func TestNetlinkCurrentNamespace(t *testing.T) {
	p := linktest.NewPair(t)
	err := linktest.Do(p.Vault, func() error {
		l := link.NewNetlink(nil)
		if err := l.Up(context.Background(), p.VaultIf, linktest.VaultAddr, netip.Addr{}); err != nil {
			return err
		}
		return l.DownAll(context.Background())
	})
	if err != nil {
		t.Fatal(err)
	}
	// The vault end went up and down again; the source saw it go.
	wantCarrier(t, p, false)
	up, addrs, err := link.NewNetlink(p.VaultHandle()).State(p.VaultIf)
	if err != nil || up || len(addrs) != 0 {
		t.Fatalf("after DownAll: up=%v addrs=%v err=%v", up, addrs, err)
	}
}

func wantCarrier(t *testing.T, p *linktest.Pair, want bool) {
	t.Helper()
	// Carrier follows the peer's state a moment later.
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := p.Carrier()
		if err != nil {
			t.Fatal(err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("source side sees carrier=%v, want %v", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func defaultGateways(t *testing.T, h *netlink.Handle, name string) []netip.Addr {
	t.Helper()
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
			a, _ := netip.AddrFromSlice(r.Gw)
			out = append(out, a.Unmap())
		}
	}
	return out
}

func ifIndex(t *testing.T, h *netlink.Handle, name string) int {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}
