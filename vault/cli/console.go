package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/gdamore/tcell/v2"

	"drawbridge/vault/admin"
	"drawbridge/vault/console"
	"drawbridge/vault/store"
)

// cmdConsole runs the full-screen console. When the daemon holds the store
// it opens the store read-only: the status shows, but nothing is read or
// restored, since neither could be journaled.
func cmdConsole(ctx context.Context, c *call) error {
	if len(c.args.pos) > 0 {
		return usagef("console takes no arguments")
	}
	dir, err := c.storeDir()
	if err != nil {
		return err
	}
	writable := true
	s, err := store.Open(dir, store.Options{})
	if errors.Is(err, store.ErrBusy) {
		writable = false
		s, err = store.Open(dir, store.Options{JournalOnly: true})
	}
	if err != nil {
		return err
	}
	defer s.Close()
	var o console.Options
	if c.args.get("passphrase-file") != "" || c.env.Getenv("DRAWBRIDGE_PASSPHRASE_FILE") != "" {
		o.PassphraseFile = func() ([]byte, error) { return c.passphrase(false) }
	}
	scr, err := tcell.NewScreen()
	if err != nil {
		return fmt.Errorf("console: no terminal: %w", err)
	}
	b := &console.StoreBackend{Store: s, Dir: dir, Writable: writable}
	if writable {
		b.Admin = admin.ForStore(s, admin.Options{})
		// Nothing is restored or exported while the daemon holds the
		// store, so drives are offered only when this console has it.
		u, done, err := consoleDrives(s, dir, c.args.get("config"), b.Admin, drivesAny(c))
		if err != nil {
			return err
		}
		defer done()
		b.USB = u
	}
	if path := c.args.get("config"); path != "" {
		b.Config = func() ([]string, error) { return settingsLines(s, path) }
	}
	return console.Run(ctx, scr, b, o)
}
