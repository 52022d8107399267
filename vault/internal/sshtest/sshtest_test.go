package sshtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"drawbridge/hw/link/linktest"
)

// clientKey returns a fresh client key and its authorized_keys line with
// the given options in front.
func clientKey(t *testing.T, options string) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	if options != "" {
		line = options + " " + line
	}
	return signer, line
}

func dial(h *Host, signer ssh.Signer, hostKey ssh.PublicKey) (*ssh.Client, error) {
	return ssh.Dial("tcp", h.Addr, &ssh.ClientConfig{
		User:            h.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         10 * time.Second,
	})
}

func mustDial(t *testing.T, h *Host, signer ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := dial(h, signer, h.HostKey)
	if err != nil {
		t.Fatalf("dial %s: %v", h.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// output runs the forced command of the key c logged in with.
func output(t *testing.T, c *ssh.Client) []byte {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Output("this command is replaced by the forced one")
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return out
}

func TestForcedCommand(t *testing.T) {
	t.Parallel()
	signer, line := clientKey(t, `restrict,command="echo hello-from-source"`)
	start := time.Now()
	h := Start(t, Options{AuthorizedKeys: []string{line}})
	t.Logf("Start took %v; %s in %s, %s/%s", time.Since(start), h.Addr, h.NS, h.VethHost, h.VethNS)

	if !strings.HasPrefix(h.HostKeyLine, "ssh-ed25519 ") {
		t.Errorf("HostKeyLine = %q", h.HostKeyLine)
	}
	pinned, _, _, _, err := ssh.ParseAuthorizedKey([]byte(h.HostKeyLine))
	if err != nil || !bytes.Equal(pinned.Marshal(), h.HostKey.Marshal()) {
		t.Errorf("HostKeyLine %q does not parse to HostKey: %v", h.HostKeyLine, err)
	}

	c := mustDial(t, h, signer)
	if got := string(output(t, c)); got != "hello-from-source\n" {
		t.Errorf("output = %q, want %q", got, "hello-from-source\n")
	}
	if !strings.Contains(h.Log(), "Accepted publickey for root") {
		t.Error("sshd log does not show the login")
	}
}

func TestHome(t *testing.T) {
	t.Parallel()
	signer, line := clientKey(t, `restrict,command="cat ~/marker; ls -A ~"`)
	h := Start(t, Options{AuthorizedKeys: []string{line}})
	if err := os.WriteFile(filepath.Join(h.Home, "marker"), []byte("source home\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := string(output(t, mustDial(t, h, signer))), "source home\nmarker\n"; got != want {
		t.Errorf("session sees home %q, want %q", got, want)
	}
}

func TestWrongHostKeyRefused(t *testing.T) {
	t.Parallel()
	signer, line := clientKey(t, `restrict,command="echo hello-from-source"`)
	h := Start(t, Options{AuthorizedKeys: []string{line}})

	other, _ := clientKey(t, "")
	c, err := dial(h, signer, other.PublicKey())
	if err == nil {
		c.Close()
		t.Fatal("dial with a wrong pinned host key succeeded")
	}
	if !strings.Contains(err.Error(), "host key mismatch") {
		t.Errorf("dial error = %v, want a host key mismatch", err)
	}

	// An unknown client key is refused by the server too.
	stranger, _ := clientKey(t, "")
	if c, err := dial(h, stranger, h.HostKey); err == nil {
		c.Close()
		t.Fatal("dial with an unauthorized client key succeeded")
	}
}

// sftpConn speaks just enough SFTP version 3 to open files.
type sftpConn struct {
	w  io.Writer
	r  io.Reader
	id uint32
}

const (
	fxpInit    = 1
	fxpVersion = 2
	fxpOpen    = 3
	fxpStatus  = 101
	fxpHandle  = 102

	fxfRead  = 0x01
	fxfWrite = 0x02
	fxfCreat = 0x08
	fxfTrunc = 0x10

	fxPermissionDenied = 3
)

func (c *sftpConn) send(typ byte, payload []byte) error {
	pkt := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)))
	pkt = append(pkt, typ)
	_, err := c.w.Write(append(pkt, payload...))
	return err
}

func (c *sftpConn) recv() (byte, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 1<<16 {
		return 0, nil, fmt.Errorf("sftp packet length %d", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.r, buf); err != nil {
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}

func (c *sftpConn) init() error {
	if err := c.send(fxpInit, binary.BigEndian.AppendUint32(nil, 3)); err != nil {
		return err
	}
	typ, _, err := c.recv()
	if err != nil {
		return err
	}
	if typ != fxpVersion {
		return fmt.Errorf("reply to INIT has type %d", typ)
	}
	return nil
}

// open returns nil if the server hands out a handle, and the status code
// as an error otherwise.
func (c *sftpConn) open(path string, pflags uint32) error {
	c.id++
	p := binary.BigEndian.AppendUint32(nil, c.id)
	p = binary.BigEndian.AppendUint32(p, uint32(len(path)))
	p = append(p, path...)
	p = binary.BigEndian.AppendUint32(p, pflags)
	p = binary.BigEndian.AppendUint32(p, 0) // no attributes
	if err := c.send(fxpOpen, p); err != nil {
		return err
	}
	typ, body, err := c.recv()
	if err != nil {
		return err
	}
	switch {
	case len(body) < 4 || binary.BigEndian.Uint32(body) != c.id:
		return fmt.Errorf("reply to OPEN %d has a wrong id", c.id)
	case typ == fxpHandle:
		return nil
	case typ == fxpStatus && len(body) >= 8:
		return sftpStatus(binary.BigEndian.Uint32(body[4:]))
	}
	return fmt.Errorf("reply to OPEN has type %d", typ)
}

type sftpStatus uint32

func (s sftpStatus) Error() string { return "sftp status " + strconv.Itoa(int(s)) }

func TestSFTPReadOnly(t *testing.T) {
	t.Parallel()
	signer, line := clientKey(t, "restrict")
	h := Start(t, Options{AuthorizedKeys: []string{line}, SFTPReadOnly: true})
	c := mustDial(t, h, signer)

	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		t.Fatalf("sftp subsystem: %v", err)
	}
	sc := &sftpConn{w: w, r: r}
	if err := sc.init(); err != nil {
		t.Fatalf("sftp init: %v", err)
	}
	if err := sc.open(filepath.Join(h.Dir, "sshd_config"), fxfRead); err != nil {
		t.Errorf("open for reading: %v", err)
	}
	probe := filepath.Join(h.Dir, "written-over-sftp")
	err = sc.open(probe, fxfWrite|fxfCreat|fxfTrunc)
	var st sftpStatus
	if !errors.As(err, &st) || st != fxPermissionDenied {
		t.Errorf("open for writing: %v, want status %d (permission denied)", err, fxPermissionDenied)
	}
	if _, err := os.Stat(probe); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read-only sftp created %s: %v", probe, err)
	}
}

func TestNoSFTPUnlessAsked(t *testing.T) {
	t.Parallel()
	signer, line := clientKey(t, "restrict")
	h := Start(t, Options{AuthorizedKeys: []string{line}})
	s, err := mustDial(t, h, signer).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RequestSubsystem("sftp"); err == nil {
		t.Error("sftp subsystem started without SFTPReadOnly")
	}
}

func TestCounters(t *testing.T) {
	t.Parallel()
	const size = 1_000_000
	down, downLine := clientKey(t, fmt.Sprintf(`restrict,command="head -c %d /dev/zero"`, size))
	up, upLine := clientKey(t, `restrict,command="cat >/dev/null"`)
	h := Start(t, Options{AuthorizedKeys: []string{downLine, upLine}})

	rx0, tx0 := h.SourceRxBytes(), h.SourceTxBytes()
	if got := len(output(t, mustDial(t, h, down))); got != size {
		t.Fatalf("read %d bytes, want %d", got, size)
	}
	rx1, tx1 := h.SourceRxBytes(), h.SourceTxBytes()
	t.Logf("download of %d bytes: source rx +%d, tx +%d", size, rx1-rx0, tx1-tx0)
	if tx1-tx0 < size {
		t.Errorf("source tx grew by %d, want at least %d", tx1-tx0, size)
	}
	if rx1 == rx0 || rx1-rx0 >= size/10 {
		t.Errorf("source rx grew by %d during a download, want a little", rx1-rx0)
	}

	s, err := mustDial(t, h, up).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(""); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := s.Wait(); err != nil {
		t.Fatalf("upload: %v", err)
	}
	rx2, tx2 := h.SourceRxBytes(), h.SourceTxBytes()
	t.Logf("upload of %d bytes: source rx +%d, tx +%d", size, rx2-rx1, tx2-tx1)
	if rx2-rx1 < size {
		t.Errorf("source rx grew by %d, want at least %d", rx2-rx1, size)
	}
}

func TestTwoHosts(t *testing.T) {
	t.Parallel()
	signer, line := clientKey(t, `restrict,command="echo hello-from-source"`)
	a := Start(t, Options{AuthorizedKeys: []string{line}})
	b := Start(t, Options{AuthorizedKeys: []string{line}})
	if a.Addr == b.Addr || a.NS == b.NS || a.VethHost == b.VethHost || a.Dir == b.Dir {
		t.Fatalf("hosts share resources: %+v %+v", a, b)
	}
	if bytes.Equal(a.HostKey.Marshal(), b.HostKey.Marshal()) {
		t.Error("hosts share a host key")
	}
	// Each host's pinned key is wrong for the other.
	if c, err := dial(a, signer, b.HostKey); err == nil {
		c.Close()
		t.Error("host a accepted with host b's key pinned")
	}

	var wg sync.WaitGroup
	outs := make([]string, 2)
	errs := make([]error, 2)
	for i, h := range []*Host{a, b} {
		wg.Go(func() {
			c, err := dial(h, signer, h.HostKey)
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			s, err := c.NewSession()
			if err != nil {
				errs[i] = err
				return
			}
			defer s.Close()
			out, err := s.Output("")
			outs[i], errs[i] = string(out), err
		})
	}
	wg.Wait()
	for i := range outs {
		if errs[i] != nil || outs[i] != "hello-from-source\n" {
			t.Errorf("host %d: output %q, error %v", i, outs[i], errs[i])
		}
	}
}

func TestExtraConfig(t *testing.T) {
	t.Parallel()
	signer, line := clientKey(t, `restrict,command="echo hello-from-source"`)
	h := Start(t, Options{AuthorizedKeys: []string{line}, ExtraConfig: []string{"LogLevel DEBUG1"}})
	output(t, mustDial(t, h, signer))
	if !strings.Contains(h.Log(), "debug1:") {
		t.Error("LogLevel DEBUG1 from ExtraConfig not in effect")
	}
}

func TestSSHDConfig(t *testing.T) {
	for _, tc := range []struct {
		name        string
		o           Options
		has, hasNot []string
	}{
		{
			name:   "defaults",
			has:    []string{"LogLevel VERBOSE", "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no"},
			hasNot: []string{"Subsystem"},
		},
		{
			name: "sftp",
			o:    Options{SFTPReadOnly: true},
			has:  []string{"Subsystem sftp internal-sftp -R"},
		},
		{
			name:   "override",
			o:      Options{ExtraConfig: []string{"loglevel=DEBUG3", "PermitRootLogin forced-commands-only"}},
			has:    []string{"loglevel=DEBUG3", "PermitRootLogin forced-commands-only"},
			hasNot: []string{"LogLevel VERBOSE", "PermitRootLogin prohibit-password"},
		},
		{
			name:   "match block does not override",
			o:      Options{ExtraConfig: []string{"Match User nobody", "  LogLevel QUIET"}},
			has:    []string{"LogLevel VERBOSE", "Match User nobody"},
			hasNot: nil,
		},
		{
			name: "listen address stays",
			o:    Options{ExtraConfig: []string{"ListenAddress 198.18.0.9:2222"}},
			has:  []string{"ListenAddress 198.19.0.2:22", "ListenAddress 198.18.0.9:2222"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := sshdConfig(tc.o, fromBe32(be32(testRange.Addr())+firstBlock<<2+2), "/d")
			lines := strings.Split(cfg, "\n")
			for _, want := range tc.has {
				if !contains(lines, want) {
					t.Errorf("config lacks %q:\n%s", want, cfg)
				}
			}
			for _, bad := range tc.hasNot {
				for _, l := range lines {
					if strings.HasPrefix(l, bad) {
						t.Errorf("config has %q:\n%s", l, cfg)
					}
				}
			}
		})
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

func TestCleanup(t *testing.T) {
	t.Parallel()
	var h *Host
	t.Run("host", func(t *testing.T) {
		_, line := clientKey(t, "restrict")
		h = Start(t, Options{AuthorizedKeys: []string{line}})
	})
	if h == nil {
		t.Fatal("host not started")
	}
	if strings.Contains(ipList(t, "netns", "list"), h.NS) {
		t.Errorf("namespace %s still listed", h.NS)
	}
	if _, err := net.InterfaceByName(h.VethHost); err == nil {
		t.Errorf("link %s still exists", h.VethHost)
	}
	if _, err := os.Stat(h.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("host dir %s still there: %v", h.Dir, err)
	}
	// The address may already serve another test's host; look for sshd by
	// its config path instead.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if cmd, err := os.ReadFile(p); err == nil && bytes.Contains(cmd, []byte(h.Dir)) {
			t.Errorf("%s still runs: %q", filepath.Dir(p), cmd)
		}
	}
}

func ipList(t *testing.T, args ...string) string {
	t.Helper()
	out, err := ipCmd(nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// deadPID returns a pid that no process has right now.
func deadPID(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	for pid := min(pidMax-1, 9_999_999); pid > 1; pid-- {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); errors.Is(err, fs.ErrNotExist) {
			return pid
		}
	}
	t.Fatal("no free pid")
	return 0
}

// TestLeftoversOfCrashedRun leaves a namespace, a link with an address, a
// process inside the namespace and a directory under the name of a process
// that is gone,
// as a test binary killed before its cleanups would, and checks that the
// next Start removes them. It is not parallel so that it runs alone.
func TestLeftoversOfCrashedRun(t *testing.T) {
	Require(t)
	pid := deadPID(t)
	ns := fmt.Sprintf("%s%d-1", nsPrefix, pid)
	hostEnd := fmt.Sprintf("%s%dh1", vethPrefix, pid)
	nsEnd := fmt.Sprintf("%s%ds1", vethPrefix, pid)
	addr := fromBe32(be32(testRange.Addr()) + firstBlock<<2 + 1)
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("%s%d-1-1", dirPrefix, pid))
	t.Cleanup(func() {
		teardown(ns, hostEnd)
		os.RemoveAll(dir)
	})
	if err := os.MkdirAll(filepath.Join(dir, "home"), 0o700); err != nil {
		t.Fatal(err)
	}

	ipList(t, "netns", "add", ns)
	ipList(t, "link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd, "netns", ns)
	ipList(t, "addr", "add", addr.String()+"/30", "dev", hostEnd)
	ip, _ := linktest.IPCommand()
	orphan := exec.Command(ip, "netns", "exec", ns, "sleep", "600")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		orphan.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		orphan.Process.Kill()
		<-exited
	})

	signer, line := clientKey(t, `restrict,command="echo hello-from-source"`)
	h := Start(t, Options{AuthorizedKeys: []string{line}})

	if strings.Contains(ipList(t, "netns", "list"), ns) {
		t.Errorf("stale namespace %s survived", ns)
	}
	if _, err := net.InterfaceByName(hostEnd); err == nil {
		t.Errorf("stale link %s survived", hostEnd)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale directory %s survived: %v", dir, err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Errorf("process in the stale namespace still running")
	}
	if got := string(output(t, mustDial(t, h, signer))); got != "hello-from-source\n" {
		t.Errorf("output = %q", got)
	}
}

func TestOwnerPID(t *testing.T) {
	for _, tc := range []struct {
		name, prefix string
		sep          byte
		pid          int
		ok           bool
	}{
		{"dbssh-123-4", nsPrefix, '-', 123, true},
		{"dbs123h4", vethPrefix, 'h', 123, true},
		{"dbs123s4", vethPrefix, 's', 123, true},
		{"drawbridge-sshtest-123-4-98765", dirPrefix, '-', 123, true},
		{"dbssh-123-", nsPrefix, '-', 0, false},
		{"dbssh--4", nsPrefix, '-', 0, false},
		{"dbssh-x1-4", nsPrefix, '-', 0, false},
		{"dbs123h", vethPrefix, 'h', 0, false},
		{"dbsomething", vethPrefix, 'h', 0, false},
		{"eth0", vethPrefix, 'h', 0, false},
	} {
		pid, ok := ownerPID(tc.name, tc.prefix, tc.sep)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("ownerPID(%q) = %d, %v, want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
}
