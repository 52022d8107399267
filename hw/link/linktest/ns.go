// Package linktest gives tests of the vault's link real network namespaces,
// and holds the conformance suite every link.Link implementation passes.
//
// A Pair is two namespaces that a test creates, "vault" and "source", joined
// by a veth pair. The source end is up with SourceAddr; the vault end starts
// down and without addresses, as the vault's interface is outside a window.
// Tests act on the vault side only through handles opened in the vault
// namespace and observe it from the source side, so the machine's own
// interfaces are never touched.
//
// Invariants:
//   - Addresses come only from 198.18.0.0/15 and exist only inside the
//     namespaces of a Pair.
//   - Namespaces are named dbl-<pid>-<n>-vault and dbl-<pid>-<n>-source, veth
//     ends dblv<pid>x<n> and dbls<pid>x<n>. Everything a Pair creates goes
//     in t.Cleanup; what a killed test process left behind is removed by
//     the next process that makes a Pair.
package linktest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"drawbridge/hw/link"
	"drawbridge/vault/fixture"
	"golang.org/x/sys/unix"
)

// Addresses on the link between the namespaces of a Pair.
var (
	VaultAddr  = netip.MustParsePrefix("198.18.0.2/24") // what a window gives the vault end
	SourceAddr = netip.MustParsePrefix("198.18.0.1/24") // on the source end from the start
)

// Greeting is what a source listener writes to every connection.
const Greeting = "drawbridge source\n"

const (
	nsPrefix  = "dbl-"
	nsDir     = "/run/netns"
	cmdTimout = 10 * time.Second
)

var counter atomic.Uint64

// Require skips the test unless it runs as root with the ip command
// (iproute2); under CI=true it fails instead.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces need it)")
	}
	if _, err := IPCommand(); err != nil {
		missing = append(missing, "the ip command (install iproute2)")
	}
	if len(missing) > 0 {
		fixture.Need(t, "a test network namespace needs "+strings.Join(missing, " and "))
	}
}

// IPCommand finds the ip command (iproute2): in PATH, or in an sbin that
// PATH lacks.
var IPCommand = sync.OnceValues(func() (string, error) {
	if p, err := exec.LookPath("ip"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("ip not found in PATH or sbin")
})

// Pair is a vault namespace and a source namespace joined by a veth pair.
type Pair struct {
	VaultNS, SourceNS string         // namespace names, for `ip -n NAME`
	Vault, Source     netns.NsHandle // open handles on them
	VaultIf, SourceIf string         // the veth ends

	t       testing.TB
	mu      sync.Mutex
	sourceH *netlink.Handle // for Carrier
}

// NewPair creates the namespaces and the link between them. Everything is
// removed by t.Cleanup.
func NewPair(t testing.TB) *Pair {
	t.Helper()
	Require(t)
	if err := sweepOnce(); err != nil {
		t.Fatalf("linktest: %v", err)
	}
	pid, n := os.Getpid(), counter.Add(1)
	p := &Pair{
		VaultNS:  fmt.Sprintf("%s%d-%d-vault", nsPrefix, pid, n),
		SourceNS: fmt.Sprintf("%s%d-%d-source", nsPrefix, pid, n),
		VaultIf:  fmt.Sprintf("dblv%dx%d", pid, n),
		SourceIf: fmt.Sprintf("dbls%dx%d", pid, n),
		Vault:    netns.None(),
		Source:   netns.None(),
		t:        t,
	}
	if len(p.VaultIf) > 15 {
		t.Fatalf("linktest: interface name %q is longer than the kernel allows", p.VaultIf)
	}
	for _, ns := range []string{p.VaultNS, p.SourceNS} {
		if _, err := ip("netns", "add", ns); err != nil {
			fixture.Need(t, fmt.Sprintf("linktest: cannot create a network namespace (%v); the kernel needs CONFIG_NET_NS", err))
		}
		t.Cleanup(func() {
			if _, err := ip("netns", "del", ns); err != nil {
				t.Errorf("linktest: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		p.Vault.Close()
		p.Source.Close()
	})
	steps := [][]string{
		{"link", "add", "name", p.VaultIf, "netns", p.VaultNS, "type", "veth", "peer", "name", p.SourceIf, "netns", p.SourceNS},
		{"-n", p.VaultNS, "link", "set", "lo", "up"},
		{"-n", p.SourceNS, "link", "set", "lo", "up"},
		{"-n", p.SourceNS, "addr", "add", SourceAddr.String(), "dev", p.SourceIf},
		{"-n", p.SourceNS, "link", "set", p.SourceIf, "up"},
	}
	for _, s := range steps {
		if _, err := ip(s...); err != nil {
			if s[0] == "link" && s[1] == "add" {
				fixture.Need(t, fmt.Sprintf("linktest: cannot create a veth pair (%v); the kernel needs CONFIG_VETH", err))
			}
			t.Fatalf("linktest: %v", err)
		}
	}
	var err error
	if p.Vault, err = netns.GetFromName(p.VaultNS); err != nil {
		t.Fatalf("linktest: open namespace %s: %v", p.VaultNS, err)
	}
	if p.Source, err = netns.GetFromName(p.SourceNS); err != nil {
		t.Fatalf("linktest: open namespace %s: %v", p.SourceNS, err)
	}
	return p
}

// VaultHandle returns a netlink handle in the vault namespace, closed by
// t.Cleanup.
func (p *Pair) VaultHandle() *netlink.Handle { return p.handle(p.Vault, p.VaultNS) }

// SourceHandle returns a netlink handle in the source namespace, closed by
// t.Cleanup.
func (p *Pair) SourceHandle() *netlink.Handle { return p.handle(p.Source, p.SourceNS) }

func (p *Pair) handle(ns netns.NsHandle, name string) *netlink.Handle {
	p.t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		p.t.Fatalf("linktest: netlink handle in %s: %v", name, err)
	}
	p.t.Cleanup(h.Close)
	return h
}

// IP runs `ip -n NS args...` and returns its output; it fails the test on
// an error.
func (p *Pair) IP(ns string, args ...string) string {
	p.t.Helper()
	out, err := ip(append([]string{"-n", ns}, args...)...)
	if err != nil {
		p.t.Fatalf("linktest: %v", err)
	}
	return out
}

// Exec runs a command inside namespace ns (`ip netns exec`) and returns
// its combined output.
func (p *Pair) Exec(ns string, name string, args ...string) (string, error) {
	return ip(append([]string{"netns", "exec", ns, name}, args...)...)
}

// AddCard adds a second network card to the vault namespace, up with
// addr: a veth pair with both ends in the vault namespace, named name and
// name+"p" (kernels without the dummy driver have veth).
func (p *Pair) AddCard(name string, addr netip.Prefix) {
	p.t.Helper()
	p.IP(p.VaultNS, "link", "add", name, "type", "veth", "peer", "name", name+"p")
	p.IP(p.VaultNS, "addr", "add", addr.String(), "dev", name)
	p.IP(p.VaultNS, "link", "set", name, "up")
	p.IP(p.VaultNS, "link", "set", name+"p", "up")
}

// Carrier reports, as the source side sees it, whether the vault end of the
// link is up: a veth end has carrier only while its peer is up. It may be
// called from any goroutine.
func (p *Pair) Carrier() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sourceH == nil {
		h, err := netlink.NewHandleAt(p.Source)
		if err != nil {
			return false, fmt.Errorf("netlink handle in %s: %w", p.SourceNS, err)
		}
		p.sourceH = h
		p.t.Cleanup(h.Close)
	}
	l, err := p.sourceH.LinkByName(p.SourceIf)
	if err != nil {
		return false, fmt.Errorf("%s in %s: %w", p.SourceIf, p.SourceNS, err)
	}
	return l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0, nil
}

// ListenSource listens on SourceAddr in the source namespace on a free
// port and writes Greeting to every connection. It returns the address
// the vault dials.
func (p *Pair) ListenSource() netip.AddrPort {
	p.t.Helper()
	return p.listen(p.Source, SourceAddr.Addr())
}

// ListenVault listens in the vault namespace on every address, on a free
// port, as a service the vault must never expose would.
func (p *Pair) ListenVault() uint16 {
	p.t.Helper()
	return p.listen(p.Vault, netip.IPv4Unspecified()).Port()
}

func (p *Pair) listen(ns netns.NsHandle, addr netip.Addr) netip.AddrPort {
	var ln net.Listener
	err := Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		p.t.Fatalf("linktest: listen: %v", err)
	}
	p.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte(Greeting))
			c.Close()
		}
	}()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(addr, ap.Port())
}

