// Package config reads and checks the vault's one configuration file: a TOML
// file that travels on USB sticks and is edited by people.
//
// Invariants: a *Config returned without error has passed every check
// (unknown keys included), so the rest of the program never re-validates it;
// every problem found is reported with the file, the line and the key, and
// says what is expected; every error wraps ErrInvalid, except a failure to
// open or read the file, which wraps the operating system's error.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrInvalid is wrapped by every error that a configuration's content causes:
// TOML syntax, unknown keys, wrong types and failed checks.
var ErrInvalid = errors.New("invalid configuration")

// MaxSize caps the size of a configuration file. Real files are a few KiB.
const MaxSize = 1 << 20

// Limits on counts, so that a hostile file cannot make the vault plan a
// million pulls.
const (
	maxSources = 1000
	maxWindows = 100
	maxPaths   = 64
	maxCommand = 4096
	maxErrors  = 20
)

// Config is a checked configuration.
type Config struct {
	Path    string   // the file it was read from (the name given to Parse)
	Store   string   // `store`: absolute and cleaned; empty only with AllowNoStore
	Network Network  // `[network]`
	Windows []Window // `[[window]]`, in file order
	Sources []Source // `[[source]]`, in file order
}

// Network is the link a window brings up.
type Network struct {
	Interface string // e.g. "eth0"; required when any window exists
	Address   string // "dhcp" or an address with prefix length, as written
	Gateway   string // optional IP address, as written

	DHCP        bool         // Address is "dhcp"
	Prefix      netip.Prefix // Address parsed, the host address kept (198.18.0.2/24); zero with DHCP or no address
	GatewayAddr netip.Addr   // Gateway parsed; zero when there is none
}

// Window is one entry of the schedule.
type Window struct {
	Days     []time.Weekday // ascending, without repeats
	Start    time.Duration  // offset from local midnight (RTC time), a whole minute in [0, 24h)
	Duration time.Duration  // in [1m, 24h]
	Line     int            // line of its [[window]] header
}

// Source kinds.
const (
	KindAgent = "agent" // drawbridge-agent as the forced command
	KindSFTP  = "sftp"  // any SSH server with a read-only SFTP subsystem
	KindExec  = "exec"  // a forced command whose standard output is kept
)

// Source is one machine the vault pulls from.
type Source struct {
	Name          string        // unique; 1-64 of [A-Za-z0-9._-], not starting with '.'
	Kind          string        // KindAgent, KindSFTP or KindExec
	Host          string        // IP address, or a DNS name for `pull` in hosted mode (`run` takes addresses only)
	Port          int           // 1-65535, default 22
	User          string        // SSH user
	HostKey       string        // the pinned host key, normalized to "type base64" (comment dropped)
	HostKeyParsed ssh.PublicKey // HostKey parsed
	Paths         []string      // agent and sftp: absolute, cleaned, 1-64 of them; nil for exec
	Command       string        // exec: optional, sent as the SSH command; empty otherwise
	Priority      int           // lower runs first; default 0
	Timeout       time.Duration // idle timeout, 5s-24h, default 5m
	Line          int           // line of its [[source]] header
}

// Defaults for optional source keys.
const (
	DefaultPort    = 22
	DefaultTimeout = 5 * time.Minute
)

// ParseOptions changes what Parse accepts.
type ParseOptions struct {
	// AllowNoStore accepts a file without `store`, for callers that take the
	// store from a flag (--store) instead. A `store` that is present is still
	// checked.
	AllowNoStore bool
}

// Load reads, parses and checks the configuration file at path.
func Load(path string) (*Config, error) {
	return LoadWith(path, ParseOptions{})
}

// LoadWith is Load with options.
func LoadWith(path string, opts ParseOptions) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	if !fi.Mode().IsRegular() {
		// A FIFO or a device could block or never end.
		return nil, &Error{File: path, Msg: "not a regular file, expected a TOML text file"}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read configuration %s: %w", path, err)
	}
	return ParseWith(path, data, opts)
}

// Parse parses and checks a configuration read from the file called name;
// name is used in error messages and as Config.Path.
func Parse(name string, data []byte) (*Config, error) {
	return ParseWith(name, data, ParseOptions{})
}

// ParseWith is Parse with options.
func ParseWith(name string, data []byte, opts ParseOptions) (*Config, error) {
	p := &problems{file: name}
	var raw fileConfig
	lines, ok := decode(p, data, &raw)
	if !ok {
		return nil, p.err()
	}
	c := check(p, &raw, lines, opts)
	if err := p.err(); err != nil {
		return nil, err
	}
	c.Path = name
	return c, nil
}

// Source returns the source called name.
func (c *Config) Source(name string) (*Source, bool) {
	for i := range c.Sources {
		if c.Sources[i].Name == name {
			return &c.Sources[i], true
		}
	}
	return nil, false
}
