package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"drawbridge/hw/firewall"
	"drawbridge/hw/link"
	"drawbridge/hw/link/linktest"
	"drawbridge/vault/config"
	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/journal"
	"drawbridge/vault/store"
	"drawbridge/vault/window"
)

const sshdPath = "/usr/sbin/sshd"

// sourceScript is the forced command of the vault's key on the test
// source: an exec source's command picks what it does.
const sourceScript = `case "$SSH_ORIGINAL_COMMAND" in
stall) exec sleep 600 ;;
*) exec head -c 300000 /dev/urandom ;;
esac
`

// vaultNet is a vault namespace joined to a source namespace that runs a
// real sshd, with the vault's store.
type vaultNet struct {
	p           *linktest.Pair
	hostKeyLine string
	sshdLog     string
}

// sourceAddr is where the source's sshd listens.
var sourceAddr = netip.AddrPortFrom(linktest.SourceAddr.Addr(), 22)

// newVaultNet makes the namespaces and starts sshd in the source one,
// letting in authorizedKey (the vault's key line) with the forced command
// sourceScript.
func newVaultNet(t *testing.T, authorizedKey string) *vaultNet {
	t.Helper()
	p := linktest.NewPair(t)
	if _, err := os.Stat(sshdPath); err != nil {
		fixture.Need(t, "a real source host needs "+sshdPath+" (install openssh-server)")
	}
	if c, err := nftables.New(nftables.WithNetNSFd(int(p.Vault))); err != nil {
		fixture.Need(t, "the firewall needs kernel nftables support (CONFIG_NF_TABLES; modprobe nf_tables): "+err.Error())
	} else if _, err := c.ListTables(); err != nil {
		fixture.Need(t, "the firewall needs kernel nftables support (CONFIG_NF_TABLES; modprobe nf_tables): "+err.Error())
	}
	v := &vaultNet{p: p}
	dir := t.TempDir()
	v.sshdLog = filepath.Join(dir, "sshd.log")

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "drawbridge test source")
	if err != nil {
		t.Fatal(err)
	}
	hk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	v.hostKeyLine = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk)))
	home := filepath.Join(dir, "home")
	script := filepath.Join(dir, "source.sh")
	q := strconv.Quote
	files := map[string]string{
		"host_key":        string(pem.EncodeToMemory(block)),
		"source.sh":       sourceScript,
		"authorized_keys": `restrict,command="/bin/sh ` + script + `" ` + authorizedKey + "\n",
		"sshd_config": strings.Join([]string{
			"ListenAddress " + sourceAddr.String(),
			"HostKey " + q(filepath.Join(dir, "host_key")),
			"PidFile " + q(filepath.Join(dir, "sshd.pid")),
			"AuthorizedKeysFile " + q(strings.ReplaceAll(filepath.Join(dir, "authorized_keys"), "%", "%%")),
			"StrictModes no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
			"KbdInteractiveAuthentication no", "UsePAM no", "PrintMotd no", "LogLevel VERBOSE", "",
		}, "\n"),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	// As in vault/internal/sshtest: sessions get an empty home, so the
	// machine's rc files stay out of the forced command.
	cmd := exec.Command("ip", "netns", "exec", p.SourceNS,
		"/bin/sh", "-c", `mount --bind "$1" "$2" && shift 2 && exec "$@"`, "source", home, "/root",
		sshdPath, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"), "-E", v.sshdLog)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(v.sshdLog)
			t.Logf("sshd log:\n%s", b)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		banner, err := p.DialFromSource(sourceAddr, 200*time.Millisecond)
		if err == nil && strings.HasPrefix(banner, "SSH-2.0-") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd in %s not accepting connections: %v", p.SourceNS, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return v
}

// configText is a configuration with the source's two exec sources:
// "db1", quick, and "stall", which never sends anything.
func (v *vaultNet) configText(storeDir, windowStart string) string {
	src := func(name string, prio int) string {
		return fmt.Sprintf("[[source]]\nname = %q\nkind = \"exec\"\nhost = %q\nport = %d\nuser = \"root\"\nhost_key = %q\ncommand = %q\npriority = %d\n",
			name, sourceAddr.Addr(), sourceAddr.Port(), v.hostKeyLine, name, prio)
	}
	return fmt.Sprintf("store = %q\n\n[network]\ninterface = %q\naddress = %q\n\n[[window]]\ndays = \"daily\"\nstart = %q\nduration = \"1m\"\n\n%s\n%s",
		storeDir, v.p.VaultIf, linktest.VaultAddr, windowStart, src("db1", 0), src("stall", 1))
}

// rxPackets counts the frames the source side has received from the vault.
func (v *vaultNet) rxPackets(t *testing.T) uint64 {
	t.Helper()
	out := v.p.IP(v.p.SourceNS, "-s", "-j", "link", "show", "dev", v.p.SourceIf)
	var links []struct {
		Stats struct {
			RX struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("counters of %s: %q: %v", v.p.SourceIf, out, err)
	}
	return links[0].Stats.RX.Packets
}

// listening returns the listening TCP and UDP sockets of the vault
// namespace, as ss sees them.
func (v *vaultNet) listening(t *testing.T) []string {
	t.Helper()
	out, err := v.p.Exec(v.p.VaultNS, "ss", "-H", "-ltnu")
	if err != nil {
		fixture.Need(t, "listing sockets needs ss (install iproute2): "+err.Error())
	}
	var socks []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			socks = append(socks, l)
		}
	}
	return socks
}

