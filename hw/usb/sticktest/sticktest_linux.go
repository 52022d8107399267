// Package sticktest offers a test's loop devices as the only USB drives:
// a usb.Ports that lists the devices the test plugged in through it, and
// none of the machine's other block devices (whose errors the test is
// not about).
//
//	ports := sticktest.New()
//	name := ports.Loop(t, 32<<20, "mke2fs", "-q", "-F", "-t", "ext4")
//	drives, err := ports.List() // name, and nothing else
//
// It is not part of usbtest, which hw/usb's own tests import.
package sticktest

import (
	"path/filepath"
	"sync"
	"testing"

	"drawbridge/hw/usb"
	"drawbridge/hw/usb/usbtest"
)

// Ports is usb.Local taking loop devices for drives (Any), and listing
// only those offered through Add, Plug or Loop.
type Ports struct {
	*usb.Ports
	names sync.Map
}

// New returns Ports offering no drive yet.
func New() *Ports {
	p := &Ports{Ports: usb.Local()}
	p.Any = true
	p.Only = func(name string) bool { _, ok := p.names.Load(name); return ok }
	return p
}

// Add offers dev (a path or a kernel name) as a drive and returns its
// kernel name.
func (p *Ports) Add(dev string) string {
	name := filepath.Base(dev)
	p.names.Store(name, true)
	return name
}

// Plug attaches the stick image img to a loop device, detached when the
// test ends, and offers it: a stick plugged in. Any goroutine may call it;
// a failure is reported with t.Errorf and gives "".
func (p *Ports) Plug(t testing.TB, img string) string {
	dev, detach, err := usbtest.AttachLoop(img, 0)
	if err != nil {
		t.Errorf("attach %s: %v", img, err)
		return ""
	}
	t.Cleanup(detach)
	return p.Add(dev)
}

// Loop makes a loop device of size bytes formatted by mkfs (usbtest.Loop)
// and offers it.
func (p *Ports) Loop(t testing.TB, size int64, mkfs ...string) string {
	t.Helper()
	return p.Add(usbtest.Loop(t, size, mkfs...))
}
