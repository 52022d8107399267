package link_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"drawbridge/hw/link"
	"drawbridge/hw/link/linktest"
)

var (
	_ link.Link = (*link.Fake)(nil)
	_ link.Link = (*link.Netlink)(nil)
)

func TestFakeConformance(t *testing.T) {
	linktest.Run(t, func(t *testing.T) linktest.Target {
		f := link.NewFake("eth0", "eth1")
		f.SetState("eth1", true, netip.MustParsePrefix("198.18.1.2/24"))
		return linktest.Target{
			Link:    f,
			Iface:   "eth0",
			Other:   "eth1",
			Addr:    linktest.VaultAddr,
			Gateway: linktest.SourceAddr.Addr(),
		}
	})
}

func TestFakeHook(t *testing.T) {
	ctx := context.Background()
	f := link.NewFake("eth0")
	boom := errors.New("cable chewed")
	var ops []string
	f.Hook = func(op, name string) error {
		ops = append(ops, op+" "+name)
		if op == link.OpUp {
			return boom
		}
		return nil
	}
	if err := f.Up(ctx, "eth0", linktest.VaultAddr, netip.Addr{}); !errors.Is(err, boom) {
		t.Fatalf("Up: %v, want the hook's error", err)
	}
	if up, _, _ := f.State("eth0"); up {
		t.Fatal("a failed Up left eth0 up")
	}
	if err := f.Down(ctx, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := f.DownAll(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"up eth0", "down eth0", "down-all "}
	if len(ops) != len(want) {
		t.Fatalf("hook saw %q, want %q", ops, want)
	}
	for i := range want {
		if ops[i] != want[i] {
			t.Fatalf("hook saw %q, want %q", ops, want)
		}
	}
	f.Hook = nil
	gw := linktest.SourceAddr.Addr()
	if err := f.Up(ctx, "eth0", linktest.VaultAddr, gw); err != nil {
		t.Fatal(err)
	}
	if got := f.Gateway("eth0"); got != gw {
		t.Fatalf("gateway %v, want %v", got, gw)
	}
}