// scan tries a TCP connection from namespace ns to every port of addr at
// once and waits up to wait for answers; it returns the ports that
// accepted and those that refused. Behind the window's firewall every
// attempt goes unanswered.
func scan(t *testing.T, ns netns.NsHandle, addr netip.Addr, ports []int, wait time.Duration) (open, refused []int) {
	t.Helper()
	fds := make([]int, 0, len(ports))
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	err := linktest.Do(ns, func() error {
		// The sockets belong to the namespace they are created in.
		for _, port := range ports {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			err = unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: addr.As4()})
			if err != nil && !errors.Is(err, unix.EINPROGRESS) {
				return fmt.Errorf("connect to port %d: %w", port, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	pending := map[int]int{} // fd → port
	for i, fd := range fds {
		pending[fd] = ports[i]
	}
	end := time.Now().Add(wait)
	for len(pending) > 0 {
		left := time.Until(end)
		if left <= 0 {
			break
		}
		pfds := make([]unix.PollFd, 0, len(pending))
		for fd := range pending {
			pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT})
		}
		n, err := unix.Poll(pfds, int(left.Milliseconds())+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("scan: poll: %v", err)
		}
		if n <= 0 {
			continue
		}
		for _, pf := range pfds {
			if pf.Revents == 0 {
				continue
			}
			fd := int(pf.Fd)
			soErr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			switch {
			case soErr == 0:
				open = append(open, pending[fd])
			case syscall.Errno(soErr) == unix.ECONNREFUSED:
				refused = append(refused, pending[fd])
			default:
				t.Logf("scan: port %d: %v", pending[fd], syscall.Errno(soErr))
			}
			delete(pending, fd)
		}
	}
	return open, refused
}

// clockFrom returns a clock that starts at base and runs with the
// machine's monotonic clock, and converts its times back to the machine's.
func clockFrom(base time.Time) (clock func() time.Time, real func(time.Time) time.Time) {
	start := time.Now()
	return func() time.Time { return base.Add(time.Since(start)) },
		func(t time.Time) time.Time { return start.Add(t.Sub(base)) }
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWindowInNamespaces runs the daemon against the real link and
// firewall of a vault namespace whose only way out is a veth to a source
// namespace running OpenSSH: down before, up with a pull during, and down
// at the deadline although one source never finishes; nothing can reach
// the vault during the window and nothing leaves it after.
func TestWindowInNamespaces(t *testing.T) {
	clock, toReal := clockFrom(t0)
	s, dir := newStore(t, clock)
	v := newVaultNet(t, s.Keys().SSHAuthorizedKey())
	p := v.p
	cfg, err := config.Parse("test.toml", []byte(v.configText(dir, "12:00")))
	if err != nil {
		t.Fatal(err)
	}
	lk := link.NewNetlink(p.VaultHandle())
	// Left up by someone: start-up must take it down.
	if err := lk.Up(context.Background(), p.VaultIf, linktest.VaultAddr, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{
		Store: s, Config: cfg, Dir: dir,
		Link: lk, Firewall: firewall.NewNFTablesAt(p.Vault),
		Dial:  DialIn(p.Vault),
		Clock: clock, Location: time.UTC,
		Grace:   2 * time.Second,
		MinFree: MinFree{Bytes: 1, Fraction: 1e-9},
		Log:     testLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// Before: down, seen from both sides.
	waitFor(t, "start-up link-down record", 5*time.Second, func() bool { return len(ofType(records(t, s), window.RecordLinkDown)) == 1 })
	if up, addrs, err := lk.State(p.VaultIf); err != nil || up || len(addrs) > 0 {
		t.Fatalf("vault interface after start-up: up=%v addrs=%v err=%v", up, addrs, err)
	}
	if c, err := p.Carrier(); err != nil || c {
		t.Fatalf("source side sees carrier=%v (%v) after start-up", c, err)
	}

	// The scanner itself sees an open and a closed port where there is
	// no firewall: the source's own sshd.
	if open, refused := scan(t, p.Source, sourceAddr.Addr(), []int{22, 23}, time.Second); len(open) != 1 || len(refused) != 1 {
		t.Fatalf("control scan of the source's sshd: open %v, refused %v", open, refused)
	}

	const length = 10 * time.Second
	d.OpenNow(length)
	waitFor(t, "vault interface up", 5*time.Second, func() bool { up, _, _ := lk.State(p.VaultIf); return up })
	var deadline time.Time
	for _, r := range records(t, s) {
		if r.Type == window.RecordWindowOpen {
			var o struct{ Deadline time.Time }
			json.Unmarshal(r.Data, &o)
			deadline = toReal(o.Deadline)
		}
	}
	if deadline.IsZero() {
		t.Fatal("no window-open record")
	}

	// During: a pull through the link; nothing listening, nothing answering.
	waitFor(t, "a snapshot of db1", 4*time.Second, func() bool {
		snaps, _ := s.Snapshots()
		return len(snaps) == 1 && snaps[0].Source == "db1"
	})
	if socks := v.listening(t); len(socks) > 0 {
		t.Fatalf("listening sockets in the vault namespace during the window:\n%s", strings.Join(socks, "\n"))
	}
	// A full TCP scan, every port from 1 to 65535, in batches that fit the
	// process's open-file limit.
	const batch = 8192
	for first := 1; first <= 65535; first += batch {
		var ports []int
		for port := first; port < first+batch && port <= 65535; port++ {
			ports = append(ports, port)
		}
		open, refused := scan(t, p.Source, linktest.VaultAddr.Addr(), ports, 300*time.Millisecond)
		if len(open) > 0 || len(refused) > 0 {
			t.Fatalf("scan of the vault from the source: open %v, refused %v; want every port silent", open, refused)
		}
	}
	if _, err := p.DialFromSource(netip.AddrPortFrom(linktest.VaultAddr.Addr(), 22), 700*time.Millisecond); !linktest.IsTimeout(err) {
		t.Fatalf("source connecting to the vault: %v, want a timeout (no answer)", err)
	}
	if up, _, _ := lk.State(p.VaultIf); !up || time.Now().After(deadline) {
		t.Fatalf("the checks during the window outlasted it (%v); make it longer", length)
	}

	// The deadline: the stalled source does not keep the link up.
	var downAfter time.Duration
	for {
		c, err := p.Carrier()
		if err != nil {
			t.Fatal(err)
		}
		if !c {
			downAfter = time.Since(deadline)
			break
		}
		if time.Since(deadline) > 5*time.Second {
			t.Fatal("the vault interface was still up 5s after the deadline")
		}
		time.Sleep(time.Millisecond)
	}
	rx := v.rxPackets(t)
	if downAfter < 0 || downAfter > 2*time.Second {
		t.Fatalf("link down %v after the deadline, want within 2s", downAfter)
	}
	t.Logf("link down %v after the deadline, seen from the source side, with a source stalled", downAfter)

	// After: silence from the vault for the rest of the test.
	waitFor(t, "window-close record", 5*time.Second, func() bool {
		st := d.Status()
		return st.LastWindow != nil && !st.LastWindow.Closed.IsZero()
	})
	if up, addrs, err := lk.State(p.VaultIf); err != nil || up || len(addrs) > 0 {
		t.Fatalf("vault interface after the window: up=%v addrs=%v err=%v", up, addrs, err)
	}
	time.Sleep(5*time.Second - time.Since(deadline) + downAfter)
	if got := v.rxPackets(t); got != rx {
		t.Fatalf("the source side received %d frames from the vault after its link went down", got-rx)
	}

	recs := records(t, s)
	var win []string
	for _, r := range recs[1:] {
		if r.Time.Before(t0) || r.Time.After(t0.Add(time.Minute)) {
			t.Errorf("%s record at %v: not by the injected clock", r.Type, r.Time)
		}
		if r.Type != "snapshot" && r.Type != "pull-failed" {
			win = append(win, r.Type)
		}
	}
	want := []string{"link-down", "window-open", "firewall-on", "link-up", "link-down", "firewall-off", "window-close"}
	if strings.Join(win, " ") != strings.Join(want, " ") {
		t.Fatalf("journal %q, want %q", win, want)
	}
	for _, r := range recs {
		if r.Type == window.RecordLinkDown && r.Seq > 2 {
			t.Logf("link-down record: %s", r.Data)
		}
	}
	st, err := ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastWindow == nil || st.LastWindow.OpenedBy != OpenNow || len(st.Sources) != 2 ||
		st.Sources[0].LastSnapshotID == "" || st.Sources[1].LastError == "" {
		t.Fatalf("status %+v", st)
	}
	snaps, _ := s.Snapshots()
	if len(snaps) != 1 || snaps[0].Bytes != 300000 || snaps[0].Kind != "exec" {
		t.Fatalf("snapshots %+v", snaps)
	}
}

// buildDrawbridge builds the drawbridge command for tests that run it.
func buildDrawbridge(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the drawbridge binary; not with -short")
	}
	return fixture.Build(t, "drawbridge/cmd/drawbridge")[0]
}

// daemonProc is `drawbridge run` running in the background.
type daemonProc struct {
	cmd  *exec.Cmd
	out  string // its standard error
	done chan struct{}
	err  error
}

func startDaemon(t *testing.T, bin string, args ...string) *daemonProc {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "daemon-*.log")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemonProc{cmd: exec.Command(bin, append([]string{"run"}, args...)...), out: f.Name(), done: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = f, f
	d.cmd.Env = append(os.Environ(), "DRAWBRIDGE_STORE=")
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			b, _ := os.ReadFile(d.out)
			t.Logf("drawbridge run %s:\n%s", strings.Join(args, " "), b)
		}
	})
	return d
}

