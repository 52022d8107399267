package link_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/hw/link/linktest"
	"drawbridge/vault/fixture"
)

// The DHCP server's pool on the link of a Pair; its router is the source
// end.
var (
	poolFirst = netip.MustParseAddr("198.18.0.10")
	poolLast  = netip.MustParseAddr("198.18.0.20")
)

// dnsmasqPath returns the dnsmasq binary, or ends the test saying what to
// install.
func dnsmasqPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("dnsmasq"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/dnsmasq", "/sbin/dnsmasq"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	fixture.Need(t, "the DHCP tests need dnsmasq as their server (install dnsmasq-base)")
	return ""
}

func ipCmd(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"ip", "/usr/sbin/ip", "/sbin/ip"} {
		if q, err := exec.LookPath(p); err == nil {
			return q
		}
	}
	t.Fatal("ip not found")
	return ""
}

// startDNSMasq runs a DHCP server (no DNS) on the source end of p and
// returns its lease file. It stops with the test.
func startDNSMasq(t *testing.T, p *linktest.Pair) string {
	t.Helper()
	bin := dnsmasqPath(t)
	dir := t.TempDir()
	leases := filepath.Join(dir, "leases")
	cmd := exec.Command(ipCmd(t), "netns", "exec", p.SourceNS, bin,
		"--no-daemon", "--port=0", "--conf-file=/dev/null",
		"--interface="+p.SourceIf, "--bind-interfaces",
		"--dhcp-range="+poolFirst.String()+","+poolLast.String()+",255.255.255.0,2m",
		"--dhcp-option=option:router,"+linktest.SourceAddr.Addr().String(),
		"--dhcp-leasefile="+leases, "--pid-file="+filepath.Join(dir, "pid"),
		// No ping of an address before offering it: it costs seconds and
		// nothing else is on the link.
		"--no-ping", "--user=root", "--log-dhcp", "--log-facility=-")
	var out strings.Builder
	var mu sync.Mutex
	w := writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dnsmasq: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		mu.Lock()
		defer mu.Unlock()
		t.Logf("dnsmasq:\n%s", out.String())
	})
	return leases
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// firewallOn installs the window's rules with DHCP in the vault namespace,
// allowing the sources allow.
func firewallOn(t *testing.T, p *linktest.Pair, allow ...netip.AddrPort) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(p.Vault)))
	if err == nil {
		_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
	}
	if err != nil {
		fixture.Need(t, "the firewall needs kernel nftables support (CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET, CONFIG_NF_CONNTRACK): "+err.Error())
	}
	fw := firewall.NewNFTablesAt(p.Vault)
	if err := fw.On(context.Background(), firewall.Rules{Interface: p.VaultIf, Allow: allow, DHCP: true}); err != nil {
		t.Fatalf("firewall on: %v", err)
	}
	t.Cleanup(func() {
		if err := fw.Off(context.Background()); err != nil {
			t.Errorf("firewall off: %v", err)
		}
	})
}

