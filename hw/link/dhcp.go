package link

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DHCP (IPv4) for a window's interface: Up with an invalid address leases
// one (DISCOVER, OFFER, REQUEST, ACK) over a packet socket bound to the
// interface, which works before the interface has an address; the lease is
// kept only for the window, so it is never renewed, and is released when the
// interface goes down.

const (
	// dhcpRetransmit is the first wait for an answer; it doubles after
	// each retransmission (RFC 2131 §4.1) until ctx is done.
	dhcpRetransmit = time.Second
	// maxDHCPWait bounds the search for a lease when ctx allows longer, so
	// that an Up without a deadline still returns.
	maxDHCPWait = 2 * time.Minute
)

// upDHCP is Up for an invalid address: l is brought up and given the
// leased address, prefix and default route. On an error the caller takes
// l down.
func (n *Netlink) upDHCP(ctx context.Context, l netlink.Link) error {
	name := l.Attrs().Name
	if !n.dhcp {
		return fmt.Errorf("bring %s up: %w: the netlink handle's network namespace is unknown (NewNetlinkAt names it)", name, ErrDHCPUnsupported)
	}
	if len(l.Attrs().HardwareAddr) != 6 {
		return fmt.Errorf("bring %s up: %w: the interface has no Ethernet address", name, ErrDHCPUnsupported)
	}
	ctx, cancel := context.WithTimeout(ctx, maxDHCPWait)
	defer cancel()

	if err := n.flushAddrs(l); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	// Up first: the exchange needs the link.
	if err := n.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: set up: %w", name, err)
	}
	if err := n.waitOperUp(ctx, l); err != nil {
		return fmt.Errorf("bring %s up: %w: %w", name, ErrNoLease, err)
	}
	c, err := n.dhcpClient(l)
	if err != nil {
		return fmt.Errorf("bring %s up: dhcp: %w", name, err)
	}
	// Replies broadcast: l has no address yet to receive unicast with.
	lease, err := c.Request(ctx, dhcpv4.WithBroadcast(true))
	c.Close()
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("bring %s up: %w: %w", name, ErrNoLease, cerr)
		}
		return fmt.Errorf("bring %s up: %w: %w", name, ErrNoLease, err)
	}
	addr, gw, err := leased(lease.ACK)
	if err != nil {
		return fmt.Errorf("bring %s up: %w: %w", name, ErrNoLease, err)
	}
	// From here on a failure takes l down, which releases the lease.
	n.mu.Lock()
	if n.leases == nil {
		n.leases = make(map[string]*nclient4.Lease)
	}
	n.leases[name] = lease
	n.mu.Unlock()

	if err := n.h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return fmt.Errorf("bring %s up: add leased address %s: %w", name, addr, err)
	}
	if gw.IsValid() {
		if err := n.defaultRoute(l, gw); err != nil {
			return fmt.Errorf("bring %s up: leased %w", name, err)
		}
	}
	return nil
}

// waitOperUp waits until the kernel has l ready to carry packets: until
// then (a carrier, and up to a second of the kernel's link watch after it)
// what is sent is dropped, and the first DISCOVER would be lost.
func (n *Netlink) waitOperUp(ctx context.Context, l netlink.Link) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		cur, err := n.h.LinkByIndex(l.Attrs().Index)
		if err != nil {
			return fmt.Errorf("link state: %w", notFound(l.Attrs().Name, err))
		}
		if st := cur.Attrs().OperState; st == netlink.OperUp || st == netlink.OperUnknown {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no carrier: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// leased reads the address, prefix and router of an ACK, refusing what
// cannot be an interface's address.
func leased(ack *dhcpv4.DHCPv4) (netip.Prefix, netip.Addr, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr)
	ip = ip.Unmap()
	if !ok || !ip.Is4() || !ip.IsGlobalUnicast() {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("leased address %v is not a unicast IPv4 address", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		// No subnet mask option: the address's class decides (RFC 2132 §3.3
		// makes the option optional).
		mask = net.IP(ip.AsSlice()).DefaultMask()
	}
	ones, bits := mask.Size()
	if bits != 32 {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("leased subnet mask %v is not an IPv4 netmask", mask)
	}
	addr := netip.PrefixFrom(ip, ones)
	var gw netip.Addr
	for _, r := range ack.Router() {
		a, ok := netip.AddrFromSlice(r)
		if a = a.Unmap(); ok && a.Is4() && a.IsGlobalUnicast() && a != ip {
			gw = a
			break
		}
	}
	return addr, gw, nil
}

// release sends a DHCPRELEASE for l's lease, if it has one, and forgets
// it. Best effort: the lease expires by itself anyway.
//
// The release goes out of an ordinary UDP socket bound to the leased
// address and to l, while l still has that address: a server's kernel
// drops a unicast packet from 0.0.0.0, which is all a packet socket
// without an address can send.
func (n *Netlink) release(l netlink.Link) {
	name := l.Attrs().Name
	n.mu.Lock()
	lease := n.leases[name]
	delete(n.leases, name)
	n.mu.Unlock()
	if lease == nil {
		return
	}
	var conn net.PacketConn
	err := n.inNS(func() (err error) {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, name)
			}); err != nil {
				return err
			}
			return serr
		}}
		local := &net.UDPAddr{IP: lease.ACK.YourIPAddr, Port: nclient4.ClientPort}
		conn, err = lc.ListenPacket(context.Background(), "udp4", local.String())
		return err
	})
	if err != nil {
		return
	}
	c, err := nclient4.NewWithConn(conn, l.Attrs().HardwareAddr)
	if err != nil {
		conn.Close()
		return
	}
	defer c.Close()
	c.Release(lease)
}

// dhcpClient returns a client whose packet socket is bound to l in l's
// namespace.
func (n *Netlink) dhcpClient(l netlink.Link) (*nclient4.Client, error) {
	var conn net.PacketConn
	err := n.inNS(func() (err error) {
		conn, err = nclient4.NewRawUDPConn(l.Attrs().Name, nclient4.ClientPort)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	c, err := nclient4.NewWithConn(conn, l.Attrs().HardwareAddr,
		nclient4.WithTimeout(dhcpRetransmit), nclient4.WithRetry(-1))
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// inNS runs fn in n's namespace: on a thread that enters it and leaves it
// again afterwards (a thread that cannot leave is thrown away), or on the
// calling thread when n works in the caller's namespace. A socket fn opens
// stays in that namespace.
func (n *Netlink) inNS(fn func() error) error {
	if !n.ns.IsOpen() {
		return fn()
	}
	return InNamespace(n.ns, fn)
}
