// Package sshtest gives pull tests a real OpenSSH server as a source host.
//
// Each Host is an sshd running in a network namespace that the test creates,
// joined to the root namespace by a veth pair. The test process reaches the
// server over that link only, so the byte counters of the source-side
// interface measure exactly what a pull sent and received.
//
// Invariants:
//   - Addresses come only from 198.18.0.0/15, one /30 per host, chosen under
//     a file lock shared by every test binary on the machine and skipping any
//     /30 already used by an interface of the root namespace.
//   - Namespaces are named dbssh-<pid>-<n>, veth ends dbs<pid>h<n> (root
//     side) and dbs<pid>s<n> (source side), and directories
//     drawbridge-sshtest-<pid>-<n>-* in the temp dir. Whatever an earlier
//     process left behind under those names (it was killed before its
//     cleanups ran) is removed when a later Start finds that process gone.
//     sshd itself dies with the process that started it.
//   - Everything a Start creates is removed by t.Cleanup, also when the test
//     fails or Start itself fails half-way.
package sshtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"drawbridge/hw/link/linktest"
	"drawbridge/vault/internal/fixture"
)

const (
	sshdPath = "/usr/sbin/sshd"

	nsPrefix   = "dbssh-"
	vethPrefix = "dbs"
	dirPrefix  = "drawbridge-sshtest-"

	// lockPath serialises address allocation and stale sweeps across test
	// binaries running at the same time.
	lockPath = "/run/drawbridge-sshtest.lock"

	startTimeout = 10 * time.Second
)

// The test range 198.18.0.0/15 holds 1<<15 blocks of four addresses.
// Allocation starts in the upper half (198.19.0.0) so that tests which
// hard-code a low 198.18 address are less likely to meet a harness host.
var (
	testRange  = netip.MustParsePrefix("198.18.0.0/15")
	blocks     = uint32(1) << (32 - testRange.Bits() - 2)
	firstBlock = blocks / 2
)

var (
	counter atomic.Uint64

	// netMu and the file lock at lockPath guard sweeps and the choice of a
	// free subnet.
	netMu sync.Mutex
)

// sweepFirst runs once per process before it creates anything, and also
// removes what an earlier process with the same pid left.
var sweepFirst = sync.OnceValue(func() error {
	unlock, err := lockNet()
	if err != nil {
		return err
	}
	defer unlock()
	if err := sweep(true); err != nil {
		return fmt.Errorf("remove leftovers of killed runs: %w", err)
	}
	return nil
})

// Options configure a source host.
type Options struct {
	// AuthorizedKeys lines for the login user, e.g.
	// `restrict,command="/path/agent" ssh-ed25519 AAAA...`.
	AuthorizedKeys []string
	// SFTPReadOnly enables "Subsystem sftp internal-sftp -R".
	SFTPReadOnly bool
	// ExtraConfig lines appended to sshd_config. sshd keeps the first value
	// it reads for a keyword, so a keyword set here before any Match line
	// replaces the harness default for it (LogLevel, PermitRootLogin, ...).
	// ListenAddress, HostKey, PidFile and AuthorizedKeysFile always keep
	// the harness's values; a second ListenAddress or HostKey is added.
	ExtraConfig []string
}

// Host is a running sshd in its own network namespace.
type Host struct {
	Addr        string        // "198.19.x.y:22", reachable from the root namespace
	HostKey     ssh.PublicKey // the server's ed25519 host key
	HostKeyLine string        // "ssh-ed25519 AAAA..." as a config file pins it
	User        string        // login user
	NS          string        // namespace name, for `ip netns exec NS ...`
	VethHost    string        // the root-namespace end of the link
	VethNS      string        // the source-side end of the link
	Dir         string        // sshd_config, keys, logs
	// Home is the login user's home as sessions see it: an empty
	// directory in Dir, mounted over the real home (/root) for sshd and its
	// sessions only, so the machine's rc files stay out of forced commands.
	// Files a test wants the source to read belong elsewhere, e.g. in
	// t.TempDir(), which sessions see as the test does.
	Home string

	t       testing.TB
	logPath string
	outPath string
}

// Require skips the test unless it runs as root with `ip` (iproute2) and
// /usr/sbin/sshd (openssh-server) present. Under CI=true it fails instead.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces and sshd need it)")
	}
	if _, err := linktest.IPCommand(); err != nil {
		missing = append(missing, "the ip command (install iproute2)")
	}
	if _, err := os.Stat(sshdPath); err != nil {
		missing = append(missing, sshdPath+" (install openssh-server)")
	}
	if len(missing) == 0 {
		return
	}
	fixture.Need(t, "sshtest: a real OpenSSH source host needs "+strings.Join(missing, ", "))
}