// TestNetlinkDHCP leases the vault end's address from dnsmasq on the source
// end, through the window's firewall, and releases it at Down.
func TestNetlinkDHCP(t *testing.T) {
	p := linktest.NewPair(t)
	leases := startDNSMasq(t, p)
	src := p.ListenSource()
	firewallOn(t, p, src)
	h := p.VaultHandle()
	l := link.NewNetlinkAt(h, p.Vault)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := l.Up(ctx, p.VaultIf, netip.Prefix{}, netip.Addr{}); err != nil {
		t.Fatalf("Up with DHCP: %v", err)
	}
	t.Logf("leased in %v", time.Since(start).Round(time.Millisecond))
	up, all, err := l.State(p.VaultIf)
	var addrs []netip.Prefix
	for _, a := range all {
		if a.Addr().Is4() {
			addrs = append(addrs, a)
		}
	}
	if err != nil || !up || len(addrs) != 1 {
		t.Fatalf("after Up: up=%v addrs=%v err=%v, want up with one leased IPv4 address", up, all, err)
	}
	got := addrs[0]
	if got.Bits() != 24 || got.Addr().Less(poolFirst) || poolLast.Less(got.Addr()) {
		t.Fatalf("leased %v, want an address in %v-%v with prefix /24", got, poolFirst, poolLast)
	}
	if gws := defaultGateways(t, h, p.VaultIf); len(gws) != 1 || gws[0] != linktest.SourceAddr.Addr() {
		t.Fatalf("default routes via %v, want one via the leased router %v", gws, linktest.SourceAddr.Addr())
	}
	if b, err := os.ReadFile(leases); err != nil || !strings.Contains(string(b), " "+got.Addr().String()+" ") {
		t.Fatalf("dnsmasq's lease file %q (%v) does not hold %v", b, err, got.Addr())
	}
	// The lease carries the window's traffic.
	if greeting, err := p.DialFromVault(src, 5*time.Second); err != nil || greeting != linktest.Greeting {
		t.Fatalf("vault to source %v on the lease: %q, %v", src, greeting, err)
	}

	if err := l.Down(ctx, p.VaultIf); err != nil {
		t.Fatalf("Down: %v", err)
	}
	up, addrs, err = l.State(p.VaultIf)
	if err != nil || up || len(addrs) != 0 {
		t.Fatalf("after Down: up=%v addrs=%v err=%v, want down without addresses", up, addrs, err)
	}
	if gws := defaultGateways(t, h, p.VaultIf); len(gws) != 0 {
		t.Fatalf("default routes via %v after Down, want none", gws)
	}
	wantCarrier(t, p, false)
	// The release reached the server, which dropped the lease.
	wantReleased(t, leases, got.Addr(), "Down")

	// A static address in place of a lease gives the lease back too.
	if err := l.Up(ctx, p.VaultIf, netip.Prefix{}, netip.Addr{}); err != nil {
		t.Fatalf("second Up with DHCP: %v", err)
	}
	_, all, _ = l.State(p.VaultIf)
	if len(all) == 0 {
		t.Fatal("second Up with DHCP: no address")
	}
	if err := l.Up(ctx, p.VaultIf, linktest.VaultAddr, netip.Addr{}); err != nil {
		t.Fatalf("Up with a static address: %v", err)
	}
	wantReleased(t, leases, all[0].Addr(), "a static Up")
	if err := l.Down(ctx, p.VaultIf); err != nil {
		t.Fatalf("Down: %v", err)
	}
}

// wantReleased waits for dnsmasq to drop the lease of addr from its lease
// file.
func wantReleased(t *testing.T, leases string, addr netip.Addr, after string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		b, err := os.ReadFile(leases)
		if err == nil && !strings.Contains(string(b), " "+addr.String()+" ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq still holds the lease of %v after %s: %q (%v)", addr, after, b, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNetlinkDHCPNoAnswer: a server that hears the DISCOVERs but never
// answers. Up gives up when ctx is done and leaves the link down.
func TestNetlinkDHCPNoAnswer(t *testing.T) {
	p := linktest.NewPair(t)
	firewallOn(t, p)
	var conn *net.UDPConn
	err := linktest.Do(p.Source, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 67})
		return err
	})
	if err != nil {
		t.Fatalf("silent server: %v", err)
	}
	defer conn.Close()
	heard := make(chan netip.AddrPort, 16)
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case heard <- from:
			default:
			}
		}
	}()

	l := link.NewNetlinkAt(p.VaultHandle(), p.Vault)
	const wait = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	err = l.Up(ctx, p.VaultIf, netip.Prefix{}, netip.Addr{})
	took := time.Since(start)
	if !errors.Is(err, link.ErrNoLease) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Up with a silent server: %v, want ErrNoLease and the deadline", err)
	}
	if took > wait+time.Second {
		t.Fatalf("Up took %v with a %v timeout", took, wait)
	}
	select {
	case from := <-heard:
		if from.Port() != 68 {
			t.Fatalf("server heard from %v, want the client port 68", from)
		}
	default:
		t.Fatal("the server heard no DISCOVER")
	}
	up, addrs, err := l.State(p.VaultIf)
	if err != nil || up || len(addrs) != 0 {
		t.Fatalf("after a failed Up: up=%v addrs=%v err=%v, want down without addresses", up, addrs, err)
	}
	wantCarrier(t, p, false)
}

// TestNetlinkDHCPNeedsNamespace: a Netlink on a handle whose namespace it
// does not know refuses DHCP rather than look for a lease elsewhere.
func TestNetlinkDHCPNeedsNamespace(t *testing.T) {
	p := linktest.NewPair(t)
	l := link.NewNetlink(p.VaultHandle())
	err := l.Up(context.Background(), p.VaultIf, netip.Prefix{}, netip.Addr{})
	if !errors.Is(err, link.ErrDHCPUnsupported) {
		t.Fatalf("Up with DHCP: %v, want ErrDHCPUnsupported", err)
	}
	wantCarrier(t, p, false)
}
