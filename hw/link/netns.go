package link

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// InNamespace runs fn on an OS thread that has entered network namespace
// ns, and returns the thread to its own namespace afterwards; a thread
// that cannot go back is thrown away rather than reused. Sockets fn opens
// belong to ns for good and may then be used from any thread.
func InNamespace(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
