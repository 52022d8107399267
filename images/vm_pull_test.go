//go:build vm

package images

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"drawbridge/hw/link"
	"drawbridge/vault/fixture"
)

// The appliance's network in the end-to-end test: a /30 in the test range,
// the source (sshd, on the tap) first, the appliance second.
const (
	e2eNet      = "198.18.78.0"
	e2eSource   = "198.18.78.1"
	e2eVault    = "198.18.78.2"
	e2eNS       = "dbvm-e2e"
	e2eTap      = "dbvmtap0"
	e2ePass     = "correct horse battery staple"
	e2eAdmin    = "admin horse battery staple"
	e2eTreeSize = 48 << 20
)

// TestPullEndToEnd is the appliance's life in one test: a blank data disk
// formatted after a confirmation typed on the serial console, a store made
// there (the restore passphrase typed twice), the configuration imported
// from a USB stick, a window opened at once, a real sshd source pulled over
// a tap link, scanned from the source side while the window is open and
// found silent after it, a clean power-off, a second boot, and on the host
// the data disk's filesystem clean, the snapshot there, verify clean and the
// restore identical to the source.
func TestPullEndToEnd(t *testing.T) {
	need(t, append(BootRequirements(false),
		Requirement{"/usr/sbin/sshd", "openssh-server"},
		Requirement{"ssh-keygen", "openssh-client"},
		Requirement{"mkfs.vfat", "dosfstools"},
		Requirement{"mcopy", "mtools"},
		Requirement{"e2fsck", "e2fsprogs"},
		Requirement{"ip", "iproute2"},
	))
	if os.Geteuid() != 0 {
		fixture.Need(t, "needs root: network namespaces and tap interfaces")
	}
	a := image(t, "prod", false)
	work := t.TempDir()
	bin := hostBinaries(t)

	// The source host and what it offers.
	tree := filepath.Join(work, "tree")
	writeTree(t, tree)
	src := filepath.Join(work, "source")
	exec.Command("ip", "netns", "del", e2eNS).Run() // left by a killed run
	sh(t, "bash", "demo-source", "up", src, "--ns", e2eNS, "--tap", e2eTap, "--net", e2eNet,
		"--agent", filepath.Join(bin, "drawbridge-agent"))
	t.Cleanup(func() { exec.Command("bash", "demo-source", "down", src).Run() })
	hostKey := strings.TrimSpace(readFile(t, filepath.Join(src, "host_key")))

	// The USB stick carrying the configuration. Its daily window starts
	// half a day from now, so that the test's one window is the one
	// drawbridge.window_now opens: a run at the scheduled hour would
	// otherwise pull twice.
	cfg := fmt.Sprintf(`store = "/data/store"

[network]
interface = "eth0"
address = "%s/30"

[[window]]
days = "daily"
start = "%s"
duration = "1h"

[[source]]
name = "e2e"
kind = "agent"
host = "%s"
user = "root"
host_key = "%s"
paths = [%q]
`, e2eVault, time.Now().UTC().Add(12*time.Hour).Format("15:04"), e2eSource, hostKey, tree)
	stick := filepath.Join(work, "stick.img")
	writeFile(t, filepath.Join(work, "drawbridge.toml"), cfg)
	sh(t, "mkfs.vfat", "-C", "-n", "CONFIG", stick, "32768")
	sh(t, "mcopy", "-i", stick, filepath.Join(work, "drawbridge.toml"), "::drawbridge.toml")

	data := filepath.Join(work, "data.img")
	sh(t, "truncate", "-s", "4G", data)

	// First boot: format, store, configuration, window.
	v := bootVM(t, a, "--netns", e2eNS, "--data", data, "--stick", stick, "--tap", e2eTap,
		"--append", "drawbridge.window_now=10m")
	// Each answer is typed a moment after its prompt, as a person would:
	// a prompt is written before its terminal stops echoing.
	answer := func(prompt string, n int, text string) {
		t.Helper()
		v.waitNth(prompt, n, 5*time.Minute)
		time.Sleep(2 * time.Second)
		v.typeLine(text)
	}
	answer(`type "format vda" and enter`, 1, "format vda")
	answer("Restore passphrase:", 1, e2ePass)
	answer("Repeat it:", 1, e2ePass)
	key := v.waitForLine("ssh-ed25519 ", 5*time.Minute)
	sh(t, "bash", "demo-source", "authorize", src, key)

	// The configuration import shows the changes and wants a yes and the
	// admin passphrase, chosen now (typed twice).
	v.waitFor("+ source e2e", 2*time.Minute)
	answer("Type yes to apply", 1, "yes")
	answer("New admin passphrase:", 1, e2eAdmin)
	answer("Repeat it:", 2, e2eAdmin)
	v.waitFor("drawbridge: ready", readyTimeout)
	if v.has(e2ePass) || v.has(e2eAdmin) {
		t.Error("a passphrase was echoed on the console")
	}

	// The window opens at once: the pull logs in. While it runs, the
	// appliance is scanned from the source side.
	sshdLog := filepath.Join(src, "sshd.log")
	waitLog(t, sshdLog, "Accepted publickey", 3*time.Minute)
	ns, err := netns.GetFromName(e2eNS)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	guest := netip.MustParseAddr(e2eVault)
	answers, err := scanAll(ns, netip.MustParseAddr(e2eSource), guest, 3*time.Second)
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	if strings.Contains(readFile(t, sshdLog), "Closing connection to") {
		t.Fatalf("the pull ended before the scan did: the scan did not run inside the window\n%s", readFile(t, sshdLog))
	}
	if len(answers) > 0 {
		t.Errorf("during the window the appliance answered %d probes from the source side: %v", len(answers), answers)
	}
	if !neighReachable(t, guest) {
		t.Errorf("the appliance's link was not up during the scan (no neighbour entry on the source side)")
	}

	// After the pull, the link goes down: nothing answers at all.
	waitLog(t, sshdLog, "Closing connection to", 5*time.Minute)
	deadline := time.Now().Add(30 * time.Second)
	for {
		answers, err = scanAll(ns, netip.MustParseAddr(e2eSource), guest, 2*time.Second)
		if err != nil {
			t.Fatalf("scan: %v", err)
		}
		if len(answers) == 0 && !pingAnswers(guest) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the pull the appliance still answers: %v", answers)
		}
		time.Sleep(time.Second)
	}

	// A reboot asked for at the console (QEMU runs with -no-reboot, so
	// it exits).
	v.consolePower('r', "drawbridge: rebooting")
	checkDataDisk(t, bin, data, tree, 1)

	// Second boot: no question asked, the snapshot still there; a power
	// off asked for at the console.
	v2 := bootVM(t, a, "--netns", e2eNS, "--data", data, "--tap", e2eTap)
	v2.waitFor("drawbridge: ready", readyTimeout)
	if v2.has("format vda") || v2.has("Restore passphrase") {
		t.Errorf("the second boot asked a first-boot question:\n%s", v2.console())
	}
	v2.consolePower('o', "drawbridge: power off")
	checkDataDisk(t, bin, data, tree, 1)
}

