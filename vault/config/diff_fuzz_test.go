package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzDiff diffs every configuration Parse accepts against a fixed one and
// against none. It must not panic, a configuration must not differ from
// itself, and every change must print as one line.
func FuzzDiff(f *testing.F) {
	if b, err := os.ReadFile("../../docs/drawbridge.example.toml"); err == nil {
		f.Add(b)
	}
	ref := []byte(strings.NewReplacer("KEY1", key1, "KEY2", key2).Replace(base))
	f.Add(ref)
	old, err := Parse("ref.toml", ref)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseWith("fuzz.toml", b, ParseOptions{AllowNoStore: true})
		if err != nil {
			return
		}
		if d := Diff(c, c); d != nil {
			t.Fatalf("a configuration differs from itself: %v", d)
		}
		for _, d := range [][]Change{Diff(nil, c), Diff(old, c), Diff(c, old), Diff(c, nil)} {
			for _, ch := range d {
				if s := ch.String(); strings.Contains(s, "\n") || s == "" {
					t.Fatalf("change %q is not one line", s)
				}
			}
		}
	})
}
