package link

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
)

// Operations a Fake passes to its Hook.
const (
	OpDownAll = "down-all"
	OpUp      = "up"
	OpDown    = "down"
)

// Fake is a Link over interfaces that exist only in memory, for tests of
// callers. It keeps the invariants of the package and is safe for
// concurrent use.
type Fake struct {
	// Hook, when set, is called at the start of DownAll, Up and Down with
	// the operation and the interface name ("" for DownAll); an error it
	// returns fails the operation before it changes anything. Tests use it
	// to record a global order of events, to inject failures, or to block.
	Hook func(op, name string) error

	mu     sync.Mutex
	ifaces map[string]*fakeIface
}

type fakeIface struct {
	up    bool
	addrs []netip.Prefix
	gw    netip.Addr
}

// NewFake returns a Fake with loopback (up, 127.0.0.1/8) and the named
// interfaces, down and without addresses.
func NewFake(names ...string) *Fake {
	f := &Fake{ifaces: map[string]*fakeIface{
		"lo": {up: true, addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
	}}
	for _, n := range names {
		f.ifaces[n] = &fakeIface{}
	}
	return f
}

// SetState sets an interface's state as if something outside the vault had
// changed it, creating the interface if needed.
func (f *Fake) SetState(name string, up bool, addrs ...netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ifaces[name] = &fakeIface{up: up, addrs: slices.Clone(addrs)}
}

// Gateway returns the default gateway Up set on name, if any.
func (f *Fake) Gateway(name string) netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i, ok := f.ifaces[name]; ok {
		return i.gw
	}
	return netip.Addr{}
}

func (f *Fake) hook(op, name string) error {
	if f.Hook == nil {
		return nil
	}
	return f.Hook(op, name)
}

func (f *Fake) DownAll(ctx context.Context) error {
	if err := f.hook(OpDownAll, ""); err != nil {
		return fmt.Errorf("take all interfaces down: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, i := range f.ifaces {
		if name != "lo" {
			*i = fakeIface{}
		}
	}
	return nil
}

func (f *Fake) Up(ctx context.Context, name string, addr netip.Prefix, gw netip.Addr) error {
	if err := checkUp(name, addr, gw); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	if !addr.IsValid() {
		// There is no DHCP server in memory.
		return fmt.Errorf("bring %s up: %w", name, ErrDHCPUnsupported)
	}
	if err := f.hook(OpUp, name); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.ifaces[name]
	if !ok {
		return fmt.Errorf("bring %s up: %w: %s", name, ErrNoInterface, name)
	}
	*i = fakeIface{up: true, addrs: []netip.Prefix{addr}, gw: gw}
	return nil
}

func (f *Fake) Down(ctx context.Context, name string) error {
	if name == "lo" {
		return fmt.Errorf("take %s down: %w", name, ErrLoopback)
	}
	if err := f.hook(OpDown, name); err != nil {
		return fmt.Errorf("take %s down: %w", name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.ifaces[name]
	if !ok {
		return fmt.Errorf("take %s down: %w: %s", name, ErrNoInterface, name)
	}
	*i = fakeIface{}
	return nil
}

func (f *Fake) State(name string) (bool, []netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := f.ifaces[name]
	if !ok {
		return false, nil, fmt.Errorf("state of %s: %w: %s", name, ErrNoInterface, name)
	}
	addrs := slices.Clone(i.addrs)
	sort.Slice(addrs, func(a, b int) bool { return addrs[a].Addr().Less(addrs[b].Addr()) })
	return i.up, addrs, nil
}
