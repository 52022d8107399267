package config

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary files to Parse. It must not panic; what it
// accepts must keep every promise Config makes; what it refuses must wrap
// ErrInvalid and name the file on every line.
//
// The committed corpus (testdata/fuzz/FuzzParse) holds the documented example,
// the DESIGN.md example with a real key, and files that reach each kind of
// error.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../../docs/drawbridge.example.toml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(strings.NewReplacer("KEY1", key1, "KEY2", key2).Replace(base)))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, opts := range []ParseOptions{{}, {AllowNoStore: true}} {
			c, err := ParseWith("fuzz.toml", b, opts)
			if err != nil {
				if c != nil {
					t.Fatal("a Config came with an error")
				}
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error does not wrap ErrInvalid: %v", err)
				}
				lines := strings.Split(err.Error(), "\n")
				if len(lines) > maxErrors+1 {
					t.Fatalf("%d problems reported", len(lines))
				}
				for _, l := range lines {
					if !strings.HasPrefix(l, "fuzz.toml:") {
						t.Fatalf("problem without the file name: %q", l)
					}
				}
				continue
			}
			checkConfig(t, c, opts)
		}
	})
}

// checkConfig checks the promises of an accepted Config.
func checkConfig(t *testing.T, c *Config, opts ParseOptions) {
	t.Helper()
	if c.Path != "fuzz.toml" {
		t.Fatalf("Path = %q", c.Path)
	}
	if c.Store == "" && !opts.AllowNoStore || c.Store != "" && c.Store[0] != '/' {
		t.Fatalf("Store = %q", c.Store)
	}
	if len(c.Windows) > 0 && (c.Network.Interface == "" || !c.Network.DHCP && !c.Network.Prefix.IsValid()) {
		t.Fatalf("windows without a network: %+v", c.Network)
	}
	for _, w := range c.Windows {
		if len(w.Days) == 0 || len(w.Days) > 7 || w.Start < 0 || w.Start >= 24*time.Hour ||
			w.Duration < time.Minute || w.Duration > 24*time.Hour || w.Line < 1 {
			t.Fatalf("window %+v", w)
		}
		for i, d := range w.Days {
			if d < time.Sunday || d > time.Saturday || i > 0 && d <= w.Days[i-1] {
				t.Fatalf("days %v", w.Days)
			}
		}
	}
	for i := range c.Sources {
		s := &c.Sources[i]
		if !validName(s.Name) || s.Host == "" || s.User == "" || s.Port < 1 || s.Port > 65535 ||
			s.HostKeyParsed == nil || s.Timeout < 5*time.Second || s.Timeout > 24*time.Hour || s.Line < 1 {
			t.Fatalf("source %+v", s)
		}
		if got, ok := c.Source(s.Name); !ok || got != s {
			t.Fatalf("Source(%q) = %v, %v", s.Name, got, ok)
		}
		switch s.Kind {
		case KindAgent, KindSFTP:
			if len(s.Paths) == 0 || len(s.Paths) > maxPaths || s.Command != "" {
				t.Fatalf("source %+v", s)
			}
			for _, p := range s.Paths {
				if p == "" || p[0] != '/' || hasDotDot(p) {
					t.Fatalf("path %q", p)
				}
			}
		case KindExec:
			if len(s.Paths) != 0 || len(s.Command) > maxCommand || strings.ContainsAny(s.Command, "\x00\n\r") {
				t.Fatalf("source %+v", s)
			}
		default:
			t.Fatalf("kind %q", s.Kind)
		}
	}
}

// TestFuzzSeeds checks that the committed seeds reach what they are for: the
// good ones parse, the others fail.
func TestFuzzSeeds(t *testing.T) {
	for name, good := range map[string]bool{
		"example": true, "design": true, "inline": true,
		"errors": false, "unknown-keys": false, "not-utf8": false,
	} {
		raw, err := os.ReadFile("testdata/fuzz/FuzzParse/" + name)
		if err != nil {
			t.Fatal(err)
		}
		lit, ok := strings.CutPrefix(string(raw), "go test fuzz v1\n[]byte(")
		lit, ok2 := strings.CutSuffix(lit, ")\n")
		if !ok || !ok2 {
			t.Fatalf("%s: not a one-value corpus file", name)
		}
		data, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c, err := ParseWith("fuzz.toml", []byte(data), ParseOptions{})
		switch {
		case good && err != nil:
			t.Errorf("%s: %v", name, err)
		case good:
			checkConfig(t, c, ParseOptions{})
		case err == nil:
			t.Errorf("%s: accepted", name)
		case name == "errors" && len(problemsOf(t, err)) < 15:
			t.Errorf("%s: only %v", name, err)
		}
	}
}
