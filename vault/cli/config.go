package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"drawbridge/hw/usb"
	"drawbridge/vault/admin"
	"drawbridge/vault/config"
	"drawbridge/vault/config/importer"

	"golang.org/x/term"
)

// usbDrives is where config import --usb looks for drives; tests replace it.
var usbDrives = func() importer.Drives { return usb.Local() }

// cmdConfig is `config diff FILE --config CURRENT` and `config import
// FILE|--usb --config CURRENT --store DIR`.
func cmdConfig(ctx context.Context, c *call) error {
	if len(c.args.pos) == 0 {
		return usagef("config needs a subcommand: config diff FILE --config CURRENT, or config import FILE|--usb --config CURRENT --store DIR")
	}
	current := c.args.get("config")
	if current == "" {
		return usagef("config %s needs --config CURRENT, the configuration file the vault uses", c.args.pos[0])
	}
	switch c.args.pos[0] {
	case "diff":
		if len(c.args.pos) != 2 || c.args.has("usb") {
			return usagef("config diff needs FILE")
		}
		return configDiff(c, current)
	case "import":
		return configImport(ctx, c, current)
	}
	return usagef("unknown config subcommand %q: diff or import", c.args.pos[0])
}

// readConfigFile reads FILE with the same care as a file on a drive.
func readConfigFile(file string) (*config.Config, []byte, error) {
	root, err := os.OpenRoot(filepath.Dir(file))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", file, err)
	}
	defer root.Close()
	return config.ReadFromDrive(root, filepath.Base(file))
}

// refused reports a configuration that was not accepted: exit 1, every
// problem listed, nothing changed.
func refused(from string, err error) error {
	return exitError{1, fmt.Sprintf("%s was refused, nothing changed:\n%v", from, err)}
}

func configDiff(c *call, current string) error {
	file := c.args.pos[1]
	next, _, err := readConfigFile(file)
	if err != nil {
		return refused(file, err)
	}
	p, err := importer.NewPlan(current, "", file, next, nil)
	if err != nil {
		return err
	}
	printPlan(c.env.Stdout, p)
	return nil
}

func printPlan(w io.Writer, p *importer.Plan) {
	if p.OldErr != nil {
		fmt.Fprintf(w, "The current configuration %s cannot be read (%v); everything is shown as new.\n", p.Current, firstLine(p.OldErr))
	} else if p.Old == nil {
		fmt.Fprintf(w, "There is no configuration at %s yet; everything is new.\n", p.Current)
	}
	if len(p.Changes) == 0 {
		fmt.Fprintf(w, "%s configures nothing different from %s.\n", p.From, p.Current)
		return
	}
	fmt.Fprintf(w, "Changes %s makes to %s:\n", p.From, p.Current)
	for _, l := range p.Lines() {
		fmt.Fprintf(w, "  %s\n", l)
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func configImport(ctx context.Context, c *call, current string) error {
	fromUSB := c.args.has("usb")
	if fromUSB == (len(c.args.pos) == 2) || len(c.args.pos) > 2 {
		return usagef("config import needs FILE or --usb (one of them)")
	}
	yes, passFile := c.args.has("yes"), c.args.get("admin-passphrase-file")
	tty := c.env.Stdin != nil && term.IsTerminal(int(c.env.Stdin.Fd()))
	if !tty && (!yes || passFile == "") {
		return exitError{1, "config import asks for confirmation and the admin passphrase at a terminal; stdin is not one, so give --yes and --admin-passphrase-file FILE"}
	}
	dir, err := c.storeDir()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "store.json")); err != nil {
		return exitError{1, fmt.Sprintf("no store at %s (its journal records the import and its admin passphrase guards it): run drawbridge init first", dir)}
	}

	var from string
	var next *config.Config
	var data []byte
	if fromUSB {
		f, err := pickFromUSB(ctx, c, tty)
		if err != nil {
			return err
		}
		from, next, data = "USB drive "+f.String(), f.Config, f.Data
	} else {
		from = c.args.pos[1]
		if next, data, err = readConfigFile(from); err != nil {
			return refused(from, err)
		}
	}
	p, err := importer.NewPlan(current, dir, from, next, data)
	if err != nil {
		return exitError{1, err.Error()}
	}
	w := c.env.Stdout
	printPlan(w, p)
	if len(p.Changes) == 0 && p.Old != nil {
		fmt.Fprintln(w, "Nothing to import.")
		return nil
	}
	if !yes {
		fmt.Fprint(c.env.Stderr, "Apply these changes? Type yes to apply: ")
		line, err := readLine(c.env.Stdin)
		if err != nil || strings.TrimSpace(line) != "yes" {
			return exitError{1, "not confirmed: nothing changed"}
		}
	}

	// The store (its journal and admin passphrase) is held only from here:
	// waiting for a drive and for the person does not lock it.
	s, err := c.open()
	if err != nil {
		return err
	}
	defer s.Close()
	g := admin.ForStore(s, admin.Options{})
	set, err := g.IsSet()
	if err != nil {
		return err
	}
	tries := 1
	if tty && passFile == "" {
		tries = 3
	}
	for try := 1; ; try++ {
		pass, err := adminPassphrase(c, passFile, !set)
		if err != nil {
			return err
		}
		if n, wait := g.Pending(); wait > 0 {
			fmt.Fprintf(c.env.Stderr, "Checking in %v: %d wrong admin passphrases in a row.\n", wait, n)
		}
		if !set {
			if err := g.Set(ctx, nil, pass); err != nil {
				return err
			}
			fmt.Fprintln(c.env.Stderr, "Admin passphrase set.")
			set = true
		}
		err = p.Apply(ctx, s, g, pass)
		clear(pass)
		if errors.Is(err, admin.ErrWrong) && try < tries {
			fmt.Fprintln(c.env.Stderr, "Wrong admin passphrase (recorded in the journal). Try again.")
			continue
		}
		if errors.Is(err, admin.ErrWrong) {
			return exitError{1, "wrong admin passphrase (recorded in the journal): nothing changed"}
		}
		if err != nil {
			return err
		}
		break
	}
	fmt.Fprintf(w, "Configuration installed at %s", current)
	if p.Old != nil || p.OldErr != nil {
		fmt.Fprintf(w, " (the previous one is kept as %s%s)", current, config.PreviousSuffix)
	}
	fmt.Fprintln(w, "; the import is journaled.")
	return nil
}

