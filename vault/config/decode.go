package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// The file's shape, as go-toml decodes it. Durations, times and days stay
// strings here so that their errors can say what was written. Pointers mark
// optional numbers whose zero is not their default.
type fileConfig struct {
	Store   string       `toml:"store"`
	Network fileNetwork  `toml:"network"`
	Window  []fileWindow `toml:"window"`
	Source  []fileSource `toml:"source"`
}

type fileNetwork struct {
	Interface string `toml:"interface"`
	Address   string `toml:"address"`
	Gateway   string `toml:"gateway"`
}

type fileWindow struct {
	Days     string `toml:"days"`
	Start    string `toml:"start"`
	Duration string `toml:"duration"`
}

type fileSource struct {
	Name     string   `toml:"name"`
	Kind     string   `toml:"kind"`
	Host     string   `toml:"host"`
	Port     *int64   `toml:"port"`
	User     string   `toml:"user"`
	HostKey  string   `toml:"host_key"`
	Paths    []string `toml:"paths"`
	Command  string   `toml:"command"`
	Priority *int64   `toml:"priority"`
	Timeout  string   `toml:"timeout"`
}

// expectedValue says, per key, what a person should write there; used when
// the value has the wrong TOML type.
var expectedValue = map[string]string{
	"store":     `a quoted absolute path, e.g. "/data/store"`,
	"network":   "a [network] table",
	"window":    "[[window]] tables",
	"source":    "[[source]] tables",
	"interface": `a quoted interface name, e.g. "eth0"`,
	"address":   `a quoted "dhcp" or address with prefix length, e.g. "198.18.0.2/24"`,
	"gateway":   `a quoted IP address, e.g. "198.18.0.1"`,
	"days":      `a quoted "daily", "weekdays", "weekends" or list of days, e.g. "mon,wed,fri"`,
	"start":     `a quoted time HH:MM, e.g. "02:00"`,
	"duration":  `a quoted duration, e.g. "1h" or "90m"`,
	"name":      "a quoted name",
	"kind":      `a quoted "agent", "sftp" or "exec"`,
	"host":      "a quoted IP address or host name",
	"port":      "a whole number 1-65535",
	"user":      "a quoted user name",
	"host_key":  `a quoted SSH public key, e.g. "ssh-ed25519 AAAA..."`,
	"paths":     `a list of quoted absolute paths, e.g. ["/etc", "/srv"]`,
	"command":   "a quoted command line",
	"priority":  "a whole number",
	"timeout":   `a quoted duration, e.g. "5m"`,
}

// decode checks that data is UTF-8 TOML of the expected shape and fills raw.
// Unknown keys are reported but do not stop decoding, so that their file is
// checked in full; syntax and type errors do. It returns the lines of the
// keys and whether raw may be checked.
func decode(p *problems, data []byte, raw *fileConfig) (keyLines, bool) {
	if len(data) > MaxSize {
		p.add(0, "file is %d bytes, larger than the limit of 1 MiB; expected a small TOML text file", len(data))
		return nil, false
	}
	// Editors on some systems start UTF-8 files with a byte order mark.
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		off := invalidUTF8(data)
		line, col := lineCol(data, off)
		p.add(line, "byte 0x%02x at column %d is not UTF-8 text; expected a TOML text file saved as UTF-8", data[off], col)
		return nil, false
	}

	err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(raw)
	var strict *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case err == nil:
	case errors.As(err, &strict):
		for i := range strict.Errors {
			line, _ := strict.Errors[i].Position()
			p.add(line, "%s", unknownKey(strict.Errors[i].Key()))
		}
	case errors.As(err, &de):
		line, col := de.Position()
		p.add(line, "%s", decodeMessage(de, col))
		return nil, false
	default:
		p.add(0, "not valid TOML: %v", err)
		return nil, false
	}
	lines, written := findKeyLines(data)
	checkKeyCase(p, written)
	return lines, true
}

func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return 0
}

// lineCol gives the 1-based line and column (in bytes) of offset off.
func lineCol(b []byte, off int) (line, col int) {
	before := b[:off]
	line = 1 + bytes.Count(before, []byte("\n"))
	return line, off - (bytes.LastIndexByte(before, '\n') + 1) + 1
}

// typeMismatch matches go-toml's message for a value of the wrong type, to
// turn it into one that speaks of the file instead of Go types.
var typeMismatch = regexp.MustCompile(`^toml: cannot decode TOML ([a-z ]+?) into struct field \S*\.(\w+) of type`)

