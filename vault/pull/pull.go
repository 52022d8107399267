// Package pull takes snapshots of sources over SSH (DESIGN.md §4): the vault
// is always the client, it authenticates with its own key only, and it talks
// only to a host that presents exactly the pinned host key.
//
// Each kind of source (agent, sftp, exec) is a Puller registered under its
// kind; Run connects, hands the connection to the source's Puller and
// commits what it wrote.
//
// Invariants: a host key other than the pinned one ends the pull before
// authentication, with ErrHostKeyMismatch and a `hostkey-refused` journal
// record; only a Puller that returned without error leads to a commit, and
// every failed pull aborts its writer and leaves a `pull-failed` record; a
// source that sends nothing for its idle timeout fails; one failing source
// never stops the others.
package pull

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"drawbridge/vault/config"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

// ErrHostKeyMismatch is wrapped by the error of a pull whose source
// presented a host key other than the pinned one.
var ErrHostKeyMismatch = errors.New("host key refused")

// Puller takes one snapshot of a source over an SSH connection into w and
// returns the snapshot's root tree and the roots it covers. It neither
// commits nor aborts w: Run does, after it returns.
type Puller func(ctx context.Context, c *ssh.Client, src *config.Source, w *store.Writer, log *slog.Logger) (root tree.ID, paths []string, err error)

var (
	pullersMu sync.RWMutex
	pullers   = map[string]Puller{}
)

// Register makes p the Puller of sources of kind. Packages call it from
// init; registering a kind twice panics, as that is a programming error.
func Register(kind string, p Puller) {
	pullersMu.Lock()
	defer pullersMu.Unlock()
	if _, dup := pullers[kind]; dup {
		panic("pull: Register called twice for kind " + kind)
	}
	pullers[kind] = p
}

func puller(kind string) (Puller, bool) {
	pullersMu.RLock()
	defer pullersMu.RUnlock()
	p, ok := pullers[kind]
	return p, ok
}

// Options configure Run.
type Options struct {
	// Concurrency is how many sources are pulled at once; 0 means 2.
	Concurrency int
	// Log receives diagnostics; nil means slog.Default().
	Log *slog.Logger
	// Dial opens the TCP connection to a source; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Clock gives the time of journal records and of exec snapshots'
	// files; nil means time.Now.
	Clock func() time.Time
	// Progress, when set, is called once per source as its pull starts,
	// with the counters the pull updates.
	Progress func(source string, p *store.Progress)
}

// Result is the outcome of one source's pull.
type Result struct {
	Source   string
	Snapshot *store.Snapshot // nil when Err is set
	Err      error
}

// ConnectTimeout bounds the TCP connection and the SSH handshake.
const ConnectTimeout = 15 * time.Second

// connectTimeout is ConnectTimeout, lowered by tests.
var connectTimeout = ConnectTimeout

// Run pulls the configured sources (only the one called only, unless only
// is empty) into s: in order of priority, then name, at most
// o.Concurrency at a time. It returns one Result per source in that order.
func Run(ctx context.Context, s *store.Store, cfg *config.Config, only string, o Options) []Result {
	o = o.withDefaults()
	var srcs []*config.Source
	for i := range cfg.Sources {
		if only == "" || cfg.Sources[i].Name == only {
			srcs = append(srcs, &cfg.Sources[i])
		}
	}
	if only != "" && len(srcs) == 0 {
		return []Result{{Source: only, Err: fmt.Errorf("no source named %q in %s", only, cfg.Path)}}
	}
	sort.SliceStable(srcs, func(i, j int) bool {
		if srcs[i].Priority != srcs[j].Priority {
			return srcs[i].Priority < srcs[j].Priority
		}
		return srcs[i].Name < srcs[j].Name
	})
	results := make([]Result, len(srcs))
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	for i, src := range srcs {
		results[i].Source = src.Name
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i].Err = fmt.Errorf("pull %s: not started: %w", src.Name, context.Cause(ctx))
			journalFailure(s, src, results[i].Err, o, o.Log.With("source", src.Name))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i].Snapshot, results[i].Err = pullSource(ctx, s, src, o)
		}()
	}
	wg.Wait()
	return results
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = 2
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Dial == nil {
		var d net.Dialer
		o.Dial = d.DialContext
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return o
}