// pickFromUSB waits for drives holding a valid drawbridge.toml and lets the
// person pick one when there are several.
func pickFromUSB(ctx context.Context, c *call, tty bool) (importer.Found, error) {
	base, err := os.MkdirTemp("", "drawbridge-usb-")
	if err != nil {
		return importer.Found{}, err
	}
	defer os.Remove(base) // only when empty: never remove through a mount
	found, err := importer.Wait(ctx, usbDrives(), base, func(msg string) { fmt.Fprintln(c.env.Stderr, msg) })
	if errors.Is(err, context.Canceled) {
		return importer.Found{}, exitError{1, "interrupted while waiting for a USB drive: nothing imported"}
	}
	if err != nil {
		return importer.Found{}, err
	}
	if len(found) == 1 {
		fmt.Fprintf(c.env.Stderr, "Found %s on %s.\n", config.DriveFile, found[0])
		return found[0], nil
	}
	if !tty {
		return importer.Found{}, exitError{1, fmt.Sprintf("%d drives hold a %s: plug in only the one to import", len(found), config.DriveFile)}
	}
	fmt.Fprintf(c.env.Stderr, "%d drives hold a %s:\n", len(found), config.DriveFile)
	for i, f := range found {
		fmt.Fprintf(c.env.Stderr, "  %d  %s\n", i+1, f)
	}
	fmt.Fprintf(c.env.Stderr, "Which one? Type its number: ")
	line, err := readLine(c.env.Stdin)
	n, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil || n < 1 || n > len(found) {
		return importer.Found{}, exitError{1, "no drive picked: nothing changed"}
	}
	return found[n-1], nil
}

// adminPassphrase reads the admin passphrase from file, or asks for it at
// the terminal; a new one (first) is asked twice.
func adminPassphrase(c *call, file string, first bool) ([]byte, error) {
	if file != "" {
		return readSecretFile(file)
	}
	if first {
		fmt.Fprintln(c.env.Stderr, "No admin passphrase is set yet. Choose one: it guards the vault's settings and keys (it is not the restore passphrase).")
	}
	label := "Admin passphrase: "
	if first {
		label = "New admin passphrase: "
	}
	p, err := prompt(c.env.Stdin, c.env.Stderr, label)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, exitError{1, "empty admin passphrase: nothing changed"}
	}
	if first {
		again, err := prompt(c.env.Stdin, c.env.Stderr, "Repeat it: ")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(p, again) {
			return nil, exitError{1, "the two admin passphrases differ: nothing changed"}
		}
	}
	return p, nil
}

// readLine reads one line from the terminal, a byte at a time so that
// nothing typed after it is consumed.
func readLine(in *os.File) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 1024 {
		n, err := in.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				return string(b), nil
			}
			b = append(b, one[0])
		}
		if err != nil {
			return string(b), err
		}
	}
	return string(b), errors.New("line too long")
}