// Start creates a namespace and veth link, starts sshd in it and waits until
// it accepts TCP connections. Everything is torn down by t.Cleanup.
// Start must be called from the test's goroutine.
func Start(t testing.TB, o Options) *Host {
	t.Helper()
	Require(t)

	pid := os.Getpid()
	n := counter.Add(1)
	h := &Host{
		User:     "root",
		NS:       fmt.Sprintf("%s%d-%d", nsPrefix, pid, n),
		VethHost: fmt.Sprintf("%s%dh%d", vethPrefix, pid, n),
		VethNS:   fmt.Sprintf("%s%ds%d", vethPrefix, pid, n),
		t:        t,
	}
	if len(h.VethHost) >= unix.IFNAMSIZ {
		t.Fatalf("sshtest: interface name %q is longer than the kernel allows", h.VethHost)
	}
	if err := sweepFirst(); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-%d-", dirPrefix, pid, n))
	if err != nil {
		t.Fatalf("sshtest: make host dir: %v", err)
	}
	h.Dir = dir
	h.logPath = filepath.Join(dir, "sshd.log")
	h.outPath = filepath.Join(dir, "sshd.out")

	var (
		sshd *exec.Cmd
		done chan struct{}
	)
	t.Cleanup(func() {
		// Whatever failed, sshd's view of it is likely to help.
		if t.Failed() {
			t.Logf("sshtest: sshd log of %s:\n%s", h.NS, h.Log())
		}
		if sshd != nil {
			_ = sshd.Process.Kill()
			<-done
		}
		for _, err := range teardown(h.NS, h.VethHost) {
			t.Errorf("sshtest: clean up %s: %v", h.NS, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("sshtest: remove host dir: %v", err)
		}
	})

	nsIP, err := h.makeLink()
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	h.Addr = netip.AddrPortFrom(nsIP, 22).String()

	if err := h.writeFiles(o, nsIP); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	// sshd chroots its unprivileged child into /run/sshd.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshtest: make privilege separation dir: %v", err)
	}

	out, err := os.OpenFile(h.outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	defer out.Close()
	// Sessions run the login user's shell, which reads the rc files of
	// its home (bash does even for a forced command under sshd). The
	// machine's own would make forced commands slow and their output
	// depend on the machine, so sessions get an empty home of their own,
	// mounted over the real one in the mount namespace that
	// `ip netns exec` makes for sshd.
	realHome := "/root"
	if u, err := user.Lookup(h.User); err == nil && u.HomeDir != "" {
		realHome = u.HomeDir
	}
	h.Home = filepath.Join(dir, "home")
	if err := os.Mkdir(h.Home, 0o700); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	ip, _ := linktest.IPCommand()
	sshd = exec.Command(ip, "netns", "exec", h.NS,
		"/bin/sh", "-c", `mount --bind "$1" "$2" && shift 2 && exec "$@"`, "sshtest", h.Home, realHome,
		sshdPath, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"), "-E", h.logPath)
	sshd.Stdout, sshd.Stderr = out, out
	sshd.SysProcAttr = &syscall.SysProcAttr{
		// sshd is the init of its own pid namespace: it reaps the session
		// processes that outlive their parents, and killing it kills them all.
		Cloneflags: syscall.CLONE_NEWPID,
		// If the test binary dies without running its cleanups, so does sshd.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := sshd.Start(); err != nil {
		sshd = nil
		t.Fatalf("sshtest: start sshd: %v", err)
	}
	done = make(chan struct{})
	var waitErr error
	go func() {
		waitErr = sshd.Wait()
		close(done)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			t.Fatalf("sshtest: sshd exited before accepting connections: %v", waitErr)
		default:
		}
		c, err := net.DialTimeout("tcp", h.Addr, 250*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshtest: sshd on %s not accepting connections after %v: %v", h.Addr, startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return h
}

// makeLink creates the namespace and the veth pair and addresses both ends.
// It returns the source-side address.
func (h *Host) makeLink() (netip.Addr, error) {
	var none netip.Addr
	unlock, err := lockNet()
	if err != nil {
		return none, err
	}
	defer unlock()

	if err := sweep(false); err != nil {
		return none, fmt.Errorf("remove leftovers of killed runs: %w", err)
	}

	base, err := freeBlock()
	if err != nil {
		return none, err
	}
	hostIP, nsIP := base.Next(), base.Next().Next()
	const bits = "/30"

	if _, err := ipCmd(nil, "netns", "add", h.NS); err != nil {
		return none, err
	}
	// No IPv6 link-local addresses: their neighbour discovery would show
	// up in the byte counters.
	root := strings.Join([]string{
		"link add " + h.VethHost + " type veth peer name " + h.VethNS + " netns " + h.NS,
		"link set dev " + h.VethHost + " addrgenmode none",
		"addr add " + hostIP.String() + bits + " dev " + h.VethHost,
		"link set dev " + h.VethHost + " up",
	}, "\n")
	if _, err := ipCmd(strings.NewReader(root), "-batch", "-"); err != nil {
		return none, err
	}
	inside := strings.Join([]string{
		"link set dev " + h.VethNS + " addrgenmode none",
		"addr add " + nsIP.String() + bits + " dev " + h.VethNS,
		"link set dev " + h.VethNS + " up",
		"link set dev lo up",
	}, "\n")
	if _, err := ipCmd(strings.NewReader(inside), "-n", h.NS, "-batch", "-"); err != nil {
		return none, err
	}
	return nsIP, nil
}

func (h *Host) writeFiles(o Options, nsIP netip.Addr) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "drawbridge test source host")
	if err != nil {
		return fmt.Errorf("marshal host key: %w", err)
	}
	h.HostKey, err = ssh.NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("host public key: %w", err)
	}
	h.HostKeyLine = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(h.HostKey)))

	keyPath := filepath.Join(h.Dir, "ssh_host_ed25519_key")
	authPath := filepath.Join(h.Dir, "authorized_keys")
	var auth strings.Builder
	for _, l := range o.AuthorizedKeys {
		auth.WriteString(l + "\n")
	}
	files := []struct {
		name string
		data []byte
	}{
		{keyPath, pem.EncodeToMemory(block)},
		{keyPath + ".pub", []byte(h.HostKeyLine + "\n")},
		{authPath, []byte(auth.String())},
		{filepath.Join(h.Dir, "sshd_config"), []byte(sshdConfig(o, nsIP, h.Dir))},
	}
	for _, f := range files {
		if err := os.WriteFile(f.name, f.data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", filepath.Base(f.name), err)
		}
	}
	return nil
}