// pullSource pulls one source and journals a failure.
func pullSource(ctx context.Context, s *store.Store, src *config.Source, o Options) (*store.Snapshot, error) {
	log := o.Log.With("source", src.Name, "kind", src.Kind, "host", src.Host)
	snap, err := pullOnce(ctx, s, src, o, log)
	if err == nil {
		log.Info("pulled", "snapshot", snap.ID[:12], "files", snap.Files, "bytes", snap.Bytes,
			"new_bytes", snap.NewBytes, "seconds", snap.Seconds)
		return snap, nil
	}
	err = fmt.Errorf("pull %s: %w", src.Name, err)
	log.Warn("pull failed", "err", err)
	journalFailure(s, src, err, o, log)
	return nil, err
}

// journalFailure records a failed pull.
func journalFailure(s *store.Store, src *config.Source, err error, o Options, log *slog.Logger) {
	// The error may quote what the source sent: keep the message printable.
	msg := Printable(fmt.Sprintf("pull of %s from %s failed: %v", src.Name, src.Host, err))
	if _, jerr := s.Journal().Append(s.Keys().Identity, o.Clock(), "pull-failed", msg, map[string]any{
		"source": src.Name, "host": src.Host, "kind": src.Kind, "error": err.Error()}); jerr != nil {
		log.Error("cannot journal a failed pull", "err", jerr)
	}
}

// pullOnce connects, runs the source's Puller and commits.
func pullOnce(ctx context.Context, s *store.Store, src *config.Source, o Options, log *slog.Logger) (*store.Snapshot, error) {
	p, ok := puller(src.Kind)
	if !ok {
		return nil, fmt.Errorf("no puller for sources of kind %q in this drawbridge", src.Kind)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	conn, err := connect(ctx, s, src, o, log)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	w, err := s.NewWriter(ctx, src.Name, store.WriterOptions{
		Warn: func(path string, err error) { log.Warn("skipped", "path", path, "err", err) },
	})
	if err != nil {
		return nil, err
	}
	if o.Progress != nil {
		o.Progress(src.Name, w.Progress())
	}
	pctx := withClock(ctx, o.Clock)
	if src.Kind == config.KindSFTP {
		base, err := latestSnapshot(s, src.Name)
		if err != nil {
			w.Abort()
			return nil, err
		}
		pctx = context.WithValue(pctx, resumeBaseKey{}, base)
	}
	root, paths, err := p(pctx, conn.client, src, w, log)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		w.Abort()
		return nil, conn.explain(err)
	}
	w.SetOrigin(src.Kind, src.Host, ssh.FingerprintSHA256(src.HostKeyParsed))
	snap, err := w.Commit(root, paths)
	if err != nil {
		return nil, fmt.Errorf("commit snapshot: %w", err)
	}
	return snap, nil
}

type clockKey struct{}

// resumeBaseKey holds, for an SFTP pull, the id of the source's latest
// snapshot (see resume.go).
type resumeBaseKey struct{}

// latestSnapshot is the id of source's latest snapshot, or "".
func latestSnapshot(s *store.Store, source string) (string, error) {
	all, err := s.Snapshots()
	if err != nil {
		return "", fmt.Errorf("list snapshots: %w", err)
	}
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Source == source {
			return all[i].ID, nil
		}
	}
	return "", nil
}

func resumeBase(ctx context.Context) string {
	b, _ := ctx.Value(resumeBaseKey{}).(string)
	return b
}

// withClock hands Run's clock to Pullers, whose signature has no room for it.
func withClock(ctx context.Context, clock func() time.Time) context.Context {
	return context.WithValue(ctx, clockKey{}, clock)
}

// now is the pull's clock.
func now(ctx context.Context) time.Time {
	if c, ok := ctx.Value(clockKey{}).(func() time.Time); ok {
		return c()
	}
	return time.Now()
}
