package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"drawbridge/vault/config"
	"drawbridge/vault/pull"
	"drawbridge/vault/store"

	"drawbridge/vault/units"
)

// loadConfig reads --config and resolves the store directory: --store,
// else the configuration's `store`, else DRAWBRIDGE_STORE. A missing or
// broken configuration is bad usage (exit 2): nothing was attempted.
func (c *call) loadConfig(cmd string) (*config.Config, string, error) {
	path := c.args.get("config")
	if path == "" {
		return nil, "", usagef("%s needs --config FILE", cmd)
	}
	flagStore, envStore := c.args.get("store"), c.env.Getenv("DRAWBRIDGE_STORE")
	cfg, err := config.LoadWith(path, config.ParseOptions{AllowNoStore: flagStore != "" || envStore != ""})
	if err != nil {
		return nil, "", exitError{2, err.Error()}
	}
	dir := flagStore
	if dir == "" {
		dir = cfg.Store
	}
	if dir == "" {
		dir = envStore
	}
	if only := c.args.get("source"); only != "" {
		if _, ok := cfg.Source(only); !ok {
			return nil, "", usagef("no source named %q in %s", only, path)
		}
	}
	if len(cfg.Sources) == 0 {
		return nil, "", usagef("%s configures no sources", path)
	}
	return cfg, dir, nil
}

type pullResult struct {
	Source      string  `json:"source"`
	OK          bool    `json:"ok"`
	ID          string  `json:"id,omitempty"`
	Status      string  `json:"status,omitempty"`
	Files       int64   `json:"files"`
	Bytes       int64   `json:"bytes"`
	NewBytes    int64   `json:"new_bytes"`
	StoredBytes int64   `json:"stored_bytes"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	Error       string  `json:"error,omitempty"`
}

func cmdPull(ctx context.Context, c *call) error {
	if len(c.args.pos) > 0 {
		return usagef("pull takes no arguments; name one source with --source NAME")
	}
	cfg, dir, err := c.loadConfig("pull")
	if err != nil {
		return err
	}
	if dir == "" {
		return usagef("no store given: use --store DIR, `store` in %s, or DRAWBRIDGE_STORE", cfg.Path)
	}
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	level := slog.LevelWarn
	if c.quiet() {
		level = slog.LevelError
	}
	log := slog.New(slog.NewTextHandler(c.env.Stderr, &slog.HandlerOptions{Level: level}))
	results := pull.Run(ctx, s, cfg, c.args.get("source"), pull.Options{Log: log})

	out := make([]pullResult, 0, len(results))
	failed := 0
	for _, r := range results {
		pr := pullResult{Source: r.Source, OK: r.Err == nil}
		if r.Err != nil {
			failed++
			pr.Error = r.Err.Error()
		} else {
			sn := r.Snapshot
			pr.ID, pr.Status, pr.Files, pr.Bytes, pr.NewBytes = sn.ID, sn.Status, sn.Files, sn.Bytes, sn.NewBytes
			pr.StoredBytes, pr.Errors, pr.Seconds = sn.StoredBytes, sn.Errors, sn.Seconds
		}
		out = append(out, pr)
	}
	if c.jsonOut() {
		if err := writeJSON(c, out); err != nil {
			return err
		}
	} else {
		width := 0
		for _, r := range out {
			width = max(width, len(r.Source))
		}
		for _, r := range out {
			if !r.OK {
				// Errors may quote what a source sent.
				msg := strings.ReplaceAll(pull.Printable(r.Error), "\n", "\n    ")
				fmt.Fprintf(c.env.Stdout, "%-*s  FAILED: %s\n", width, r.Source, msg)
				continue
			}
			line := fmt.Sprintf("%-*s  snapshot %s  files %d  bytes %s  new %s  %.2f s", width, r.Source, r.ID,
				r.Files, units.Bytes(r.Bytes), units.Bytes(r.NewBytes), r.Seconds)
			if r.Errors > 0 {
				line += fmt.Sprintf("  partial: %d entries skipped", r.Errors)
			}
			fmt.Fprintln(c.env.Stdout, line)
		}
	}
	if failed > 0 {
		return exitError{1, fmt.Sprintf("%d of %d sources failed; nothing was committed for them", failed, len(out))}
	}
	return nil
}

type authorizedKey struct {
	Source string `json:"source"`
	Kind   string `json:"kind"`
	User   string `json:"user"`
	Host   string `json:"host"`
	Port   int    `json:"port"`
	Line   string `json:"line"`
}

// cmdAuthorizedKey prints, for each source, the authorized_keys line that
// lets the vault in and confines it to what the source's kind needs.
func cmdAuthorizedKey(_ context.Context, c *call) error {
	if len(c.args.pos) > 0 {
		return usagef("authorized-key takes no arguments; name one source with --source NAME")
	}
	cfg, dir, err := c.loadConfig("authorized-key")
	if err != nil {
		return err
	}
	if dir == "" {
		return usagef("no store given: use --store DIR, `store` in %s, or DRAWBRIDGE_STORE", cfg.Path)
	}
	// Only the key file is read: this works while the daemon runs.
	s, err := store.Open(dir, store.Options{JournalOnly: true})
	if err != nil {
		return err
	}
	defer s.Close()
	key := s.Keys().SSHAuthorizedKey()
	if key == "" {
		return errors.New("this store has no SSH client key")
	}
	only := c.args.get("source")
	list := authorizedKeys(cfg, key, only)
	if c.jsonOut() {
		return writeJSON(c, list)
	}
	if only != "" {
		// Just the line, to append to the file as it is.
		for _, k := range list {
			fmt.Fprintln(c.env.Stdout, k.Line)
		}
		return nil
	}
	_, err = io.WriteString(c.env.Stdout, authorizedKeysText(list))
	return err
}

// authorizedKeys lists the authorized_keys line of every source, or of the
// one named only, for the vault's public key.
func authorizedKeys(cfg *config.Config, key, only string) []authorizedKey {
	var list []authorizedKey
	for i := range cfg.Sources {
		src := &cfg.Sources[i]
		if only != "" && src.Name != only {
			continue
		}
		list = append(list, authorizedKey{Source: src.Name, Kind: src.Kind, User: src.User, Host: src.Host,
			Port: src.Port, Line: pull.AuthorizedKey(cfg, src, key)})
	}
	return list
}

// authorizedKeysText is list with a comment line before each line, saying
// where it goes: what authorized-key prints, and the file the console
// writes to a drive.
func authorizedKeysText(list []authorizedKey) string {
	var w strings.Builder
	for i, k := range list {
		if i > 0 {
			fmt.Fprintln(&w)
		}
		fmt.Fprintf(&w, "# %s (%s): in ~%s/.ssh/authorized_keys on %s\n", k.Source, k.Kind, k.User, k.Host)
		if k.Kind == config.KindExec && strings.Contains(k.Line, `command="COMMAND"`) {
			fmt.Fprintln(&w, "# no command in the configuration: replace COMMAND with the one that writes the stream")
		}
		fmt.Fprintln(&w, k.Line)
	}
	return w.String()
}