// journalOf reads the journal of the store in dir beside a running daemon.
func journalOf(t *testing.T, dir string) []journal.Record {
	t.Helper()
	s, err := store.Open(dir, store.Options{JournalOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return records(t, s)
}

// TestKillDuringWindow kills `drawbridge run` during a window, leaving the
// link up, and starts it again: the link goes down before anything else,
// and the journal closes the interrupted window. Then SIGTERM during the
// next window: link down, exit status 0.
func TestKillDuringWindow(t *testing.T) {
	bin := buildDrawbridge(t)
	s, dir := newStore(t, time.Now)
	key := s.Keys().SSHAuthorizedKey()
	s.Close() // the daemon takes the store
	v := newVaultNet(t, key)
	p := v.p
	cfgPath := filepath.Join(t.TempDir(), "drawbridge.toml")
	// A scheduled window far from now: only --window-now opens one.
	later := time.Now().Add(12 * time.Hour).Format("15:04")
	if err := os.WriteFile(cfgPath, []byte(v.configText(dir, later)), 0o600); err != nil {
		t.Fatal(err)
	}
	lk := link.NewNetlink(p.VaultHandle())

	// Outside the appliance, without --netns or --take-over-network, run
	// refuses. Tried inside the vault namespace, so that a run that did
	// not refuse would take only that namespace's link.
	out, err := exec.Command("ip", "netns", "exec", p.VaultNS, bin, "run", "--config", cfgPath).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "--take-over-network") {
		t.Fatalf("run without --netns: %v\n%s\nwant exit status 2 and the way out", err, out)
	}
	if len(journalOf(t, dir)) != 1 {
		t.Fatal("run that refused wrote to the journal")
	}

	isUp := func() bool { up, _, _ := lk.State(p.VaultIf); return up }
	count := func(typ string) int { return len(ofType(journalOf(t, dir), typ)) }

	first := startDaemon(t, bin, "--config", cfgPath, "--netns", p.VaultNS, "--window-now", "30s")
	waitFor(t, "the first window's link-up", 10*time.Second, func() bool { return isUp() && count(window.RecordLinkUp) == 1 })
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	if !isUp() {
		t.Fatal("the link went down by itself after the kill; the test proves nothing")
	}
	before := len(journalOf(t, dir))

	started := time.Now()
	second := startDaemon(t, bin, "--config", cfgPath, "--netns", p.VaultNS, "--window-now", "30s")
	waitFor(t, "link down after the restart", 5*time.Second, func() bool { c, _ := p.Carrier(); return !c })
	t.Logf("restarted daemon: link down %v after the process started", time.Since(started).Round(time.Millisecond))
	waitFor(t, "the second window's link-up", 10*time.Second, func() bool { return isUp() && count(window.RecordLinkUp) == 2 })

	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.done:
	case <-time.After(15 * time.Second):
		t.Fatal("drawbridge run did not exit after SIGTERM")
	}
	if second.err != nil {
		t.Fatalf("drawbridge run after SIGTERM: %v, want exit status 0", second.err)
	}
	if up, addrs, _ := lk.State(p.VaultIf); up || len(addrs) > 0 {
		t.Fatalf("vault interface after SIGTERM: up=%v addrs=%v", up, addrs)
	}
	if c, err := nftables.New(nftables.WithNetNSFd(int(p.Vault))); err == nil {
		if tables, err := c.ListTables(); err != nil || len(tables) > 0 {
			t.Fatalf("nftables tables after SIGTERM: %d, %v", len(tables), err)
		}
	}

	recs := journalOf(t, dir)
	var firstOpen uint64
	for _, r := range recs[:before] {
		if r.Type == window.RecordWindowOpen {
			firstOpen = r.Seq
		}
	}
	after := recs[before:]
	var got []string
	for _, r := range after {
		if r.Type != "snapshot" && r.Type != "pull-failed" {
			got = append(got, r.Type)
		}
	}
	want := []string{"link-down", "firewall-off", "window-close", // start-up after the kill
		"window-open", "firewall-on", "link-up", "link-down", "firewall-off", "window-close"} // the window SIGTERM closed
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("journal after the kill %q, want %q", got, want)
	}
	if m := data(t, after[0]); m["reason"] != ReasonStartup {
		t.Fatalf("first record after the kill: %s %v, want the start-up link-down", after[0].Type, m)
	}
	if m := data(t, after[2]); m["reason"] != ReasonInterrupted || m["opened_seq"] != float64(firstOpen) {
		t.Fatalf("window-close after the kill: %v, want interrupted, opened_seq %d", m, firstOpen)
	}
	last := after[len(after)-1]
	if m := data(t, last); last.Type != window.RecordWindowClose || m["reason"] != window.ReasonCancelled {
		t.Fatalf("last record %s %v, want window-close cancelled", last.Type, m)
	}
	st, err := ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastWindow == nil || st.LastWindow.Result != window.ReasonCancelled || st.Open != nil {
		t.Fatalf("status after SIGTERM: %+v", st)
	}
}
