package firewall_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/hw/link/linktest"
	"drawbridge/vault/fixture"
)

var (
	_ firewall.Firewall = (*firewall.NFTables)(nil)
	_ firewall.Firewall = (*firewall.Fake)(nil)
)

func TestRulesCheck(t *testing.T) {
	src := netip.MustParseAddrPort("198.18.0.1:22")
	tests := []struct {
		name string
		r    firewall.Rules
		want error
	}{
		{"ok", firewall.Rules{Interface: "eth0", Allow: []netip.AddrPort{src}}, nil},
		{"no sources", firewall.Rules{Interface: "eth0"}, nil},
		{"mapped IPv4", firewall.Rules{Interface: "eth0", Allow: []netip.AddrPort{netip.MustParseAddrPort("[::ffff:198.18.0.1]:22")}}, nil},
		{"no interface", firewall.Rules{Allow: []netip.AddrPort{src}}, firewall.ErrInvalidRules},
		{"loopback", firewall.Rules{Interface: "lo"}, firewall.ErrInvalidRules},
		{"long name", firewall.Rules{Interface: "a23456789012345x"}, firewall.ErrInvalidRules},
		{"slash", firewall.Rules{Interface: "eth/0"}, firewall.ErrInvalidRules},
		{"port 0", firewall.Rules{Interface: "eth0", Allow: []netip.AddrPort{netip.AddrPortFrom(src.Addr(), 0)}}, firewall.ErrInvalidRules},
		{"no address", firewall.Rules{Interface: "eth0", Allow: []netip.AddrPort{{}}}, firewall.ErrInvalidRules},
		{"unspecified", firewall.Rules{Interface: "eth0", Allow: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:22")}}, firewall.ErrInvalidRules},
		{"IPv6", firewall.Rules{Interface: "eth0", Allow: []netip.AddrPort{netip.AddrPortFrom(netip.IPv6Loopback(), 22)}}, firewall.ErrIPv6Unsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Check()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Check: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestFake(t *testing.T) {
	ctx := context.Background()
	var f firewall.Fake
	r := firewall.Rules{Interface: "eth0", Allow: []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:22")}}
	if err := f.On(ctx, firewall.Rules{Interface: "lo"}); !errors.Is(err, firewall.ErrInvalidRules) {
		t.Fatalf("On with bad rules: %v", err)
	}
	if err := f.On(ctx, r); err != nil {
		t.Fatal(err)
	}
	if on, got := f.State(); !on || got.Interface != "eth0" || !slices.Equal(got.Allow, r.Allow) {
		t.Fatalf("State after On: %v %+v", on, got)
	}
	if err := f.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if on, _ := f.State(); on {
		t.Fatal("on after Off")
	}
	if got, want := f.Transitions(), []string{firewall.OpOn, firewall.OpOff}; !slices.Equal(got, want) {
		t.Fatalf("transitions %q, want %q", got, want)
	}
}

// requireNFTables skips (fails under CI) unless the kernel of the vault
// namespace speaks nftables.
func requireNFTables(t *testing.T, p *linktest.Pair) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(p.Vault)))
	if err == nil {
		_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
	}
	if err != nil {
		fixture.Need(t, "the firewall needs kernel nftables support (CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET, CONFIG_NF_CONNTRACK; modprobe nf_tables): "+err.Error())
	}
}

// TestNFTablesInNamespace checks the rules by their effect on real traffic
// between the two namespaces of a Pair.
func TestNFTablesInNamespace(t *testing.T) {
	ctx := context.Background()
	p := linktest.NewPair(t)
	requireNFTables(t, p)
	if err := link.NewNetlink(p.VaultHandle()).Up(ctx, p.VaultIf, linktest.VaultAddr, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	allowed := p.ListenSource()
	other := p.ListenSource()
	vaultSvc := netip.AddrPortFrom(linktest.VaultAddr.Addr(), p.ListenVault())
	vaultClosed := netip.AddrPortFrom(linktest.VaultAddr.Addr(), vaultSvc.Port()+1)

	// Without the firewall everything goes through, so what is refused
	// below is refused by the firewall.
	mustReach(t, "vault", allowed, p.DialFromVault)
	mustReach(t, "vault", other, p.DialFromVault)
	mustReach(t, "source", vaultSvc, p.DialFromSource)
	if _, err := p.DialFromSource(vaultClosed, 2*time.Second); err == nil || linktest.IsTimeout(err) {
		t.Fatalf("source to a closed vault port without firewall: %v, want refused", err)
	}

	fw := firewall.NewNFTablesAt(p.Vault)
	rules := firewall.Rules{Interface: p.VaultIf, Allow: []netip.AddrPort{allowed}}
	if err := fw.On(ctx, rules); err != nil {
		t.Fatalf("On: %v", err)
	}
	checkTable(t, p, true)

	mustReach(t, "vault", allowed, p.DialFromVault)
	if _, err := p.DialFromVault(other, time.Second); err == nil {
		t.Fatalf("vault reached %v, a port the rules do not allow", other)
	}
	for _, to := range []netip.AddrPort{vaultSvc, vaultClosed} {
		start := time.Now()
		_, err := p.DialFromSource(to, time.Second)
		if !linktest.IsTimeout(err) {
			t.Fatalf("source to vault %v with the firewall on: %v, want a timeout (dropped, not refused)", to, err)
		}
		t.Logf("source to vault %v: no answer (%v after %v)", to, err, time.Since(start).Round(time.Millisecond))
	}

	// On again replaces the rules.
	if err := fw.On(ctx, firewall.Rules{Interface: p.VaultIf, Allow: []netip.AddrPort{other}}); err != nil {
		t.Fatalf("second On: %v", err)
	}
	mustReach(t, "vault", other, p.DialFromVault)
	if _, err := p.DialFromVault(allowed, time.Second); err == nil {
		t.Fatalf("vault reached %v, which the replaced rules allowed", allowed)
	}

	// A rule set that fails its check leaves the installed one.
	if err := fw.On(ctx, firewall.Rules{Interface: "lo"}); !errors.Is(err, firewall.ErrInvalidRules) {
		t.Fatalf("On with bad rules: %v", err)
	}
	mustReach(t, "vault", other, p.DialFromVault)

	if err := fw.Off(ctx); err != nil {
		t.Fatalf("Off: %v", err)
	}
	checkTable(t, p, false)
	mustReach(t, "source", vaultSvc, p.DialFromSource)
	if err := fw.Off(ctx); err != nil {
		t.Fatalf("Off without a table: %v", err)
	}
}

// TestNFTablesCurrentNamespace checks NewNFTables, which works in the
// namespace of the calling thread, from a thread inside the vault
// namespace.
func TestNFTablesCurrentNamespace(t *testing.T) {
	p := linktest.NewPair(t)
	requireNFTables(t, p)
	err := linktest.Do(p.Vault, func() error {
		return firewall.NewNFTables().On(context.Background(), firewall.Rules{Interface: p.VaultIf})
	})
	if err != nil {
		t.Fatal(err)
	}
	checkTable(t, p, true)
	if err := linktest.Do(p.Vault, func() error { return firewall.NewNFTables().Off(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	checkTable(t, p, false)
}

func mustReach(t *testing.T, from string, to netip.AddrPort, dial func(netip.AddrPort, time.Duration) (string, error)) {
	t.Helper()
	got, err := dial(to, 5*time.Second)
	if err != nil {
		t.Fatalf("%s to %v: %v", from, to, err)
	}
	if from == "vault" && got != linktest.Greeting {
		t.Fatalf("%s to %v: read %q, want the source's greeting", from, to, got)
	}
}

// checkTable looks at the vault namespace's tables: with want, exactly the
// three chains of the design, each with policy drop.
func checkTable(t *testing.T, p *linktest.Pair, want bool) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(p.Vault)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, tb.Name)
	}
	if !want {
		if len(tables) != 0 {
			t.Fatalf("tables %q after Off, want none", names)
		}
		return
	}
	if len(tables) != 1 || tables[0].Name != firewall.TableName || tables[0].Family != nftables.TableFamilyINet {
		t.Fatalf("tables %q, want only inet %s", names, firewall.TableName)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ch := range chains {
		if ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			t.Errorf("chain %s: policy is not drop", ch.Name)
		}
		got = append(got, ch.Name)
	}
	slices.Sort(got)
	if want := []string{"forward", "input", "output"}; !slices.Equal(got, want) {
		t.Fatalf("chains %q, want %q", got, want)
	}
	// With the nft command at hand, show the rules as people read them.
	if nft, err := exec.LookPath("nft"); err == nil {
		out, err := p.Exec(p.VaultNS, nft, "list", "table", "inet", firewall.TableName)
		if err != nil {
			t.Fatalf("nft list: %v", err)
		}
		if !strings.Contains(out, "ct state established,related accept") {
			t.Errorf("nft list shows no established,related rule:\n%s", out)
		}
		t.Logf("nft list table inet %s:\n%s", firewall.TableName, out)
	}
}

// TestNFTablesDHCP checks the DHCP rules by their effect on UDP between the
// two namespaces of a Pair: with Rules.DHCP the vault's client port may send
// to a server port and hear from one; without it, neither; and no other
// UDP gets through either way. Each exchange uses its own source address,
// so that no conntrack entry of an earlier one lets it through.
func TestNFTablesDHCP(t *testing.T) {
	ctx := context.Background()
	p := linktest.NewPair(t)
	requireNFTables(t, p)
	if err := link.NewNetlink(p.VaultHandle()).Up(ctx, p.VaultIf, linktest.VaultAddr, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	servers := []netip.Addr{
		netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.4"),
		netip.MustParseAddr("198.18.0.5"), netip.MustParseAddr("198.18.0.6"),
		netip.MustParseAddr("198.18.0.7"),
	}
	for _, a := range servers {
		p.IP(p.SourceNS, "addr", "add", netip.PrefixFrom(a, 24).String(), "dev", p.SourceIf)
	}
	vault := netip.AddrPortFrom(linktest.VaultAddr.Addr(), 68)
	// send sends one datagram from one namespace to the other and reports
	// whether it arrived.
	send := func(fromNS, toNS netns.NsHandle, from, to netip.AddrPort) bool {
		t.Helper()
		var in, out *net.UDPConn
		if err := linktest.Do(toNS, func() (err error) {
			in, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(to))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		if err := linktest.Do(fromNS, func() (err error) {
			out, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(from), net.UDPAddrFromAddrPort(to))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		out.Write([]byte("dhcp"))
		in.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := in.Read(make([]byte, 16))
		return err == nil
	}
	fw := firewall.NewNFTablesAt(p.Vault)
	t.Cleanup(func() { fw.Off(ctx) })
	if err := fw.On(ctx, firewall.Rules{Interface: p.VaultIf}); err != nil {
		t.Fatal(err)
	}
	if send(p.Vault, p.Source, vault, netip.AddrPortFrom(servers[0], 67)) {
		t.Fatal("vault 68 -> server 67 went out without Rules.DHCP")
	}
	if send(p.Source, p.Vault, netip.AddrPortFrom(servers[1], 67), vault) {
		t.Fatal("server 67 -> vault 68 came in without Rules.DHCP")
	}
	if err := fw.On(ctx, firewall.Rules{Interface: p.VaultIf, DHCP: true}); err != nil {
		t.Fatal(err)
	}
	if !send(p.Vault, p.Source, vault, netip.AddrPortFrom(servers[2], 67)) {
		t.Fatal("vault 68 -> server 67 did not go out with Rules.DHCP")
	}
	if !send(p.Source, p.Vault, netip.AddrPortFrom(servers[3], 67), vault) {
		t.Fatal("server 67 -> vault 68 did not come in with Rules.DHCP")
	}
	if send(p.Vault, p.Source, netip.AddrPortFrom(vault.Addr(), 5353), netip.AddrPortFrom(servers[4], 67)) {
		t.Fatal("vault 5353 -> server 67 went out: only the client port may")
	}
	if send(p.Source, p.Vault, netip.AddrPortFrom(servers[4], 53), vault) {
		t.Fatal("server 53 -> vault 68 came in: only the server port may")
	}
}
