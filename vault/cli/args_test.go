package cli

import (
	"errors"
	"slices"
	"testing"
)

// TestFlagKinds: a flag that takes a value in one command takes one in
// all, so that commandName can step over flags before the command.
func TestFlagKinds(t *testing.T) {
	valued := map[string]bool{}
	for _, c := range commands {
		for _, f := range c.valued {
			valued[f] = true
		}
	}
	for _, c := range commands {
		for _, f := range c.boolean {
			if valued[f] || slices.Contains(globalValued, f) {
				t.Errorf("--%s takes a value in one command and none in %s", f, c.name)
			}
		}
	}
}

func TestCommandName(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		name string
		rest []string
	}{
		{[]string{"snapshots", "--json"}, "snapshots", []string{"--json"}},
		{[]string{"--store", "S", "snapshots"}, "snapshots", []string{"--store", "S"}},
		{[]string{"--store=S", "--json", "index", "rebuild"}, "index", []string{"--store=S", "--json", "rebuild"}},
		{[]string{"--target", "restore", "restore", "latest"}, "restore", []string{"--target", "restore", "latest"}},
		{[]string{"--help"}, "help", []string{"--help"}},
		{[]string{"-h", "--store", "S"}, "help", []string{"-h", "--store", "S"}},
	} {
		name, rest, err := commandName(tc.argv)
		if err != nil || name != tc.name || !slices.Equal(rest, tc.rest) {
			t.Errorf("%q: got %q %q %v, want %q %q", tc.argv, name, rest, err, tc.name, tc.rest)
		}
	}
	for _, argv := range [][]string{nil, {"--store", "S"}, {"--store"}, {"--bogus", "snapshots"}} {
		if _, _, err := commandName(argv); !errors.Is(err, errUsage) {
			t.Errorf("%q: got %v, want a usage error", argv, err)
		}
	}
}
