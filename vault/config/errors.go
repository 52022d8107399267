package config

import (
	"errors"
	"fmt"
	"sort"
)

// Error is one problem found in a configuration file. It wraps ErrInvalid.
// Parse returns every problem it found (up to a cap) joined with
// errors.Join; errors.As finds the first.
type Error struct {
	File string
	Line int    // 1-based; 0 when the problem belongs to no single line
	Msg  string // names the key and says what is expected
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

func (e *Error) Unwrap() error { return ErrInvalid }

// problems collects the Errors of one file.
type problems struct {
	file string
	list []*Error
}

func (p *problems) add(line int, format string, args ...any) {
	p.list = append(p.list, &Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// err returns nil or every problem joined, in line order (problems without a
// line first), capped at maxErrors so that a mangled file gives a readable
// screen instead of a flood.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	list := p.list
	sort.SliceStable(list, func(i, j int) bool { return list[i].Line < list[j].Line })
	var more int
	if len(list) > maxErrors {
		more = len(list) - maxErrors
		list = list[:maxErrors]
	}
	errs := make([]error, 0, len(list)+1)
	for _, e := range list {
		errs = append(errs, e)
	}
	if more > 0 {
		errs = append(errs, &Error{File: p.file, Msg: fmt.Sprintf("and %d more problems not shown", more)})
	}
	return errors.Join(errs...)
}
