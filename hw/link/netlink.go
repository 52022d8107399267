package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink is a Link that talks to the kernel over rtnetlink, in the network
// namespace its handle was opened in. It is safe for concurrent use.
type Netlink struct {
	h *netlink.Handle
	// ns is where DHCP's packet sockets are opened: an open handle, or
	// netns.None() for the calling thread's namespace.
	ns netns.NsHandle
	// dhcp is false when the namespace of h is not known, so that a lease
	// is never sought in some other namespace.
	dhcp bool

	mu     sync.Mutex
	leases map[string]*nclient4.Lease // by interface name
}

// NewNetlink returns a Link that works through h. A handle from
// netlink.NewHandleAt(ns) works in namespace ns whichever thread calls; a nil
// h works in the namespace of the calling thread, with a socket per request.
// The caller keeps ownership of h and closes it.
//
// DHCP needs sockets in the interface's namespace: with a nil h it works in
// the calling thread's; with a non-nil h, Up refuses DHCP with
// ErrDHCPUnsupported (NewNetlinkAt names the namespace).
func NewNetlink(h *netlink.Handle) *Netlink {
	if h == nil {
		return &Netlink{h: &netlink.Handle{}, ns: netns.None(), dhcp: true}
	}
	return &Netlink{h: h, ns: netns.None()}
}

// NewNetlinkAt returns a Link that works in network namespace ns through h,
// a handle opened in ns (netlink.NewHandleAt(ns)), whichever thread calls;
// DHCP works there too. The caller keeps ownership of h and ns, and keeps
// both open while the Link is used.
func NewNetlinkAt(h *netlink.Handle, ns netns.NsHandle) *Netlink {
	return &Netlink{h: h, ns: ns, dhcp: true}
}

// dumpRetries bounds retries of a dump the kernel reports as interrupted
// (the interface or address list changed while it was being read).
const dumpRetries = 5

func (n *Netlink) DownAll(ctx context.Context) error {
	links, err := retryDump(n.h.LinkList)
	if err != nil {
		return fmt.Errorf("take all interfaces down: list interfaces: %w", err)
	}
	var errs []error
	for _, l := range links {
		if isLoopback(l) {
			continue
		}
		if err := n.down(l); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("take all interfaces down: %w", err)
	}
	return nil
}

func (n *Netlink) Up(ctx context.Context, name string, addr netip.Prefix, gw netip.Addr) (err error) {
	if err := checkUp(name, addr, gw); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	l, err := n.byName(name)
	if err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	if isLoopback(l) {
		return fmt.Errorf("bring %s up: %w", name, ErrLoopback)
	}
	defer func() {
		if err != nil {
			// Half-way is not a state to leave the link in.
			if derr := n.down(l); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()

	// A lease from an earlier Up goes back while its address is still
	// there to send the release from.
	n.release(l)
	if !addr.IsValid() {
		return n.upDHCP(ctx, l)
	}
	// Start from a clean interface: whatever addresses it had (from an
	// earlier window or from someone else) go.
	if err := n.flushAddrs(l); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	a := &netlink.Addr{IPNet: ipNet(addr)}
	if addr.Addr().Is6() {
		// Duplicate address detection would hold the address back for a
		// second or more of a short window.
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("bring %s up: add address %s: %w", name, addr, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	if err := n.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: set up: %w", name, err)
	}
	if gw.IsValid() {
		// The route goes in after the link is up: the kernel refuses a
		// gateway it cannot reach through an up interface.
		if err := n.defaultRoute(l, gw); err != nil {
			return fmt.Errorf("bring %s up: %w", name, err)
		}
	}
	return nil
}

func (n *Netlink) defaultRoute(l netlink.Link, gw netip.Addr) error {
	gw = gw.Unmap()
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if gw.Is6() {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(dst), Gw: net.IP(gw.AsSlice())}
	if err := n.h.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

func (n *Netlink) Down(ctx context.Context, name string) error {
	l, err := n.byName(name)
	if err != nil {
		return fmt.Errorf("take %s down: %w", name, err)
	}
	if isLoopback(l) {
		return fmt.Errorf("take %s down: %w", name, ErrLoopback)
	}
	return n.down(l)
}

// down releases l's DHCP lease while l can still carry the release, takes
// l down, so that nothing more leaves through it, then flushes what is left
// of its configuration.
func (n *Netlink) down(l netlink.Link) error {
	name := l.Attrs().Name
	n.release(l)
	if err := n.h.LinkSetDown(l); err != nil {
		return fmt.Errorf("take %s down: %w", name, notFound(name, err))
	}
	if err := n.flushAddrs(l); err != nil {
		return fmt.Errorf("take %s down: %w", name, err)
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return n.h.RouteList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("take %s down: list routes: %w", name, err)
	}
	for i := range routes {
		// Going down removed most routes already; one that vanished
		// between the dump and now is not an error.
		if err := n.h.RouteDel(&routes[i]); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("take %s down: delete route %s: %w", name, routes[i], err)
		}
	}
	return nil
}

func (n *Netlink) flushAddrs(l netlink.Link) error {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return n.h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for i := range addrs {
		// EADDRNOTAVAIL: gone already (IPv6 addresses leave with the link).
		if err := n.h.AddrDel(l, &addrs[i]); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("delete address %s: %w", addrs[i].IPNet, err)
		}
	}
	return nil
}

func (n *Netlink) State(name string) (bool, []netip.Prefix, error) {
	l, err := n.byName(name)
	if err != nil {
		return false, nil, fmt.Errorf("state of %s: %w", name, err)
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return n.h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return false, nil, fmt.Errorf("state of %s: list addresses: %w", name, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return l.Attrs().Flags&net.FlagUp != 0, out, nil
}

func (n *Netlink) byName(name string) (netlink.Link, error) {
	l, err := n.h.LinkByName(name)
	if err != nil {
		return nil, notFound(name, err)
	}
	return l, nil
}

// notFound wraps ErrNoInterface around the ways the kernel and the netlink
// package say that an interface does not exist.
func notFound(name string, err error) error {
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("%w: %s", ErrNoInterface, name)
	}
	return err
}

func isLoopback(l netlink.Link) bool {
	return l.Attrs().Flags&net.FlagLoopback != 0 || l.Attrs().Name == "lo"
}

func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		v, err := dump()
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) || i == dumpRetries {
			return v, err
		}
	}
}