// consolePower asks the full-screen console on the serial line to power
// off ('o') or reboot ('r'), confirms, and waits until PID 1 said done and
// QEMU exited.
func (v *vm) consolePower(key byte, done string) {
	v.t.Helper()
	keys := func(s string) {
		if _, err := io.WriteString(v.stdin, s); err != nil {
			v.t.Fatalf("type %q: %v", s, err)
		}
	}
	// The status screen is drawn by cursor moves: words, not lines.
	v.waitFor("Windows", time.Minute)
	time.Sleep(time.Second)
	n := v.count("reboot")
	keys("p")
	v.waitCount("reboot", n+1, 30*time.Second)
	n = v.count("Really")
	keys(string(key))
	v.waitCount("Really", n+1, 30*time.Second)
	keys("y")
	v.waitFor(done, time.Minute)
	if _, err := v.waitExit(powerOffTimeout); err != nil {
		v.t.Fatal(err)
	}
}

// hostBinaries builds drawbridge and drawbridge-agent for this machine, and
// returns the directory that holds them.
func hostBinaries(t *testing.T) string {
	t.Helper()
	return filepath.Dir(fixture.Build(t, "drawbridge/cmd/drawbridge", "drawbridge/cmd/drawbridge-agent")[0])
}

// writeTree makes the source's tree: text, an empty file, a symlink and
// enough incompressible bytes that the pull lasts a few seconds.
func writeTree(t *testing.T, dir string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "etc", "app"), 0o755))
	writeFile(t, filepath.Join(dir, "etc", "app", "app.conf"), "listen = 8080\n")
	writeFile(t, filepath.Join(dir, "empty"), "")
	must(t, os.Symlink("etc/app/app.conf", filepath.Join(dir, "link")))
	b := make([]byte, e2eTreeSize)
	rand.Read(b)
	must(t, os.WriteFile(filepath.Join(dir, "data.bin"), b, 0o600))
}