func sshdConfig(o Options, nsIP netip.Addr, dir string) string {
	q := func(p string) string { return strconv.Quote(p) }
	fixed := []string{
		"ListenAddress " + netip.AddrPortFrom(nsIP, 22).String(),
		"HostKey " + q(filepath.Join(dir, "ssh_host_ed25519_key")),
		"PidFile " + q(filepath.Join(dir, "sshd.pid")),
		// sshd expands % tokens in this path.
		"AuthorizedKeysFile " + q(strings.ReplaceAll(filepath.Join(dir, "authorized_keys"), "%", "%%")),
	}
	defaults := []string{
		"StrictModes no",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"PrintMotd no",
		"LogLevel VERBOSE",
	}
	if o.SFTPReadOnly {
		defaults = append(defaults, "Subsystem sftp internal-sftp -R")
	}
	overridden := map[string]bool{}
	for _, l := range o.ExtraConfig {
		k := keyword(l)
		if k == "match" {
			break
		}
		overridden[k] = true
	}
	var b strings.Builder
	b.WriteString("# Drawbridge test source host\n")
	for _, l := range fixed {
		b.WriteString(l + "\n")
	}
	for _, l := range defaults {
		if !overridden[keyword(l)] {
			b.WriteString(l + "\n")
		}
	}
	for _, l := range o.ExtraConfig {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// keyword returns the lower-cased keyword of an sshd_config line, which may
// be written "Keyword value" or "Keyword=value".
func keyword(line string) string {
	line = strings.TrimSpace(line)
	if i := strings.IndexAny(line, " \t="); i >= 0 {
		line = line[:i]
	}
	return strings.ToLower(line)
}

// SourceRxBytes returns the bytes received by the source-side interface.
// It must be called from the test's goroutine.
func (h *Host) SourceRxBytes() uint64 { return h.stats().RX.Bytes }

// SourceTxBytes returns the bytes sent by the source-side interface.
// It must be called from the test's goroutine.
func (h *Host) SourceTxBytes() uint64 { return h.stats().TX.Bytes }

type linkStats struct {
	RX struct {
		Bytes uint64 `json:"bytes"`
	} `json:"rx"`
	TX struct {
		Bytes uint64 `json:"bytes"`
	} `json:"tx"`
}

func (h *Host) stats() linkStats {
	h.t.Helper()
	out, err := ipCmd(nil, "-n", h.NS, "-s", "-j", "link", "show", "dev", h.VethNS)
	if err != nil {
		h.t.Fatalf("sshtest: read counters of %s: %v", h.VethNS, err)
	}
	var links []struct {
		Stats linkStats `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		h.t.Fatalf("sshtest: read counters of %s: unexpected output %q: %v", h.VethNS, out, err)
	}
	return links[0].Stats
}

// Log returns what sshd has logged so far, for failure messages.
func (h *Host) Log() string {
	var b strings.Builder
	for _, p := range []string{h.outPath, h.logPath} {
		data, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(&b, "(read %s: %v)\n", filepath.Base(p), err)
		}
		b.Write(data)
	}
	return b.String()
}

// lockNet takes the machine-wide lock for namespace and address bookkeeping.
func lockNet() (unlock func(), err error) {
	netMu.Lock()
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		netMu.Unlock()
		return nil, fmt.Errorf("open lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		netMu.Unlock()
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	return func() {
		f.Close() // releases the flock
		netMu.Unlock()
	}, nil
}

// freeBlock returns the first address of a /30 in the test range that no
// root-namespace interface uses or overlaps.
func freeBlock() (netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list addresses: %w", err)
	}
	used := map[uint32]bool{}
	start := be32(testRange.Addr())
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP.To4())
		if !ok || !testRange.Contains(ip) {
			continue
		}
		ones, _ := ipn.Mask.Size()
		if ones > 30 || ones <= testRange.Bits() {
			// Narrower than a block, or covering the whole range:
			// only the block holding the address is taken.
			used[(be32(ip)-start)>>2] = true
			continue
		}
		p := netip.PrefixFrom(ip, ones).Masked()
		first := (be32(p.Addr()) - start) >> 2
		for i := range uint32(1) << (30 - ones) {
			used[first+i] = true
		}
	}
	for i := range blocks {
		b := (firstBlock + i) % blocks
		if !used[b] {
			return fromBe32(start + b<<2), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free /30 left in %v", testRange)
}

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromBe32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// sweep removes namespaces and root-side links left by processes that
// ended without cleaning up. With ownToo it also removes those named after
// this process's pid, which can only come from an earlier process that had
// the same pid.
func sweep(ownToo bool) error {
	self := os.Getpid()
	stale := func(pid int) bool {
		if pid == self {
			return ownToo
		}
		_, err := os.Stat("/proc/" + strconv.Itoa(pid))
		return errors.Is(err, fs.ErrNotExist)
	}
	var errs []error

	out, err := ipCmd(nil, "netns", "list")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if pid, ok := ownerPID(name, nsPrefix, '-'); ok && stale(pid) {
			errs = append(errs, teardown(name, "")...)
		}
	}

	ifs, err := net.Interfaces()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list interfaces: %w", err))...)
	}
	for _, ifc := range ifs {
		pid, ok := ownerPID(ifc.Name, vethPrefix, 'h')
		if !ok {
			pid, ok = ownerPID(ifc.Name, vethPrefix, 's')
		}
		if ok && stale(pid) {
			errs = append(errs, teardown("", ifc.Name)...)
		}
	}

	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, d := range dirs {
		if pid, ok := ownerPID(filepath.Base(d), dirPrefix, '-'); ok && stale(pid) {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ownerPID parses names of the form <prefix><pid><sep><n>...
func ownerPID(name, prefix string, sep byte) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	i := strings.IndexByte(rest, sep)
	if i <= 0 {
		return 0, false
	}
	pid, err := strconv.Atoi(rest[:i])
	if err != nil || pid <= 0 {
		return 0, false
	}
	if n := rest[i+1:]; n == "" || n[0] < '0' || n[0] > '9' {
		return 0, false
	}
	return pid, true
}

// teardown kills what runs in namespace ns, deletes link (which takes its
// peer with it) and deletes ns. Empty names are skipped, and so is anything
// already gone.
func teardown(ns, link string) []error {
	var errs []error
	if ns != "" && nsExists(ns) {
		out, err := ipCmd(nil, "netns", "pids", ns)
		if err != nil {
			errs = append(errs, err)
		}
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				// A session child of sshd or an orphan of a crashed run.
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	if link != "" {
		if _, err := net.InterfaceByName(link); err == nil {
			if _, err := ipCmd(nil, "link", "del", "dev", link); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if ns != "" && nsExists(ns) {
		if _, err := ipCmd(nil, "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

// ipCmd runs ip with args and returns its standard output.
func ipCmd(stdin *strings.Reader, args ...string) ([]byte, error) {
	ip, err := linktest.IPCommand()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(ip, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
