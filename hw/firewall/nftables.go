package firewall

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NFTables is a Firewall that programs the kernel's nftables over netlink.
// Each call opens its own netlink connection, so it is safe for concurrent
// use (the last On wins).
type NFTables struct {
	ns netns.NsHandle // the namespace to work in; netns.None(): the caller's
}

// NewNFTables returns a Firewall for the network namespace of the calling
// thread.
func NewNFTables() *NFTables { return &NFTables{ns: netns.None()} }

// NewNFTablesAt returns a Firewall for network namespace ns, whichever
// thread calls. The caller keeps ns open while the Firewall is used.
func NewNFTablesAt(ns netns.NsHandle) *NFTables { return &NFTables{ns: ns} }

func (f *NFTables) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if f.ns.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(f.ns)))
	}
	return nftables.New(opts...)
}

var table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

func (f *NFTables) On(ctx context.Context, r Rules) error {
	if err := r.Check(); err != nil {
		return fmt.Errorf("firewall on: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("firewall on: %w", err)
	}
	c, err := f.conn()
	if err != nil {
		return fmt.Errorf("firewall on: %w", err)
	}
	// Add, delete and add again: the delete cannot fail for lack of a
	// table, and the whole batch is one transaction, so the old rules are
	// replaced by the new ones in one step.
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	build(c, r)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall on: nftables: %w", err)
	}
	return nil
}

func (f *NFTables) Off(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("firewall off: %w", err)
	}
	c, err := f.conn()
	if err != nil {
		return fmt.Errorf("firewall off: %w", err)
	}
	c.AddTable(table)
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall off: nftables: %w", err)
	}
	return nil
}

// build queues the chains and rules of r; r has passed Check.
func build(c *nftables.Conn, r Rules) {
	drop := nftables.ChainPolicyDrop
	chain := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return c.AddChain(&nftables.Chain{
			Name:     name,
			Table:    table,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  hook,
			Priority: nftables.ChainPriorityFilter,
			Policy:   &drop,
		})
	}
	rule := func(ch *nftables.Chain, parts ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: slices.Concat(parts...)})
	}

	in := chain("input", nftables.ChainHookInput)
	rule(in, meta(expr.MetaKeyIIFNAME, ifname("lo")), verdict(expr.VerdictAccept))
	if r.DHCP {
		rule(in, meta(expr.MetaKeyIIFNAME, ifname(r.Interface)), udpPorts(dhcpServerPort, dhcpClientPort), verdict(expr.VerdictAccept))
	}
	rule(in, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	rule(in, counted(expr.VerdictDrop))

	out := chain("output", nftables.ChainHookOutput)
	rule(out, meta(expr.MetaKeyOIFNAME, ifname("lo")), verdict(expr.VerdictAccept))
	if r.DHCP {
		rule(out, meta(expr.MetaKeyOIFNAME, ifname(r.Interface)), udpPorts(dhcpClientPort, dhcpServerPort), verdict(expr.VerdictAccept))
	}
	for _, a := range r.Allow {
		rule(out,
			meta(expr.MetaKeyOIFNAME, ifname(r.Interface)),
			meta(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV4}),
			payload(expr.PayloadBaseNetworkHeader, 16, a.Addr().Unmap().AsSlice()), // ip daddr
			meta(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_TCP}),
			payload(expr.PayloadBaseTransportHeader, 2, binaryutil.BigEndian.PutUint16(a.Port())), // tcp dport
			ctState(expr.CtStateBitNEW|expr.CtStateBitESTABLISHED),
			verdict(expr.VerdictAccept),
		)
	}
	rule(out, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	rule(out, counted(expr.VerdictDrop))

	fwd := chain("forward", nftables.ChainHookForward)
	rule(fwd, counted(expr.VerdictDrop))
}

// DHCPv4's ports (RFC 2131 §4.1).
const (
	dhcpServerPort = 67
	dhcpClientPort = 68
)

// udpPorts matches IPv4 UDP from port sport to port dport.
func udpPorts(sport, dport uint16) []expr.Any {
	return slices.Concat(
		meta(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV4}),
		meta(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_UDP}),
		payload(expr.PayloadBaseTransportHeader, 0, binaryutil.BigEndian.PutUint16(sport)),
		payload(expr.PayloadBaseTransportHeader, 2, binaryutil.BigEndian.PutUint16(dport)),
	)
}

// ifname pads an interface name as the kernel stores it, so that the
// comparison is exact rather than a prefix match.
func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

func meta(key expr.MetaKey, eq []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: eq},
	}
}

func payload(base expr.PayloadBase, offset uint32, eq []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: uint32(len(eq))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: eq},
	}
}

// ctState matches packets whose conntrack state is any of mask.
func ctState(mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1,
			DestRegister:   1,
			Len:            4,
			Mask:           binaryutil.NativeEndian.PutUint32(mask),
			Xor:            binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// counted is a verdict with a counter in front, so that `nft list` shows
// how much a chain refused.
func counted(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: k}}
}
