// Package agent is the source side of the agent protocol
// (docs/agent-protocol.md): what drawbridge-agent runs on a source host.
//
// It only reads. Invariants: nothing is written to the filesystem; files and
// directories are opened read-only, without following symlinks on the way
// (openat2; before Linux 5.6 only the last component is guarded, and the inode
// opened must still be the one listed), without updating access times where
// the kernel allows it; every object is judged by what lstat says of it. A
// file's content is sent only after a READ, and each file is read once: its
// chunks are hashed as they are cut and kept until the vault's WANT, so the
// bytes sent are always the bytes announced. Memory is bounded: at most
// agentproto.MaxPending files are listed and unfinished, files are read one
// at a time, and the chunks announced and not yet sent live in one ring of
// ringBytes (more for very large chunks), in at most
// agentproto.MaxOpenSegments segments. Linux only.
package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/chunk"
)

// Version is the agent's version, sent in WELCOME.
const Version = "2.0.0"

// Options configures Serve.
type Options struct {
	// Hostname is sent in WELCOME; os.Hostname() when empty.
	Hostname string
	// Log receives diagnostics as text log lines; nil discards them.
	Log io.Writer
	// Base is the directory served as "/": paths in the conversation are
	// absolute paths under it. Empty means "/". Symlinks in Base itself are
	// followed once, when Serve starts.
	Base string
}

// withoutOpenat2 makes Serve open files as on kernels without openat2, for
// tests.
var withoutOpenat2 = false

// errDone ends the conversation without error: BYE, or the vault closed
// standard input.
var errDone = errors.New("the vault ended the conversation")

// flushEvery bounds how long a frame may wait in the output buffer while
// the agent is busy reading the filesystem.
const flushEvery = 100 * time.Millisecond

// Serve speaks the agent protocol on in and out until the vault sends BYE or
// closes in (nil), the vault breaks the protocol (an error wrapping
// agentproto.ErrProtocol), writing to out fails, or ctx ends. A goroutine
// blocked reading in may outlive Serve until in returns.
func Serve(ctx context.Context, in io.Reader, out io.Writer, opt Options) error {
	r := agentproto.NewReader(in)
	m, err := r.Next()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read HELLO: %w", err)
	}
	hello, ok := m.(agentproto.Hello)
	if !ok {
		return fmt.Errorf("%w: first message is %s, want HELLO", agentproto.ErrProtocol, typeName(m))
	}
	params := hello.Params()
	if err := params.Validate(); err != nil {
		return fmt.Errorf("%w: HELLO: %v", agentproto.ErrProtocol, err)
	}

	s := &session{
		roots:  hello.Roots,
		params: params,
		w:      &writer{bw: bufio.NewWriterSize(out, 64<<10)},
		log:    slog.New(slog.DiscardHandler),
		slots:  make(chan struct{}, agentproto.MaxPending),
		listed: make(chan pending, agentproto.MaxPending),
		reads:  make(chan pending, agentproto.MaxPending),
		wants:  make(chan agentproto.Want, agentproto.MaxOpenSegments+1),
		// One fewer than MaxOpenSegments: the sender holds one more.
		segs: make(chan *outSeg, agentproto.MaxOpenSegments-1),
		ring: newRing(params.Max),
	}
	if opt.Log != nil {
		s.log = slog.New(slog.NewTextHandler(opt.Log, nil))
	}
	if err := s.openBase(opt.Base); err != nil {
		return err
	}
	defer unix.Close(s.baseFD)

	host := opt.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	if err := s.w.send(agentproto.Welcome{Agent: Version, Host: truncate(host, agentproto.MaxName)}); err != nil {
		return err
	}
	if err := s.w.flush(); err != nil {
		return err
	}
	s.log.Info("pull started", "roots", hello.Roots, "chunker", params)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, f := range []func(context.Context) error{s.walk, s.content, s.flusher} {
		wg.Go(func() {
			if err := f(ctx); err != nil {
				cancel(err)
			}
		})
	}
	// Not waited for: it may be blocked reading in.
	go func() { cancel(s.dispatch(r)) }()
	<-ctx.Done()
	wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, errDone) {
		s.log.Error("pull failed", "err", err)
		return err
	}
	s.log.Info("pull ended")
	return nil
}

// session is one conversation.
type session struct {
	roots   []string
	params  chunk.Params
	base    string // host path of "/"
	baseFD  int    // O_PATH descriptor of base, to open paths beneath it
	openat2 bool   // the kernel has openat2 and lets this process use it
	w       *writer
	log     *slog.Logger

	nextID uint64 // walk only: the id of the last ENTRY sent

	// A file takes a slot when it is listed and gives it back when it is
	// skipped or has been read: the walk stops while all slots are taken.
	slots  chan struct{}
	listed chan pending // files listed, waiting for READ or SKIP, in order
	reads  chan pending // files to read, in the order of the READs
	wants  chan agentproto.Want
	segs   chan *outSeg // segments announced, in order, for the sender
	ring   *ring        // the bytes of the chunks in segs and of those being cut

	senderIdle atomic.Bool   // the sender waits for a segment or its WANT
	announced  atomic.Uint64 // segments announced so far
	nWants     uint64        // dispatch only: WANTs received so far
}

