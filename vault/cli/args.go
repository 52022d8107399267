package cli

import (
	"errors"
	"fmt"
	"strings"
)

// errUsage marks a command line that is wrong: exit status 2.
var errUsage = errors.New("usage")

func usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// args is a parsed command line: flags may come before, between or after
// positional arguments, as "--name value" or "--name=value".
type args struct {
	pos   []string
	vals  map[string]string   // the last value of each flag
	all   map[string][]string // every value of each flag, in order
	bools map[string]bool
}

// parse reads argv against the flags a command accepts: names in valued
// take a value, names in boolean do not.
func parse(argv []string, valued, boolean []string) (*args, error) {
	a := &args{vals: map[string]string{}, all: map[string][]string{}, bools: map[string]bool{}}
	isVal := map[string]bool{}
	isBool := map[string]bool{}
	for _, n := range valued {
		isVal[n] = true
	}
	for _, n := range boolean {
		isBool[n] = true
	}
	for i := 0; i < len(argv); i++ {
		s := argv[i]
		if s == "--" {
			a.pos = append(a.pos, argv[i+1:]...)
			break
		}
		if !strings.HasPrefix(s, "-") || s == "-" {
			a.pos = append(a.pos, s)
			continue
		}
		name := strings.TrimLeft(s, "-")
		val, hasVal := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, val, hasVal = k, v, true
		}
		switch {
		case isVal[name]:
			if !hasVal {
				if i+1 >= len(argv) {
					return nil, usagef("--%s needs a value", name)
				}
				i++
				val = argv[i]
			}
			a.vals[name] = val
			a.all[name] = append(a.all[name], val)
		case isBool[name]:
			if hasVal {
				return nil, usagef("--%s takes no value", name)
			}
			a.bools[name] = true
		default:
			return nil, usagef("unknown flag %s", s)
		}
	}
	return a, nil
}

func (a *args) get(name string) string { return a.vals[name] }

// getAll returns every value of a flag that may repeat (--console A --console B).
func (a *args) getAll(name string) []string { return a.all[name] }
func (a *args) has(name string) bool        { return a.bools[name] }
