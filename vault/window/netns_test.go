package window

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/hw/link/linktest"
	"drawbridge/hw/relay"
	"drawbridge/vault/internal/fixture"
)

// TestWindowInNamespaces runs a whole window with the real link and firewall
// inside a test namespace, watched from the source side, with a run that
// ignores its context and never returns: the link must still go down at the
// deadline.
func TestWindowInNamespaces(t *testing.T) {
	p := linktest.NewPair(t)
	if c, err := nftables.New(nftables.WithNetNSFd(int(p.Vault))); err != nil {
		fixture.Need(t, "the firewall needs kernel nftables support (CONFIG_NF_TABLES; modprobe nf_tables): "+err.Error())
	} else if _, err := c.ListTables(); err != nil {
		fixture.Need(t, "the firewall needs kernel nftables support (CONFIG_NF_TABLES; modprobe nf_tables): "+err.Error())
	}
	lk := link.NewNetlink(p.VaultHandle())
	src := p.ListenSource()
	vaultPort := p.ListenVault()
	ev := &events{}
	rl := &relay.Fake{}
	w := &Window{
		Clock:     NewClock(time.Now, time.Time{}),
		Link:      lk,
		Firewall:  firewall.NewNFTablesAt(p.Vault),
		Relay:     rl,
		Journal:   ev.journal,
		Interface: p.VaultIf,
		Address:   linktest.VaultAddr,
		Gateway:   linktest.SourceAddr.Addr(),
		Allow:     []netip.AddrPort{src},
		Grace:     300 * time.Millisecond,
	}

	// Before the window: down, as seen from both sides.
	if up, addrs, err := lk.State(p.VaultIf); err != nil || up || len(addrs) > 0 {
		t.Fatalf("vault interface before the window: up=%v addrs=%v err=%v", up, addrs, err)
	}
	if c, err := p.Carrier(); err != nil || c {
		t.Fatalf("source side sees carrier=%v (%v) before the window", c, err)
	}

	const length = 3 * time.Second
	deadline := time.Now().Add(length)
	checked := make(chan error, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	type result struct {
		res Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := w.Open(context.Background(), deadline, func(ctx context.Context) error {
			checked <- duringWindow(p, lk, src, vaultPort)
			<-release // ignores ctx: a pull stuck in a read without a timeout
			return nil
		})
		done <- result{res, err}
	}()

	if err := <-checked; err != nil {
		t.Fatal(err)
	}
	if time.Now().After(deadline) {
		t.Fatalf("the checks inside the window outlasted it (%v); make the window longer", length)
	}

	// Watch the vault end from the source side until it loses carrier.
	var downAfter time.Duration
	for {
		c, err := p.Carrier()
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if !c {
			downAfter = now.Sub(deadline)
			break
		}
		if now.Sub(deadline) > 5*time.Second {
			t.Fatal("the vault interface was still up 5s after the deadline")
		}
		time.Sleep(time.Millisecond)
	}
	if downAfter < 0 {
		t.Fatalf("the link went down %v before the deadline", -downAfter)
	}
	if downAfter > 2*time.Second {
		t.Fatalf("the link went down %v after the deadline, want within 2s", downAfter)
	}
	t.Logf("link down %v after the deadline, seen from the source side, with run still blocked", downAfter)

	r := <-done
	if !errors.Is(r.err, ErrRunStuck) || r.res.Reason != ReasonDeadline || !r.res.RunStuck {
		t.Fatalf("Open: %v, result %+v; want ErrRunStuck and reason %s", r.err, r.res, ReasonDeadline)
	}

	// After: down, no addresses, no routes, no table, relay open.
	if up, addrs, err := lk.State(p.VaultIf); err != nil || up || len(addrs) > 0 {
		t.Fatalf("vault interface after the window: up=%v addrs=%v err=%v", up, addrs, err)
	}
	vh := p.VaultHandle()
	l, err := vh.LinkByName(p.VaultIf)
	if err != nil {
		t.Fatal(err)
	}
	if routes, err := vh.RouteList(l, netlink.FAMILY_ALL); err != nil || len(routes) > 0 {
		t.Fatalf("routes through %s after the window: %v %v", p.VaultIf, routes, err)
	}
	c, _ := nftables.New(nftables.WithNetNSFd(int(p.Vault)))
	if tables, err := c.ListTables(); err != nil || len(tables) > 0 {
		t.Fatalf("nftables tables after the window: %d, %v", len(tables), err)
	}
	if got, want := rl.Transitions(), []string{relay.OpClose, relay.OpOpen}; !slices.Equal(got, want) {
		t.Fatalf("relay transitions %q, want %q", got, want)
	}
	var types []string
	for _, rec := range ev.records {
		types = append(types, rec.typ)
	}
	want := []string{RecordWindowOpen, RecordFirewallOn, RecordLinkUp, RecordLinkDown, RecordFirewallOff, RecordWindowClose}
	if !slices.Equal(types, want) {
		t.Fatalf("journal %q, want %q", types, want)
	}
	if ms, ok := ev.last(RecordLinkDown)["after_deadline_ms"].(float64); !ok || ms < 0 || ms > 2000 {
		t.Fatalf("link-down record says %v ms after the deadline", ev.last(RecordLinkDown)["after_deadline_ms"])
	} else {
		t.Logf("link-down record: %v ms after the deadline by the vault's clock", ms)
	}
}

// duringWindow checks the open window: the interface up with its address,
// the source reachable on the allowed port, the vault unreachable from the
// source.
func duringWindow(p *linktest.Pair, lk link.Link, src netip.AddrPort, vaultPort uint16) error {
	up, addrs, err := lk.State(p.VaultIf)
	if err != nil || !up || !slices.Contains(addrs, linktest.VaultAddr) {
		return errors.New("vault interface not up with its address during the window")
	}
	// Carrier follows a moment after the link comes up.
	for i := 0; ; i++ {
		c, err := p.Carrier()
		if err != nil {
			return err
		}
		if c {
			break
		}
		if i == 1000 {
			return errors.New("source side sees no carrier during the window")
		}
		time.Sleep(time.Millisecond)
	}
	got, err := p.DialFromVault(src, time.Second)
	if err != nil || got != linktest.Greeting {
		return errors.New("vault could not reach the source's allowed port during the window: " + errString(err))
	}
	for _, port := range []uint16{vaultPort, vaultPort + 1} {
		to := netip.AddrPortFrom(linktest.VaultAddr.Addr(), port)
		if _, err := p.DialFromSource(to, 500*time.Millisecond); !linktest.IsTimeout(err) {
			return errors.New("source to vault " + to.String() + ": " + errString(err) + ", want a timeout (dropped)")
		}
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