// pending is a listed regular file and what its ENTRY said.
type pending struct {
	id             uint64
	path           string
	dev, ino, size uint64
	mtime, ctime   unix.Timespec
}

// dispatch reads the vault's messages after HELLO and hands them on.
// It returns errDone on BYE or end of input.
func (s *session) dispatch(r *agentproto.Reader) error {
	for {
		m, err := r.Next()
		if err == io.EOF {
			return errDone
		}
		if err != nil {
			return fmt.Errorf("read from the vault: %w", err)
		}
		switch m := m.(type) {
		case agentproto.Read:
			f, err := s.answer(m.File, "READ")
			if err != nil {
				return err
			}
			select {
			case s.reads <- f:
			default: // cannot happen: reads holds at most the slots' count
				return fmt.Errorf("agent: read queue full")
			}
		case agentproto.Skip:
			if _, err := s.answer(m.File, "SKIP"); err != nil {
				return err
			}
			<-s.slots
		case agentproto.Want:
			if err := s.want(m); err != nil {
				return err
			}
		case agentproto.Bye:
			return errDone
		default:
			return fmt.Errorf("%w: unexpected %s from the vault", agentproto.ErrProtocol, typeName(m))
		}
	}
}

// answer takes the file waiting longest for an answer, which must be id.
func (s *session) answer(id uint64, what string) (pending, error) {
	select {
	case f := <-s.listed:
		if f.id != id {
			return f, fmt.Errorf("%w: %s for file %d, but file %d is the next waiting for an answer", agentproto.ErrProtocol, what, id, f.id)
		}
		return f, nil
	default:
		return pending{}, fmt.Errorf("%w: %s for file %d, but no file is waiting for an answer", agentproto.ErrProtocol, what, id)
	}
}

// want queues w for the sender, which checks it against the segment it
// answers.
func (s *session) want(w agentproto.Want) error {
	if s.nWants++; s.nWants > s.announced.Load() {
		return fmt.Errorf("%w: WANT for file %d segment %d, which is not waiting for one", agentproto.ErrProtocol, w.File, w.Segment)
	}
	select {
	case s.wants <- w:
		return nil
	default:
		return fmt.Errorf("%w: WANT for file %d segment %d, more WANTs than segments announced", agentproto.ErrProtocol, w.File, w.Segment)
	}
}

// flusher sends buffered frames that wait while the walk or a read is busy.
func (s *session) flusher(ctx context.Context) error {
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.w.flush(); err != nil {
				return err
			}
		}
	}
}

// writer is standard output, shared by the walk and the reads.
type writer struct {
	mu  sync.Mutex
	bw  *bufio.Writer
	buf []byte
	err error // sticky: a broken output ends the conversation
}

func (w *writer) send(m agentproto.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	b, err := agentproto.AppendFrame(w.buf[:0], m)
	if err != nil {
		return fmt.Errorf("agent: encode %s: %w", typeName(m), err)
	}
	w.buf = b
	if _, err := w.bw.Write(b); err != nil {
		w.err = fmt.Errorf("write to the vault: %w", err)
	}
	return w.err
}

// sendData sends a DATA frame for chunk b, which goes to the buffer or out
// as it is, not copied into a frame first.
func (w *writer) sendData(file, seg, index uint64, b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	h, err := agentproto.AppendDataHeader(w.buf[:0], file, seg, index, len(b))
	if err != nil {
		return fmt.Errorf("agent: encode DATA: %w", err)
	}
	w.buf = h
	if _, err := w.bw.Write(h); err == nil {
		_, err = w.bw.Write(b)
		if err != nil {
			w.err = fmt.Errorf("write to the vault: %w", err)
		}
	} else {
		w.err = fmt.Errorf("write to the vault: %w", err)
	}
	return w.err
}

func (w *writer) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil && w.bw.Buffered() > 0 {
		if err := w.bw.Flush(); err != nil {
			w.err = fmt.Errorf("write to the vault: %w", err)
		}
	}
	return w.err
}

func (s *session) openBase(base string) error {
	if base == "" {
		base = "/"
	}
	base, err := filepath.Abs(base)
	if err != nil {
		return fmt.Errorf("agent: base %q: %w", base, err)
	}
	fd, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("agent: open base %s: %w", base, err)
	}
	s.base, s.baseFD = base, fd
	// openat2 is missing before Linux 5.6, and some seccomp filters refuse
	// it with EPERM: probe it once on the base itself.
	probe, err := unix.Openat2(fd, ".", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH})
	if err == nil {
		unix.Close(probe)
		s.openat2 = !withoutOpenat2
	} else {
		s.log.Warn("openat2 unavailable: intermediate symlinks are guarded only by inode checks", "err", err)
	}
	return nil
}

// hostPath is where path p of the conversation is on this host.
func (s *session) hostPath(p string) string {
	switch {
	case p == "/":
		return s.base
	case s.base == "/":
		return p
	}
	return s.base + p
}

func typeName(m agentproto.Message) string {
	return agentproto.TypeName(m.Type())
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
