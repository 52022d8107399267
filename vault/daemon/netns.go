package daemon

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netns"

	"drawbridge/hw/link"
)

// DialIn returns a dialer whose connections belong to network namespace
// ns, for a daemon that drives a namespace other than its own (`drawbridge
// run --netns`). A Go program cannot move all its threads into a
// namespace, but a socket belongs for good to the namespace of the thread
// that created it: each dial runs on a locked thread that has entered ns,
// and the connection is then used from any thread. A thread that cannot go
// back to its own namespace is thrown away rather than reused.
func DialIn(ns netns.NsHandle) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var dialErr error
		if err := link.InNamespace(ns, func() error {
			var d net.Dialer
			c, dialErr = d.DialContext(ctx, network, addr)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		return c, dialErr
	}
}
