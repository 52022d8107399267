package pull

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"drawbridge/vault/config"
	"drawbridge/vault/internal/sshtest"
	"drawbridge/vault/store"
)

// randomFile writes n random bytes to a new file and returns its path.
func randomFile(t testing.TB, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	p := filepath.Join(t.TempDir(), "stream.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// execHost starts a source whose forced command for the vault's key is cmd.
func execHost(t testing.TB, s *store.Store, cmd string) *sshtest.Host {
	t.Helper()
	return sshtest.Start(t, sshtest.Options{AuthorizedKeys: []string{keyLine(s, `restrict,command="`+cmd+`"`)}})
}

func TestExecPull(t *testing.T) {
	s := newStore(t)
	file, data := randomFile(t, 6_000_000)
	const n = 5_000_000
	h := execHost(t, s, "head -c 5000000 "+file)
	src := sourceFor(t, h, "db1", config.KindExec)
	src.Command = "pg_dumpall" // the forced command decides what runs

	tx := h.SourceTxBytes()
	var res Result
	d := since(func() { res = pullOne(t, s, src) })
	if res.Err != nil {
		t.Fatalf("pull: %v\n%s", res.Err, h.Log())
	}
	sent := h.SourceTxBytes() - tx
	t.Logf("exec pull of %d bytes: %.2f s, %.1f MB/s; the source sent %d bytes", n, d.Seconds(), n/1e6/d.Seconds(), sent)
	sn := res.Snapshot
	if sn.Kind != "exec" || sn.Host != src.Host || sn.HostKey != ssh.FingerprintSHA256(h.HostKey) ||
		sn.Bytes != n || sn.Files != 1 || sn.Status != "ok" {
		t.Fatalf("snapshot %+v", sn)
	}
	if len(sn.Paths) != 1 || sn.Paths[0] != "/db1.stream" {
		t.Fatalf("paths %v", sn.Paths)
	}
	if sent < n {
		t.Fatalf("the source sent only %d bytes for a %d-byte stream", sent, n)
	}
	dir := restoreSnap(t, s, sn, "")
	got, err := os.ReadFile(filepath.Join(dir, "db1.stream"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data[:n]) {
		t.Fatalf("restored stream of %d bytes differs from the source's", len(got))
	}
	fi, err := os.Stat(filepath.Join(dir, "db1.stream"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || time.Since(fi.ModTime()) > time.Minute {
		t.Fatalf("stream file mode %v mtime %v", fi.Mode(), fi.ModTime())
	}
	if recs := records(t, s, "pull-failed"); len(recs) != 0 {
		t.Fatalf("pull-failed records after a good pull: %v", recs)
	}
}

// TestExecFailures: a command that fails in any way makes no snapshot,
// leaves a pull-failed record, and leaves earlier snapshots intact.
func TestExecFailures(t *testing.T) {
	s := newStore(t)
	file, _ := randomFile(t, 1_000_000)
	good := pullOne(t, s, sourceFor(t, execHost(t, s, "cat "+file), "good", config.KindExec))
	if good.Err != nil {
		t.Fatal(good.Err)
	}
	for _, tc := range []struct {
		name, cmd string
		want      []string // in the error
	}{
		{"exit1", "echo partial; exit 1", []string{"exited with status 1"}},
		{"hostile", "head -c 3000000 /dev/urandom; exit 3", []string{"exited with status 3"}},
		{"stderr", "echo 'out of disk \033[31m' >&2; exit 2", []string{"status 2", "out of disk \uFFFD[31m"}},
		{"signal", "head -c 100000 /dev/zero; kill -KILL $$", []string{"signal KILL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := execHost(t, s, tc.cmd)
			before := len(records(t, s, "pull-failed"))
			res := pullOne(t, s, sourceFor(t, h, tc.name, config.KindExec))
			if res.Err == nil || res.Snapshot != nil {
				t.Fatalf("pull of a failing command: %+v", res)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.Err.Error(), w) {
					t.Errorf("error %q does not say %q", res.Err, w)
				}
			}
			recs := records(t, s, "pull-failed")
			if len(recs) != before+1 {
				t.Fatalf("%d pull-failed records, want %d", len(recs), before+1)
			}
			if m := decode(t, recs[len(recs)-1]); m["source"] != tc.name || m["host"] != h.Addr[:strings.LastIndexByte(h.Addr, ':')] || m["error"] == "" {
				t.Fatalf("pull-failed data %v", m)
			}
		})
	}
	all := snapshots(t, s)
	if len(all) != 1 || all[0].ID != good.Snapshot.ID {
		t.Fatalf("snapshots after failed pulls: %+v", all)
	}
	verifyClean(t, s)
}

// TestExecStall: a source that sends nothing fails the pull within its
// idle timeout.
func TestExecStall(t *testing.T) {
	s := newStore(t)
	h := execHost(t, s, "sleep 600")
	src := sourceFor(t, h, "stall", config.KindExec)
	src.Timeout = 5 * time.Second
	var res Result
	d := since(func() { res = pullOne(t, s, src) })
	if res.Err == nil {
		t.Fatal("a stalled source made a snapshot")
	}
	if d > 10*time.Second {
		t.Fatalf("a stalled source with a 5s idle timeout failed after %v", d)
	}
	if !strings.Contains(res.Err.Error(), "idle timeout") {
		t.Errorf("error does not name the idle timeout: %v", res.Err)
	}
	t.Logf("stalled after %v: %v", d.Round(time.Millisecond), res.Err)
	if len(snapshots(t, s)) != 0 || len(records(t, s, "pull-failed")) != 1 {
		t.Fatal("want no snapshot and one pull-failed record")
	}
}

func TestHostKeyMismatch(t *testing.T) {
	s := newStore(t)
	h := execHost(t, s, "echo should not run")
	src := sourceFor(t, h, "db1", config.KindExec)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if src.HostKeyParsed, err = ssh.NewPublicKey(pub); err != nil {
		t.Fatal(err)
	}
	res := pullOne(t, s, src)
	if !errors.Is(res.Err, ErrHostKeyMismatch) || res.Snapshot != nil {
		t.Fatalf("pull with a wrong pinned key: %+v", res)
	}
	recs := records(t, s, "hostkey-refused")
	if len(recs) != 1 {
		t.Fatalf("%d hostkey-refused records", len(recs))
	}
	m := decode(t, recs[0])
	if m["source"] != "db1" || m["expected"] != ssh.FingerprintSHA256(src.HostKeyParsed) ||
		m["presented"] != ssh.FingerprintSHA256(h.HostKey) || m["host"] != src.Host {
		t.Fatalf("hostkey-refused data %v", m)
	}
	if len(records(t, s, "pull-failed")) != 1 || len(snapshots(t, s)) != 0 {
		t.Fatal("want one pull-failed record and no snapshot")
	}
	// The vault never offered its key to a host it does not trust.
	if strings.Contains(h.Log(), "Accepted publickey") || strings.Contains(h.Log(), "Postponed publickey") {
		t.Fatalf("the vault authenticated to a refused host:\n%s", h.Log())
	}

	// A source that no longer has a key of the pinned type is refused
	// the same way.
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if src.HostKeyParsed, err = ssh.NewPublicKey(&ec.PublicKey); err != nil {
		t.Fatal(err)
	}
	res = pullOne(t, s, src)
	if !errors.Is(res.Err, ErrHostKeyMismatch) || !strings.Contains(res.Err.Error(), "no ecdsa-sha2-nistp256 key (it offers ssh-ed25519)") {
		t.Fatalf("pull pinning a key type the source lacks: %v", res.Err)
	}
	recs = records(t, s, "hostkey-refused")
	if len(recs) != 2 || decode(t, recs[1])["expected"] != ssh.FingerprintSHA256(src.HostKeyParsed) {
		t.Fatalf("hostkey-refused records %+v", recs)
	}
}

// TestAlgorithms: what the vault negotiates with OpenSSH is what it offers
// and nothing weaker, and strict key exchange is on.
func TestAlgorithms(t *testing.T) {
	s := newStore(t)
	h := sshtest.Start(t, sshtest.Options{
		AuthorizedKeys: []string{keyLine(s, `restrict,command="true"`)},
		ExtraConfig:    []string{"LogLevel DEBUG1"},
	})
	// The key exchange messages are in clear: record the start of both
	// directions.
	rec := &recorder{}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &recordingConn{Conn: c, r: rec}, nil
	}
	res := Run(context.Background(), s, &config.Config{Sources: []config.Source{sourceFor(t, h, "algos", config.KindExec)}}, "",
		Options{Log: testLog(t), Dial: dial})
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	log := h.Log()
	if !strings.Contains(log, "kex: algorithm: "+kexAlgos[0]) && !strings.Contains(log, "kex: algorithm: "+kexAlgos[1]) {
		t.Errorf("key exchange not one of %v:\n%s", kexAlgos, log)
	}
	for _, want := range []string{"kex: host key algorithm: ssh-ed25519",
		"kex: client->server cipher: " + ciphers[0], "kex: server->client cipher: " + ciphers[0]} {
		if !strings.Contains(log, want) {
			t.Errorf("sshd did not log %q:\n%s", want, log)
		}
	}
	// Both sides offer strict key exchange, so it is on.
	sent, got := rec.bytes()
	if !bytes.Contains(sent, []byte("kex-strict-c-v00@openssh.com")) || !bytes.Contains(got, []byte("kex-strict-s-v00@openssh.com")) {
		t.Errorf("strict key exchange not offered by both sides")
	}
	for _, weak := range []string{"diffie-hellman", "ecdh-sha2", "aes128-ctr", "hmac-sha1", "ssh-rsa,", "cbc"} {
		if bytes.Contains(sent, []byte(weak)) {
			t.Errorf("the vault offered %s", weak)
		}
	}

	// An sshd that offers nothing the vault accepts is refused.
	h2 := sshtest.Start(t, sshtest.Options{
		AuthorizedKeys: []string{keyLine(s, `restrict,command="true"`)},
		ExtraConfig:    []string{"Ciphers aes128-ctr,aes256-ctr", "MACs hmac-sha2-256,hmac-sha1"},
	})
	weak := pullOne(t, s, sourceFor(t, h2, "weak", config.KindExec))
	if weak.Err == nil || !strings.Contains(weak.Err.Error(), "no common algorithm") {
		t.Fatalf("pull from a source offering only weaker ciphers: %v", weak.Err)
	}
}

// TestConcurrentSources: sources run in priority order, two at a time, and
// a failing source stops none of the others.
func TestConcurrentSources(t *testing.T) {
	s := newStore(t)
	cfg := &config.Config{Path: "test.toml"}
	for i, name := range []string{"b-slow", "a-slow", "z-broken"} {
		cmd := "sleep 2; head -c 1000000 /dev/zero"
		if name == "z-broken" {
			cmd = "exit 1"
		}
		src := sourceFor(t, execHost(t, s, cmd), name, config.KindExec)
		src.Priority = i % 2 // b-slow and z-broken first
		cfg.Sources = append(cfg.Sources, src)
	}
	var (
		res     []Result
		mu      sync.Mutex
		started []string
	)
	clock := func() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC) }
	progress := func(source string, p *store.Progress) {
		mu.Lock()
		started = append(started, source)
		mu.Unlock()
	}
	d := since(func() {
		res = Run(context.Background(), s, cfg, "", Options{Concurrency: 2, Log: testLog(t), Clock: clock, Progress: progress})
	})
	if len(started) != 3 { // z-broken starts too: its command fails
		t.Errorf("progress reported for %v", started)
	}
	if recs := records(t, s, "pull-failed"); len(recs) != 1 || !recs[0].Time.Equal(clock()) {
		t.Errorf("pull-failed records %+v, want one at the pull's clock", recs)
	}
	var order []string
	for _, r := range res {
		order = append(order, r.Source)
	}
	if strings.Join(order, " ") != "b-slow z-broken a-slow" {
		t.Fatalf("results in order %v", order)
	}
	if res[0].Err != nil || res[2].Err != nil || res[1].Err == nil {
		t.Fatalf("results %+v", res)
	}
	// Two slow pulls of 2 s each: together if they overlapped.
	if d > 3900*time.Millisecond {
		t.Fatalf("two 2-second pulls with concurrency 2 took %v", d)
	}
	if n := len(snapshots(t, s)); n != 2 {
		t.Fatalf("%d snapshots", n)
	}
	// Only the named source runs.
	res = Run(context.Background(), s, cfg, "a-slow", Options{Log: testLog(t)})
	if len(res) != 1 || res[0].Source != "a-slow" || res[0].Err != nil {
		t.Fatalf("only a-slow: %+v", res)
	}
	res = Run(context.Background(), s, cfg, "nope", Options{Log: testLog(t)})
	if len(res) != 1 || res[0].Err == nil {
		t.Fatalf("unknown source: %+v", res)
	}
	verifyClean(t, s)
}

// TestConnectTimeout: a host that accepts the connection and never speaks
// SSH fails the pull within the connect timeout.
func TestConnectTimeout(t *testing.T) {
	defer func(d time.Duration) { connectTimeout = d }(connectTimeout)
	connectTimeout = time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent until the test ends
		}
	}()
	s := newStore(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	hk, _ := ssh.NewPublicKey(pub)
	src := config.Source{Name: "silent", Kind: config.KindExec, Host: "127.0.0.1", Port: l.Addr().(*net.TCPAddr).Port,
		User: "root", HostKeyParsed: hk, Timeout: time.Hour}
	var res Result
	d := since(func() { res = pullOne(t, s, src) })
	if res.Err == nil || !strings.Contains(res.Err.Error(), "no SSH session within 1s") || d > 3*time.Second {
		t.Fatalf("pull from a silent host: %v after %v", res.Err, d)
	}
}

