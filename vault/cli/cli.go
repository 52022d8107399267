// Package cli is the drawbridge operator command line (DESIGN.md §9): it
// parses arguments, wires the store, and prints results for people (and
// JSON for scripts). Exit status: 0 success, 1 the work failed or damage was
// found, 2 bad usage.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"strings"

	"drawbridge/vault/export"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
)

// Env is everything a command touches outside the store.
type Env struct {
	Stdin  *os.File
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// Main runs one drawbridge command and returns its exit status.
func Main(ctx context.Context, argv []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Getenv("GOMEMLIMIT") == "" {
		// The vault works in bounded memory: collect garbage before the heap
		// outgrows this, instead of letting it double the live set.
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	err := run(ctx, argv, &env)
	if err == nil {
		return 0
	}
	var ex exitError
	if errors.As(err, &ex) {
		if ex.msg != "" {
			fmt.Fprintf(env.Stderr, "drawbridge: %s\n", ex.msg)
		}
		return ex.code
	}
	if errors.Is(err, errUsage) {
		fmt.Fprintf(env.Stderr, "drawbridge: %s\n", strings.TrimPrefix(err.Error(), "usage: "))
		fmt.Fprintln(env.Stderr, "Run 'drawbridge help' for the commands.")
		return 2
	}
	fmt.Fprintf(env.Stderr, "drawbridge: %v\n", err)
	return 1
}

// defaultMemoryLimit is the Go heap's soft limit (GOMEMLIMIT overrides it).
const defaultMemoryLimit = 64 << 20

// exitError carries an exit status with an optional message.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

type command struct {
	name    string
	summary string
	valued  []string
	boolean []string
	run     func(ctx context.Context, c *call) error
}

// Flags every command accepts.
var (
	globalValued  = []string{"store", "passphrase-file"}
	globalBoolean = []string{"json", "quiet", "q", "help", "h"}
)

var commands []command

func init() {
	commands = []command{
		{"init", "create a new store (sets the restore passphrase)", []string{"min-retention"}, nil, cmdInit},
		{"backup", "back up local paths as one snapshot of --source NAME", []string{"source"}, nil, cmdBackup},
		{"snapshots", "list snapshots [--source NAME]", []string{"source"}, nil, cmdSnapshots},
		{"ls", "list a snapshot's files: ls SNAP [PATH]", nil, nil, cmdLs},
		{"restore", "restore SNAP[:PATH] --target DIR", []string{"target"}, nil, cmdRestore},
		{"export", "plain-file export with a signed manifest: export SNAP[:PATH] --to DIR [--verifiers DIR]; or a sealed (encrypted) copy: export SNAP… --to DIR --sealed", []string{"to", "verifiers"}, []string{"sealed"}, cmdExport},
		{"verify", "check packs, journal and index [--deep: decrypt and re-hash everything]", nil, []string{"deep"}, cmdVerify},
		{"journal", "print the journal", nil, nil, cmdJournal},
		{"index", "index rebuild: rebuild the index from the packs", nil, nil, cmdIndex},
		{"pull", "pull the configured sources now: --config FILE [--source NAME]", []string{"config", "source"}, nil, cmdPull},
		{"authorized-key", "print each source's authorized_keys line: --config FILE [--source NAME]", []string{"config", "source"}, nil, cmdAuthorizedKey},
		{"run", "the vault daemon: --config FILE [--window-now DURATION] [--netns NAME] [--console DEV]... [--heartbeat FILE] [--log FILE]", []string{"config", "window-now", "netns", "console", "heartbeat", "log"}, []string{"take-over-network"}, cmdRun},
		{"console", "the full-screen console: status, snapshot browser, restore and export to a drive [--drives-any] [--config FILE: what a configuration import replaces]", []string{"config"}, []string{"drives-any"}, cmdConsole},
		{"config", "config diff FILE --config CURRENT; config import FILE|--usb --config CURRENT: show the changes, confirm, admin passphrase, install [--yes --admin-passphrase-file F]", []string{"config", "admin-passphrase-file"}, []string{"usb", "yes"}, cmdConfig},
		{"help", "show this help", nil, nil, cmdHelp},
	}
}

// call is one parsed invocation.
type call struct {
	env  *Env
	args *args
}

func run(ctx context.Context, argv []string, env *Env) error {
	name, rest, err := commandName(argv)
	if err != nil {
		return err
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		a, err := parse(rest, append(c.valued, globalValued...), append(c.boolean, globalBoolean...))
		if err != nil {
			return err
		}
		if a.has("help") || a.has("h") {
			return cmdHelp(ctx, &call{env: env, args: a})
		}
		return c.run(ctx, &call{env: env, args: a})
	}
	switch name {
	case "export":
		return fmt.Errorf("'%s' is not available in this version of drawbridge", name)
	}
	return usagef("unknown command %q", name)
}

// commandName finds the command in argv: its first argument that is
// neither a flag nor a flag's value, so that flags may come before the
// command too (`drawbridge --store DIR snapshots`); whether the command
// takes them is its own parse's to say. rest is argv without it. With no
// command, --help (or -h) alone means help.
func commandName(argv []string) (name string, rest []string, err error) {
	help := false
	for i := 0; i < len(argv); i++ {
		s := argv[i]
		if !strings.HasPrefix(s, "-") || s == "-" || s == "--" {
			rest = append(slices.Clone(argv[:i]), argv[i+1:]...)
			return s, rest, nil
		}
		flag, _, hasVal := strings.Cut(strings.TrimLeft(s, "-"), "=")
		switch valued, known := flagKind(flag); {
		case !known:
			return "", nil, usagef("unknown flag %s", s)
		case valued && !hasVal:
			i++ // its value
		case flag == "help" || flag == "h":
			help = true
		}
	}
	if help {
		return "help", argv, nil
	}
	return "", nil, usagef("no command given")
}

// flagKind says whether some command knows the flag, and whether it
// takes a value there (no flag takes one in a command and none in another).
func flagKind(flag string) (valued, known bool) {
	if slices.Contains(globalValued, flag) {
		return true, true
	}
	if slices.Contains(globalBoolean, flag) {
		return false, true
	}
	for _, c := range commands {
		if slices.Contains(c.valued, flag) {
			return true, true
		}
		if slices.Contains(c.boolean, flag) {
			return false, true
		}
	}
	return false, false
}

func cmdHelp(_ context.Context, c *call) error {
	w := c.env.Stdout
	fmt.Fprintln(w, "drawbridge: the vault's operator command line")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: drawbridge COMMAND [ARGS] [--store DIR] [--passphrase-file FILE] [--json]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-15s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The store comes from --store or DRAWBRIDGE_STORE; the restore passphrase from")
	fmt.Fprintln(w, "--passphrase-file or DRAWBRIDGE_PASSPHRASE_FILE, else a prompt at a terminal.")
	fmt.Fprintln(w, "Snapshots are named by id (8+ hex digits), latest, or SOURCE/latest.")
	return nil
}

func (c *call) storeDir() (string, error) {
	dir := c.args.get("store")
	if dir == "" {
		dir = c.env.Getenv("DRAWBRIDGE_STORE")
	}
	if dir == "" {
		return "", usagef("no store given: use --store DIR or set DRAWBRIDGE_STORE")
	}
	return dir, nil
}

func (c *call) open() (*store.Store, error) { return c.openWith(store.Options{}) }

// openJournal opens the store for reading its journal only: it works while
// the daemon holds the store.
func (c *call) openJournal() (*store.Store, error) {
	return c.openWith(store.Options{JournalOnly: true})
}

func (c *call) openWith(o store.Options) (*store.Store, error) {
	dir, err := c.storeDir()
	if err != nil {
		return nil, err
	}
	s, err := store.Open(dir, o)
	if errors.Is(err, store.ErrNotAStore) && export.IncompleteSealed(dir) {
		return nil, exitError{1, fmt.Sprintf("%s holds a sealed export that was interrupted before it finished (it has no store.json): nothing in it can be used; export again to an empty drive", dir)}
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// unlock opens a Reader with the restore passphrase.
func (c *call) unlock(s *store.Store) (*store.Reader, error) {
	pass, err := c.passphrase(false)
	if err != nil {
		return nil, err
	}
	r, err := s.Unlock(pass)
	if errors.Is(err, seal.ErrPassphrase) {
		return nil, exitError{1, "wrong restore passphrase: nothing was read"}
	}
	return r, err
}

func (c *call) jsonOut() bool { return c.args.has("json") }
func (c *call) quiet() bool   { return c.args.has("quiet") || c.args.has("q") }

func sortedKeys[M ~map[string]V, V any](m M) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
