// Package link brings the vault's network interfaces up and down.
//
// The vault's link is down except inside a window (DESIGN.md §5): at boot
// every interface but loopback goes down with its addresses flushed; a
// window brings one configured interface up with a static address or one
// leased by DHCP (dhcp.go); the end of the window releases the lease, takes
// the interface down again and flushes its addresses and routes.
//
// Invariants kept by every implementation:
//   - Down and DownAll do their work even when ctx is already done: cutting
//     the link is never skipped because a caller gave up waiting.
//   - Up refuses a done ctx, and leaves the interface down when it fails
//     half-way.
//   - Loopback is never touched.
package link

import (
	"context"
	"errors"
	"net/netip"
)

// Link controls network interfaces.
type Link interface {
	// DownAll takes every interface but loopback down and flushes its
	// addresses.
	DownAll(ctx context.Context) error
	// Up gives interface name the address addr (replacing any it had),
	// brings it up and, when gw is valid, routes everything else through
	// gw. An invalid addr asks for DHCP (IPv4): Up obtains a lease, waiting
	// no longer than ctx allows, and uses its address, prefix and router;
	// gw must then be invalid. An implementation that cannot do DHCP fails
	// with ErrDHCPUnsupported. Either way a failed Up leaves the interface
	// down.
	Up(ctx context.Context, name string, addr netip.Prefix, gw netip.Addr) error
	// Down releases the interface's DHCP lease, if it has one (best
	// effort), takes interface name down and flushes its addresses and
	// routes.
	Down(ctx context.Context, name string) error
	// State reports whether interface name is administratively up, and its
	// addresses.
	State(name string) (up bool, addrs []netip.Prefix, err error)
}

var (
	// ErrDHCPUnsupported is wrapped by Up when asked for DHCP (an invalid
	// address) by a Link that cannot do DHCP there.
	ErrDHCPUnsupported = errors.New("dhcp not supported here: configure a static address")
	// ErrNoLease is wrapped by Up when no DHCP server gave a usable lease
	// before ctx was done.
	ErrNoLease = errors.New("no DHCP lease")
	// ErrNoInterface is wrapped when the named interface does not exist.
	ErrNoInterface = errors.New("no such network interface")
	// ErrLoopback is wrapped when asked to bring loopback up or down.
	ErrLoopback = errors.New("loopback is not a window's interface")
)

// checkUp validates Up's arguments the same way for every implementation.
func checkUp(name string, addr netip.Prefix, gw netip.Addr) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case name == "lo":
		return ErrLoopback
	case !addr.IsValid() && gw.IsValid():
		return errors.New("gateway " + gw.String() + " given with DHCP, which supplies the gateway")
	case !addr.IsValid():
		return nil
	case addr.Addr().Is4In6():
		return errors.New("address " + addr.String() + " is IPv4-mapped IPv6, expected it written as IPv4")
	case gw.IsValid() && gw.Unmap().Is4() != addr.Addr().Unmap().Is4():
		return errors.New("gateway " + gw.String() + " and address " + addr.String() + " are of different IP families")
	}
	return nil
}