// DialFromVault opens a TCP connection from the vault namespace, reads
// what the peer sends first and returns it.
func (p *Pair) DialFromVault(to netip.AddrPort, timeout time.Duration) (string, error) {
	return dialRead(p.Vault, to, timeout)
}

// DialFromSource opens a TCP connection from the source namespace, reads
// what the peer sends first and returns it.
func (p *Pair) DialFromSource(to netip.AddrPort, timeout time.Duration) (string, error) {
	return dialRead(p.Source, to, timeout)
}

func dialRead(ns netns.NsHandle, to netip.AddrPort, timeout time.Duration) (string, error) {
	var c net.Conn
	err := Do(ns, func() (err error) {
		// The socket belongs to the namespace it was created in, so it is
		// created here; using it afterwards works from any thread.
		c, err = net.DialTimeout("tcp", to.String(), timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	return bufio.NewReader(c).ReadString('\n')
}

// Do runs fn on an OS thread that has entered namespace ns, and returns
// the thread to its namespace afterwards; a thread that cannot go back is
// thrown away rather than reused.
func Do(ns netns.NsHandle, fn func() error) error {
	return link.InNamespace(ns, fn)
}

// IsTimeout reports whether a dial or read failed by timing out, as it
// does when a firewall drops packets, rather than by being refused.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func ip(args ...string) (string, error) {
	path, err := IPCommand()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(path, args...)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(cmdTimout):
			if cmd.Process != nil {
				cmd.Process.Kill()
			}
		}
	}()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

var sweepOnce = sync.OnceValue(sweep)

// sweep deletes namespaces that a test process, killed before its cleanups
// ran, left behind; deleting a namespace deletes the veth end in it.
func sweep() error {
	ents, err := os.ReadDir(nsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove leftovers of killed runs: %w", err)
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // still running (or not ours to judge)
		}
		if _, err := ip("netns", "del", e.Name()); err != nil {
			return fmt.Errorf("remove leftovers of killed runs: %w", err)
		}
	}
	return nil
}
