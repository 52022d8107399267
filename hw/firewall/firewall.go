// Package firewall keeps the vault's stateful firewall for the time a window
// is open (DESIGN.md §5): the vault may open TCP connections to its
// configured sources on the window's interface, and receives nothing but
// the replies to connections it opened.
//
// The rules are one nftables table, inet drawbridge:
//
//	input   policy drop: accept lo; [DHCP: accept UDP 67 -> 68 in on the
//	        window's interface]; accept ct state established,related; drop
//	output  policy drop: accept lo; [DHCP: accept UDP 68 -> 67 out of the
//	        window's interface]; accept TCP to each source addr:port out
//	        of the window's interface with ct state new,established;
//	        accept ct state established,related; drop
//	forward policy drop: drop
//
// The DHCP rules are there only when Rules.DHCP is set, for a window whose
// address is leased: server addresses are not known in advance, and the
// answer to a broadcast DISCOVER is no conntrack reply, so both directions
// are matched by port alone.
//
// Invariants: On replaces the whole table in one nftables transaction, so
// there is never a moment with half a rule set or none; a failed On leaves
// what was there before; Off deletes the table and nothing else, and
// succeeds when there is no table.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
)

// TableName is the nftables table (family inet) that the firewall owns.
const TableName = "drawbridge"

// Rules say what a window lets through.
type Rules struct {
	Interface string           // the window's interface
	Allow     []netip.AddrPort // the configured sources' address and port (TCP)
	DHCP      bool             // the window's address is leased: let DHCPv4 through
}

// Firewall switches the window's rules on and off.
type Firewall interface {
	// On installs rules, replacing any that were on.
	On(ctx context.Context, r Rules) error
	// Off removes the rules.
	Off(ctx context.Context) error
}

var (
	// ErrInvalidRules is wrapped when Rules cannot be turned into a table.
	ErrInvalidRules = errors.New("invalid firewall rules")
	// ErrIPv6Unsupported is wrapped when a source has an IPv6 address.
	// IPv6 needs neighbour discovery let through, which the rules do not
	// do yet; refusing is better than a window that silently reaches no one.
	ErrIPv6Unsupported = errors.New("IPv6 sources are not supported yet")
)

// Check reports what is wrong with r, if anything.
func (r Rules) Check() error {
	if err := checkInterface(r.Interface); err != nil {
		return err
	}
	for _, a := range r.Allow {
		switch {
		case !a.Addr().IsValid():
			return fmt.Errorf("%w: source %v has no address", ErrInvalidRules, a)
		case a.Port() == 0:
			return fmt.Errorf("%w: source %v has port 0", ErrInvalidRules, a)
		case !a.Addr().Unmap().Is4():
			return fmt.Errorf("%w: source %v", ErrIPv6Unsupported, a)
		case a.Addr().Unmap().IsUnspecified() || a.Addr().Unmap().IsMulticast():
			return fmt.Errorf("%w: source %v is not a host address", ErrInvalidRules, a)
		}
	}
	return nil
}

func checkInterface(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: no interface", ErrInvalidRules)
	case s == "lo":
		return fmt.Errorf("%w: interface lo is always allowed, expected the window's interface", ErrInvalidRules)
	case len(s) > 15 || s == "." || s == ".." || strings.ContainsFunc(s, func(r rune) bool {
		return r == '/' || r == ':' || r == 0 || unicode.IsSpace(r) || unicode.IsControl(r)
	}):
		return fmt.Errorf("%w: %q is not an interface name", ErrInvalidRules, s)
	}
	return nil
}