func decodeMessage(de *toml.DecodeError, col int) string {
	key := de.Key()
	if m := typeMismatch.FindStringSubmatch(de.Error()); m != nil {
		what := "a " + m[1]
		if strings.IndexByte("aeiou", m[1][0]) >= 0 {
			what = "an " + m[1]
		}
		tag := goFieldTag[m[2]]
		if i := lastIndex(key, tag); i >= 0 {
			key = key[:i+1]
		} else if tag != "" {
			// Inside an inline table go-toml names the table, not the key.
			key = append(key[:len(key):len(key)], tag)
		}
		name := strings.Join(key, ": ")
		if name == "" {
			name = "value"
		}
		if exp, ok := expectedValue[tag]; ok {
			return fmt.Sprintf("%s: %s is not allowed here, expected %s", name, what, exp)
		}
		return fmt.Sprintf("%s: %s is not allowed here", name, what)
	}
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	if len(key) == 0 {
		return fmt.Sprintf("not valid TOML at column %d: %s", col, msg)
	}
	return fmt.Sprintf("%s: %s", strings.Join(key, ": "), msg)
}

func lastIndex(key []string, part string) int {
	for i := len(key) - 1; i >= 0; i-- {
		if strings.EqualFold(key[i], part) {
			return i
		}
	}
	return -1
}

// goFieldTag maps the Go field names of the file types to their keys.
var goFieldTag = func() map[string]string {
	m := map[string]string{}
	for _, v := range []any{fileConfig{}, fileNetwork{}, fileWindow{}, fileSource{}} {
		t := reflect.TypeOf(v)
		for i := 0; i < t.NumField(); i++ {
			m[t.Field(i).Name] = t.Field(i).Tag.Get("toml")
		}
	}
	return m
}()

// unknownKey describes a key go-toml found no field for, naming the table it
// is in and the keys that table takes.
func unknownKey(key []string) string {
	i, where, t := resolveKey(key, true)
	if i < 0 {
		return fmt.Sprintf("unknown key %q", strings.Join(key, "."))
	}
	if t == nil {
		return fmt.Sprintf("%s: %q takes a value, not keys of its own", strings.Join(key, "."), key[i-1])
	}
	part, keys := key[i], tomlKeys(t)
	msg := fmt.Sprintf("unknown key %q %s (expected one of: %s)", part, where, strings.Join(keys, ", "))
	if s := closest(part, keys); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	} else if _, top := fieldByKey(reflect.TypeOf(fileConfig{}), part, false); top && i > 0 {
		msg += fmt.Sprintf("; %q belongs at the top, before the first [table]", part)
	}
	return msg
}

// resolveKey follows key through the file's shape, matching case exactly or,
// with fold, as go-toml does, without regard to case. It returns the index of the first part that is not a key of its table
// (-1 when every part is), where that table is, and its type (nil when the
// part before takes a value, not keys).
func resolveKey(key []string, fold bool) (int, string, reflect.Type) {
	t := reflect.TypeOf(fileConfig{})
	where := "at the top level"
	for i, part := range key {
		f, ok := fieldByKey(t, part, fold)
		if !ok {
			return i, where, t
		}
		name := f.Tag.Get("toml")
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct:
			where, t = "in ["+name+"]", ft
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			where, t = "in [["+name+"]]", ft.Elem()
		default:
			if i+1 < len(key) {
				return i + 1, where, nil
			}
		}
	}
	return -1, where, t
}

// checkKeyCase reports keys that differ from a known key only in case.
// go-toml matches keys to fields without regard to case, so without this
// "Port" would be taken for "port" and could silently override it.
func checkKeyCase(p *problems, written []writtenKey) {
	for _, w := range written {
		i, where, t := resolveKey(w.parts, false)
		if i < w.from || t == nil {
			continue
		}
		part := w.parts[i]
		for _, k := range tomlKeys(t) {
			if strings.EqualFold(k, part) {
				p.add(w.line, "unknown key %q %s (expected one of: %s); did you mean %q? Keys are lower case",
					part, where, strings.Join(tomlKeys(t), ", "), k)
			}
		}
	}
}

func tomlKeys(t reflect.Type) []string {
	keys := make([]string, t.NumField())
	for i := range keys {
		keys[i] = t.Field(i).Tag.Get("toml")
	}
	return keys
}