// TestCancel: a pull whose context ends fails at once and commits nothing.
func TestCancel(t *testing.T) {
	s := newStore(t)
	h := execHost(t, s, "head -c 100000 /dev/zero; sleep 600")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel)
	var res []Result
	d := since(func() {
		res = Run(ctx, s, &config.Config{Sources: []config.Source{sourceFor(t, h, "c", config.KindExec)}}, "", Options{Log: testLog(t)})
	})
	if res[0].Err == nil || d > 5*time.Second {
		t.Fatalf("cancelled pull: %v after %v", res[0].Err, d)
	}
	if len(snapshots(t, s)) != 0 {
		t.Fatal("a cancelled pull made a snapshot")
	}
}

type recorder struct {
	mu         sync.Mutex
	sent, recv []byte
}

func (r *recorder) bytes() ([]byte, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.sent), bytes.Clone(r.recv)
}

// recordingConn records the first 8 KiB each way.
type recordingConn struct {
	net.Conn
	r *recorder
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.r.mu.Lock()
	if len(c.r.recv) < 8<<10 {
		c.r.recv = append(c.r.recv, p[:n]...)
	}
	c.r.mu.Unlock()
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.r.mu.Lock()
	if len(c.r.sent) < 8<<10 {
		c.r.sent = append(c.r.sent, p...)
	}
	c.r.mu.Unlock()
	return c.Conn.Write(p)
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain":             "plain",
		" a\tb\nc ":         "a\tb\nc",
		"esc\x1b[2J":        "esc\uFFFD[2J",
		"bad\xffutf8":       "bad\uFFFDutf8",
		"bidi\u202eevil":    "bidi\uFFFDevil",
		"nul\x00in\rmiddle": "nul\uFFFDin\uFFFDmiddle",
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
	b := &cappedBuffer{max: 4}
	b.Write([]byte("abcdef"))
	b.Write([]byte("gh"))
	if got := b.text(); got != "abcd [4 more bytes not kept]" || !bytes.HasPrefix(b.buf, []byte("abcd")) {
		t.Fatalf("capped buffer: %q", got)
	}
}
