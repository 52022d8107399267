package pull

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"

	"drawbridge/vault/config"
	"drawbridge/vault/store"
)

// Algorithms the vault offers. Only modern ones: a source that cannot speak
// them is refused rather than met with weaker cryptography. Strict key
// exchange (the Terrapin fix) is always requested by x/crypto's client.
var (
	kexAlgos = []string{ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519}
	ciphers  = cipherOrder()
	macs     = []string{ssh.HMACSHA256ETM, ssh.HMACSHA512ETM}
)

// cipherOrder puts AES-GCM first where the CPU has AES and carry-less
// multiply instructions (about twice ChaCha20-Poly1305's speed there, in Go
// and in OpenSSH) and ChaCha20-Poly1305 first elsewhere, where AES-GCM is
// slow. AES-128 comes before AES-256: its 10 rounds against 14 make the
// bulk of a pull cheaper on both ends, and 128-bit keys are not what limits
// an SSH session's security.
func cipherOrder() []string {
	if cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ || cpu.ARM64.HasAES && cpu.ARM64.HasPMULL {
		return []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305}
	}
	return []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES128GCM, ssh.CipherAES256GCM}
}

// hostKeyAlgorithms returns the signature algorithms that a host key of
// the pinned key's type may use; for RSA, only the SHA-2 ones.
func hostKeyAlgorithms(pinned ssh.PublicKey) []string {
	if pinned.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{pinned.Type()}
}

// sourceConn is an SSH connection to a source.
type sourceConn struct {
	client *ssh.Client
	nc     *idleConn
	stop   func() bool // stops closing the connection when the context ends
}

// Close closes the connection.
func (c *sourceConn) Close() error {
	c.stop()
	return c.client.Close()
}

// explain turns the error of a pull into one that names the connection's
// fate when the connection is what failed: a stalled source shows up as
// channels closing, not as a timeout, to the code reading them.
func (c *sourceConn) explain(err error) error {
	if nerr := c.nc.failure(); nerr != nil {
		var ne net.Error
		if errors.As(nerr, &ne) && ne.Timeout() {
			return fmt.Errorf("the source sent nothing for %v (idle timeout): %w", c.nc.idle, err)
		}
		return fmt.Errorf("connection to the source lost (%v): %w", nerr, err)
	}
	return err
}

