package daemon

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
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
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("dial %s: current network namespace: %w", addr, err)}
				return
			}
			defer orig.Close()
			if err := netns.Set(ns); err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("dial %s: enter network namespace: %w", addr, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}