// checkDataDisk checks the data disk image after a power-off: the
// filesystem is clean, the store holds want snapshots, verify is clean,
// and the latest snapshot restores identical to tree.
func checkDataDisk(t *testing.T, bin, data, tree string, want int) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", data).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn of the data disk: %v\n%s", err, out)
	}
	mnt := t.TempDir()
	sh(t, "mount", "-o", "ro,loop", data, mnt)
	defer exec.Command("umount", mnt).Run()
	// A copy: verify and restore may write the index, a cache.
	store := filepath.Join(t.TempDir(), "store")
	sh(t, "cp", "-a", filepath.Join(mnt, "store"), store)
	t.Cleanup(func() { exec.Command("chattr", "-R", "-i", store).Run() })

	out := sh(t, filepath.Join(bin, "drawbridge"), "snapshots", "--store", store, "--json")
	var snaps []struct{ ID, Source string }
	if err := json.Unmarshal([]byte(out), &snaps); err != nil {
		t.Fatalf("snapshots --json: %v\n%s", err, out)
	}
	if len(snaps) != want {
		t.Fatalf("%d snapshots on the data disk, want %d: %s\njournal:\n%s", len(snaps), want, out,
			sh(t, filepath.Join(bin, "drawbridge"), "journal", "--store", store))
	}
	pass := filepath.Join(t.TempDir(), "pass")
	writeFile(t, pass, e2ePass+"\n")
	sh(t, filepath.Join(bin, "drawbridge"), "verify", "--deep", "--store", store, "--passphrase-file", pass)
	target := filepath.Join(t.TempDir(), "restored")
	sh(t, filepath.Join(bin, "drawbridge"), "restore", "latest", "--target", target, "--store", store, "--passphrase-file", pass)
	restored := filepath.Join(target, strings.TrimPrefix(tree, "/"))
	if _, err := os.Stat(restored); err != nil {
		restored = target
	}
	if out, err := exec.Command("diff", "-r", "--no-dereference", tree, restored).CombinedOutput(); err != nil {
		t.Fatalf("the restore differs from the source: %v\n%s", err, out)
	}
}

