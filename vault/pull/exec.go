package pull

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"drawbridge/vault/config"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"
)

func init() { Register(config.KindExec, pullExec) }

// maxStderr caps what is kept of a source command's standard error.
const maxStderr = 64 << 10

// StreamName is the name of the one file in an exec source's snapshot.
func StreamName(source string) string { return source + ".stream" }

// pullExec keeps the standard output of the source's command as one file.
// The source's forced command decides what runs; the configured command is
// sent as the SSH command line (the forced command sees it in
// SSH_ORIGINAL_COMMAND). Only a command that exits with status 0 makes a
// snapshot: a stream cut short by a failure must not pass for a whole one.
func pullExec(ctx context.Context, c *ssh.Client, src *config.Source, w *store.Writer, log *slog.Logger) (tree.ID, []string, error) {
	var none tree.ID
	sess, err := c.NewSession()
	if err != nil {
		return none, nil, fmt.Errorf("open an SSH session: %w", err)
	}
	defer sess.Close()
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return none, nil, err
	}
	stderr := &cappedBuffer{max: maxStderr}
	sess.Stderr = stderr
	if err := sess.Start(src.Command); err != nil {
		return none, nil, fmt.Errorf("run the command: %w", err)
	}
	name := StreamName(src.Name)
	e := tree.Entry{Name: name, Kind: tree.File, Mode: 0o600, MtimeSec: now(ctx).Unix()}
	w.Progress().Files.Add(1)
	if err := w.Content(stdout, &e); err != nil {
		return none, nil, fmt.Errorf("store the command's output: %w%s", err, stderr.explain())
	}
	if err := sess.Wait(); err != nil {
		return none, nil, commandFailed(err, stderr)
	}
	if n := stderr.len(); n > 0 {
		log.Info("command wrote to standard error", "bytes", n, "stderr", stderr.text())
	}
	root, err := w.Tree(&tree.Tree{Entries: []tree.Entry{e}})
	if err != nil {
		return none, nil, err
	}
	return root, []string{"/" + name}, nil
}

func commandFailed(err error, stderr *cappedBuffer) error {
	var exit *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case errors.As(err, &exit) && exit.Signal() != "":
		return fmt.Errorf("the command was killed by signal %s%s", Printable(exit.Signal()), stderr.explain())
	case errors.As(err, &exit):
		return fmt.Errorf("the command exited with status %d%s", exit.ExitStatus(), stderr.explain())
	case errors.As(err, &missing):
		return fmt.Errorf("the command ended without an exit status%s", stderr.explain())
	}
	return fmt.Errorf("wait for the command: %w%s", err, stderr.explain())
}

// cappedBuffer keeps the first max bytes written to it and counts the rest.
type cappedBuffer struct {
	max int

	mu      sync.Mutex
	buf     []byte
	dropped int64
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := min(len(p), b.max-len(b.buf))
	b.buf = append(b.buf, p[:keep]...)
	b.dropped += int64(len(p) - keep)
	return len(p), nil
}

func (b *cappedBuffer) len() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(len(b.buf)) + b.dropped
}

// text is what was kept, made safe to print.
func (b *cappedBuffer) text() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Printable(string(b.buf))
	if b.dropped > 0 {
		s += fmt.Sprintf(" [%d more bytes not kept]", b.dropped)
	}
	return s
}

// explain is ": standard error: …" for an error message, or "".
func (b *cappedBuffer) explain() string {
	if b.len() == 0 {
		return ""
	}
	return "; its standard error: " + b.text()
}

// Printable makes text from a source safe to print on an operator's
// terminal and in the journal: invalid UTF-8 and control characters other
// than newline and tab, and format characters (bidirectional overrides),
// become U+FFFD.
func Printable(s string) string {
	s = strings.TrimSpace(s)
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || (unicode.In(r, unicode.Cc, unicode.Cf) && r != '\n' && r != '\t') {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}