func fieldByKey(t reflect.Type, key string, fold bool) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("toml"); tag == key || fold && strings.EqualFold(tag, key) {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

// closest returns the key in keys nearest to s if it is a likely typo.
func closest(s string, keys []string) string {
	if len(s) > 64 {
		return ""
	}
	best, bestD := "", 3
	ls := strings.ToLower(strings.ReplaceAll(s, "-", "_"))
	for _, k := range keys {
		if d := editDistance(ls, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// keyLines maps a key's path, in lower case (go-toml matches keys without
// regard to case), to the line it is written on: "store",
// "network", "network.address", "source[1]" (the header of the second
// [[source]]), "source[1].port", "source[1].paths[0]".
type keyLines map[string]int

// line returns the line of the first of paths that is written in the file,
// or 0.
func (k keyLines) line(paths ...string) int {
	for _, p := range paths {
		if l, ok := k[p]; ok {
			return l
		}
	}
	return 0
}

func (k keyLines) has(path string) bool {
	_, ok := k[path]
	return ok
}

// findKeyLines walks the TOML syntax tree of a document go-toml has accepted
// and records where each key is written, and every key as written.
func findKeyLines(data []byte) (keyLines, []writtenKey) {
	var starts []int // offsets at which lines start
	starts = append(starts, 0)
	for i, c := range data {
		if c == '\n' {
			starts = append(starts, i+1)
		}
	}
	w := lineWalker{lines: keyLines{}, starts: starts, counts: map[string]int{}}
	var p unstable.Parser
	p.Reset(data)
	var ctx string        // path of the current table, e.g. "source[1]"
	var ctxParts []string // its key parts, e.g. ["source"]
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := w.key(e.Key())
			name := strings.ToLower(strings.Join(parts, "."))
			ctx, ctxParts = name, parts
			switch {
			case e.Kind == unstable.ArrayTable:
				ctx = fmt.Sprintf("%s[%d]", name, w.counts[name])
				w.counts[name]++
			case name == "window" || name == "source":
				// A single [source] decodes as a one-element array.
				ctx = name + "[0]"
			}
			w.set(ctx, line)
			w.written = append(w.written, writtenKey{parts, 0, line})
		case unstable.KeyValue:
			w.keyValue(ctx, ctxParts, e, 0)
		}
	}
	return w.lines, w.written
}

// writtenKey is a key as written in the file, with the keys of the tables
// it is in: ["source", "port"].
type writtenKey struct {
	parts []string
	from  int // parts before this index come from the enclosing table
	line  int
}

type lineWalker struct {
	lines   keyLines
	written []writtenKey
	starts  []int
	counts  map[string]int
}

func (w *lineWalker) lineOf(r unstable.Range) int {
	return sort.Search(len(w.starts), func(i int) bool { return w.starts[i] > int(r.Offset) })
}

func (w *lineWalker) set(path string, line int) {
	if _, ok := w.lines[path]; !ok {
		w.lines[path] = line
	}
}

// key returns the parts of a dotted key and the line of its first part.
func (w *lineWalker) key(it unstable.Iterator) ([]string, int) {
	var parts []string
	line := 0
	for it.Next() {
		n := it.Node()
		if line == 0 {
			line = w.lineOf(n.Raw)
		}
		parts = append(parts, string(n.Data))
	}
	return parts, line
}

func join(ctx, key string) string {
	if ctx == "" {
		return key
	}
	return ctx + "." + key
}

// keyValue records a key and, for inline tables and arrays, what is inside.
// The file's shape is shallow, so the walk stops a few levels down.
func (w *lineWalker) keyValue(ctx string, ctxParts []string, kv *unstable.Node, depth int) {
	parts, line := w.key(kv.Key())
	path := join(ctx, strings.ToLower(strings.Join(parts, ".")))
	full := append(ctxParts[:len(ctxParts):len(ctxParts)], parts...)
	w.set(path, line)
	w.written = append(w.written, writtenKey{full, len(ctxParts), line})
	w.value(path, full, kv.Value(), depth)
}

func (w *lineWalker) value(path string, parts []string, v *unstable.Node, depth int) {
	if depth > 3 {
		return
	}
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if n := it.Node(); n.Kind == unstable.KeyValue {
				w.keyValue(path, parts, n, depth+1)
			}
		}
	case unstable.Array:
		it := v.Children()
		for i := 0; it.Next(); i++ {
			n := it.Node()
			elem := path + "[" + strconv.Itoa(i) + "]"
			if n.Kind != unstable.Array && n.Kind != unstable.Comment {
				w.set(elem, w.lineOf(n.Raw))
			}
			w.value(elem, parts, n, depth+1)
		}
	}
}