// waitNth waits until n console lines (or n-1 lines and the prompt being
// written) contain s: the n-th time a prompt is asked.
func (v *vm) waitNth(s string, n int, timeout time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v.mu.Lock()
		got := 0
		for _, l := range v.lines {
			if strings.Contains(l, s) {
				got++
			}
		}
		if strings.Contains(ansi.ReplaceAllString(v.partial, ""), s) {
			got++
		}
		eof := v.eof
		v.mu.Unlock()
		if got >= n {
			return
		}
		if eof {
			v.t.Fatalf("QEMU exited before the console said %q %d times", s, n)
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("the console did not say %q %d times within %v", s, n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// count is how many times the console said s so far.
func (v *vm) count(s string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, l := range v.lines {
		n += strings.Count(l, s)
	}
	return n + strings.Count(ansi.ReplaceAllString(v.partial, ""), s)
}

// waitCount waits until the console said s n times.
func (v *vm) waitCount(s string, n int, timeout time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for v.count(s) < n {
		if time.Now().After(deadline) {
			v.t.Fatalf("the console did not say %q a %d-th time within %v", s, n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitForLine waits for a whole console line containing s and returns the
// text from s to the end of that line.
func (v *vm) waitForLine(s string, timeout time.Duration) string {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l := v.linesMatching(s); len(l) > 0 {
			return strings.TrimSpace(l[0][strings.Index(l[0], s):])
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("the console did not say a line with %q within %v", s, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitLog(t *testing.T, file, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(readFile(t, file), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not say %q within %v:\n%s", file, s, timeout, readFile(t, file))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// neighReachable reports whether the source side has a resolved
// neighbour entry for addr: the appliance's link answered ARP.
func neighReachable(t *testing.T, addr netip.Addr) bool {
	out, err := exec.Command("ip", "-n", e2eNS, "neigh", "show", addr.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ip neigh: %v\n%s", err, out)
	}
	s := string(out)
	return strings.Contains(s, "lladdr") && !strings.Contains(s, "FAILED") && !strings.Contains(s, "INCOMPLETE")
}

func pingAnswers(addr netip.Addr) bool {
	return exec.Command("ip", "netns", "exec", e2eNS, "ping", "-c", "2", "-W", "1", addr.String()).Run() == nil
}

// scanAll probes every TCP port with a SYN and every UDP port with a
// datagram, from inside ns, and returns every answer the target gave
// within wait after the last probe: a SYN-ACK or RST, a UDP reply, or an
// ICMP message.
func scanAll(ns netns.NsHandle, from, to netip.Addr, wait time.Duration) ([]string, error) {
	var tcpc, icmpc net.PacketConn
	var udpc *net.UDPConn
	err := link.InNamespace(ns, func() error {
		var err error
		if tcpc, err = net.ListenPacket("ip4:tcp", from.String()); err != nil {
			return err
		}
		if icmpc, err = net.ListenPacket("ip4:icmp", from.String()); err != nil {
			return err
		}
		udpc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: from.AsSlice()})
		return err
	})
	if err != nil {
		return nil, err
	}
	defer tcpc.Close()
	defer icmpc.Close()
	defer udpc.Close()

	var answers []string
	var n atomic.Int32
	record := func(s string) {
		if n.Add(1) <= 20 {
			answers = append(answers, s)
		}
	}
	done := make(chan struct{}, 3)
	listen := func(c net.PacketConn, what string) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 1500)
		for {
			m, addr, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if addr.String() != to.String() && !strings.HasPrefix(addr.String(), to.String()+":") {
				continue
			}
			// The pull's own segments come from the appliance too: an
			// answer to the scan is addressed to the scan's port.
			if what == "tcp" && (m < 4 || binary.BigEndian.Uint16(buf[2:]) != scanPort) {
				continue
			}
			record(fmt.Sprintf("%s from %s: % x", what, addr, buf[:min(m, 24)]))
		}
	}
	go listen(tcpc, "tcp")
	go listen(icmpc, "icmp")
	go listen(udpc, "udp")

	src := from.As4()
	dst := to.As4()
	seg := make([]byte, 20)
	for port := 1; port <= 65535; port++ {
		binary.BigEndian.PutUint16(seg[0:], scanPort)
		binary.BigEndian.PutUint16(seg[2:], uint16(port))
		binary.BigEndian.PutUint32(seg[4:], uint32(port)*2654435761)
		binary.BigEndian.PutUint32(seg[8:], 0)
		seg[12] = 5 << 4
		seg[13] = 0x02 // SYN
		binary.BigEndian.PutUint16(seg[14:], 64240)
		seg[16], seg[17] = 0, 0
		binary.BigEndian.PutUint16(seg[16:], tcpChecksum(src, dst, seg))
		if _, err := tcpc.WriteTo(seg, &net.IPAddr{IP: to.AsSlice()}); err != nil {
			return nil, fmt.Errorf("SYN to port %d: %w", port, err)
		}
		if _, err := udpc.WriteToUDP([]byte{0}, &net.UDPAddr{IP: to.AsSlice(), Port: port}); err != nil && !isTransient(err) {
			return nil, fmt.Errorf("datagram to port %d: %w", port, err)
		}
		if port%4096 == 0 {
			time.Sleep(10 * time.Millisecond) // let the tap drain
		}
	}
	time.Sleep(wait)
	tcpc.Close()
	icmpc.Close()
	udpc.Close()
	for range 3 {
		<-done
	}
	if n.Load() > 20 {
		answers = append(answers, fmt.Sprintf("… %d answers in all", n.Load()))
	}
	return answers, nil
}

// scanPort is the source port of the SYNs; nothing listens on it.
const scanPort = 40000

// isTransient is a send error that says nothing about the target: a full
// queue, or an ICMP error of an earlier datagram reported on this one
// (which the ICMP listener records).
func isTransient(err error) bool {
	s := err.Error()
	return strings.Contains(s, "no buffer space") || strings.Contains(s, "connection refused") ||
		strings.Contains(s, "resource temporarily unavailable")
}

func tcpChecksum(src, dst [4]byte, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	add([]byte{0, 6, byte(len(seg) >> 8), byte(len(seg))})
	add(seg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.Bytes(), errb.Bytes())
	}
	return out.String()
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, name, s string) {
	t.Helper()
	must(t, os.WriteFile(name, []byte(s), 0o644))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
