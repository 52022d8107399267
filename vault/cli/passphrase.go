package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// maxPassphraseFile caps what is read from a passphrase file.
const maxPassphraseFile = 64 << 10

// passphrase returns the restore passphrase from --passphrase-file,
// DRAWBRIDGE_PASSPHRASE_FILE, or a no-echo prompt when stdin is a terminal.
// With confirm the prompt asks twice (init).
func (c *call) passphrase(confirm bool) ([]byte, error) {
	file := c.args.get("passphrase-file")
	if file == "" {
		file = c.env.Getenv("DRAWBRIDGE_PASSPHRASE_FILE")
	}
	if file != "" {
		return readSecretFile(file)
	}
	in := c.env.Stdin
	if in == nil || !term.IsTerminal(int(in.Fd())) {
		return nil, exitError{1, "the restore passphrase is needed: give --passphrase-file FILE or set DRAWBRIDGE_PASSPHRASE_FILE (stdin is not a terminal, so it cannot be asked for)"}
	}
	p, err := prompt(in, c.env.Stderr, "Restore passphrase: ")
	if err != nil {
		return nil, err
	}
	if confirm {
		again, err := prompt(in, c.env.Stderr, "Repeat it: ")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(p, again) {
			return nil, errors.New("the two passphrases differ")
		}
	}
	if len(p) == 0 {
		return nil, errors.New("the restore passphrase must not be empty")
	}
	return p, nil
}

func prompt(in *os.File, out io.Writer, text string) ([]byte, error) {
	fmt.Fprint(out, text)
	p, err := term.ReadPassword(int(in.Fd()))
	fmt.Fprintln(out)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	return p, nil
}

// readSecretFile reads a passphrase file: capped, one trailing newline
// dropped, not empty.
func readSecretFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read passphrase file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPassphraseFile+1))
	if err != nil {
		return nil, fmt.Errorf("read passphrase file: %w", err)
	}
	if len(b) > maxPassphraseFile {
		return nil, fmt.Errorf("passphrase file %s is larger than %d bytes", file, maxPassphraseFile)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return nil, fmt.Errorf("passphrase file %s is empty", file)
	}
	return b, nil
}