// connect dials the source and completes the SSH handshake within
// ConnectTimeout, accepting only the pinned host key and offering only the
// vault's own key.
func connect(ctx context.Context, s *store.Store, src *config.Source, o Options, log *slog.Logger) (*sourceConn, error) {
	if src.HostKeyParsed == nil {
		return nil, fmt.Errorf("source %s has no pinned host key", src.Name)
	}
	signer, err := ssh.NewSignerFromKey(s.Keys().SSH)
	if err != nil {
		return nil, fmt.Errorf("vault SSH key: %w", err)
	}
	addr := net.JoinHostPort(src.Host, strconv.Itoa(src.Port))
	dctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	raw, err := o.Dial(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	idle := src.Timeout
	if idle <= 0 {
		idle = config.DefaultTimeout
	}
	nc := &idleConn{Conn: raw, idle: idle}
	// The handshake must finish in time too; after it, the idle timeout
	// alone applies.
	if dl, ok := dctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stopHandshake := context.AfterFunc(dctx, func() { raw.SetDeadline(time.Unix(1, 0)) })

	var presented ssh.PublicKey
	cfg := &ssh.ClientConfig{
		Config: ssh.Config{
			KeyExchanges: kexAlgos,
			Ciphers:      ciphers,
			MACs:         macs,
		},
		User: src.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			presented = key
			if !bytes.Equal(key.Marshal(), src.HostKeyParsed.Marshal()) {
				return ErrHostKeyMismatch
			}
			return nil
		},
		HostKeyAlgorithms: hostKeyAlgorithms(src.HostKeyParsed),
		ClientVersion:     "SSH-2.0-Drawbridge",
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if !stopHandshake() && err == nil {
		// The connect timeout or the context ended just as the
		// handshake completed.
		sc.Close()
		err = fmt.Errorf("handshake not finished in time: %w", context.Cause(dctx))
	}
	if err != nil {
		raw.Close()
		if presented != nil && !bytes.Equal(presented.Marshal(), src.HostKeyParsed.Marshal()) {
			return nil, refuseHostKey(s, src, presented, nil, o, log)
		}
		// A source that no longer has a key of the pinned type presents
		// none: that is a changed key too.
		var ane *ssh.AlgorithmNegotiationError
		if errors.As(err, &ane) && ane.What == "host key" {
			return nil, refuseHostKey(s, src, nil, ane.RequestedAlgorithms, o, log)
		}
		var ne net.Error
		if ctx.Err() == nil && (dctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()) {
			return nil, fmt.Errorf("connect to %s: no SSH session within %v: %w", addr, connectTimeout, err)
		}
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	// From here on every read and write pushes the deadline out by the
	// idle timeout.
	nc.armed.Store(true)
	nc.touch()
	client := ssh.NewClient(sc, chans, reqs)
	c := &sourceConn{client: client, nc: nc}
	c.stop = context.AfterFunc(ctx, func() { client.Close() })
	return c, nil
}

// refuseHostKey journals a refused host key and returns the pull's error.
// presented is nil when the source offered no key of the pinned type;
// offered then lists the types it has.
func refuseHostKey(s *store.Store, src *config.Source, presented ssh.PublicKey, offered []string, o Options, log *slog.Logger) error {
	want := ssh.FingerprintSHA256(src.HostKeyParsed)
	got, shown := "", ""
	if presented != nil {
		got = ssh.FingerprintSHA256(presented)
		shown = presented.Type() + " " + got
	} else {
		if len(offered) > 8 {
			offered = offered[:8]
		}
		shown = Printable(fmt.Sprintf("no %s key (it offers %s)", src.HostKeyParsed.Type(), strings.Join(offered, ", ")))
	}
	msg := fmt.Sprintf("host key of %s (%s) refused: pinned %s %s, presented %s", src.Name, src.Host, src.HostKeyParsed.Type(), want, shown)
	log.Error("host key refused", "expected", want, "presented", shown)
	if _, err := s.Journal().Append(s.Keys().Identity, o.Clock(), "hostkey-refused", msg, map[string]any{
		"source": src.Name, "host": src.Host, "expected": want, "presented": got}); err != nil {
		log.Error("cannot journal a refused host key", "err", err)
	}
	return fmt.Errorf("%w: %s presented %s, the configuration pins %s %s",
		ErrHostKeyMismatch, src.Host, shown, src.HostKeyParsed.Type(), want)
}

// idleConn is a connection on which every Read and Write moves the
// deadline to idle from now: a source that stops sending (or taking) data
// for that long fails the pull instead of hanging it.
//
// The wrapper is installed below the SSH client, whose reader goroutine is
// always blocked in Read, so silence from the source is always noticed.
type idleConn struct {
	net.Conn
	idle  time.Duration
	armed atomic.Bool // false during the handshake, which has a fixed deadline

	mu  sync.Mutex
	err error // the first read or write error
}

func (c *idleConn) touch() {
	if c.armed.Load() {
		c.Conn.SetDeadline(time.Now().Add(c.idle))
	}
}

func (c *idleConn) Read(b []byte) (int, error) {
	c.touch()
	n, err := c.Conn.Read(b)
	c.note(err)
	return n, err
}

func (c *idleConn) Write(b []byte) (int, error) {
	c.touch()
	n, err := c.Conn.Write(b)
	c.note(err)
	return n, err
}

func (c *idleConn) note(err error) {
	if err == nil || errors.Is(err, net.ErrClosed) {
		return
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// failure returns the first error reading or writing, if any; a timeout
// is an os.ErrDeadlineExceeded.
func (c *idleConn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
