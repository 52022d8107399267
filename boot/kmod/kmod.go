// Package kmod resolves and loads Linux kernel modules from a module
// directory (/lib/modules/RELEASE) the way modprobe would, without modprobe:
// modules.dep gives each module's file and the modules it needs,
// modules.softdep the modules to load before it ("pre:"), modules.alias the
// names those soft dependencies use, and modules.builtin the modules that
// are part of the kernel and need no loading.
//
// The same index serves twice: the image builder resolves the appliance's
// module list on the build machine to pick the files that go into the
// initramfs (and writes an index covering only them), and PID 1 resolves the
// list again at boot from that index to load them in order.
package kmod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
)

// Index files, relative to the module directory.
const (
	DepFile     = "modules.dep"
	SoftdepFile = "modules.softdep"
	AliasFile   = "modules.alias"
	BuiltinFile = "modules.builtin"
)

// maxIndexFile caps what is read of one index file (Debian's modules.alias,
// the largest, is about 1.3 MB).
const maxIndexFile = 16 << 20

// Index is a parsed module directory index.
type Index struct {
	// files maps a module name to its file, relative to the module dir.
	files map[string]string
	// deps maps a module name to the names it needs, in modules.dep order.
	deps map[string][]string
	// pre maps a module name to the names (or aliases) to load before it.
	pre map[string][]string
	// aliases maps an exact alias (no wildcards) to module names.
	aliases map[string][]string
	// builtin maps the names of modules compiled into the kernel to their
	// modules.builtin lines.
	builtin map[string]string
	// order is every module name in modules.dep order, for stable output.
	order []string
}

// Name returns the canonical name of a module given by name or file name:
// "usb-storage", "usb_storage" and "kernel/drivers/usb/storage/usb-storage.ko"
// are all "usb_storage".
func Name(s string) string {
	s = path.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// Parse reads the index of the module directory dir. modules.dep is
// required; the other index files are optional.
func Parse(dir fs.FS) (*Index, error) {
	ix := &Index{
		files:   map[string]string{},
		deps:    map[string][]string{},
		pre:     map[string][]string{},
		aliases: map[string][]string{},
		builtin: map[string]string{},
	}
	dep, err := readIndexFile(dir, DepFile)
	if err != nil {
		return nil, err
	}
	if err := ix.parseDep(dep); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name  string
		parse func([]byte)
	}{
		{SoftdepFile, ix.parseSoftdep},
		{AliasFile, ix.parseAlias},
		{BuiltinFile, ix.parseBuiltin},
	} {
		b, err := readIndexFile(dir, f.name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		f.parse(b)
	}
	return ix, nil
}

func readIndexFile(dir fs.FS, name string) ([]byte, error) {
	f, err := dir.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read module index: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIndexFile+1))
	if err != nil {
		return nil, fmt.Errorf("read module index %s: %w", name, err)
	}
	if len(b) > maxIndexFile {
		return nil, fmt.Errorf("read module index %s: larger than %d bytes", name, maxIndexFile)
	}
	return b, nil
}

func lines(b []byte, fn func(line string)) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fn(line)
	}
}

func (ix *Index) parseDep(b []byte) error {
	var bad string
	lines(b, func(line string) {
		file, rest, ok := strings.Cut(line, ":")
		if !ok || file == "" {
			if bad == "" {
				bad = line
			}
			return
		}
		name := Name(file)
		if _, dup := ix.files[name]; !dup {
			ix.order = append(ix.order, name)
		}
		ix.files[name] = file
		var deps []string
		for _, d := range strings.Fields(rest) {
			deps = append(deps, Name(d))
		}
		ix.deps[name] = deps
	})
	if bad != "" {
		return fmt.Errorf("read module index %s: malformed line %q", DepFile, bad)
	}
	return nil
}

// parseSoftdep reads "softdep MODULE pre: A B post: C" lines. Only "pre:"
// matters here: "post:" modules are optional helpers modprobe loads after.
func (ix *Index) parseSoftdep(b []byte) {
	lines(b, func(line string) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "softdep" {
			return
		}
		name := Name(f[1])
		inPre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				inPre = true
			case "post:":
				inPre = false
			default:
				if inPre {
					ix.pre[name] = append(ix.pre[name], w)
				}
			}
		}
	})
}

// parseAlias reads "alias ALIAS MODULE" lines, keeping exact aliases only:
// soft dependencies name modules by aliases such as "crypto-crc32c", never
// by the device patterns (with wildcards) that make up most of the file.
func (ix *Index) parseAlias(b []byte) {
	lines(b, func(line string) {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" || strings.ContainsAny(f[1], "*?[") {
			return
		}
		ix.aliases[f[1]] = append(ix.aliases[f[1]], Name(f[2]))
	})
}

func (ix *Index) parseBuiltin(b []byte) {
	lines(b, func(line string) { ix.builtin[Name(line)] = line })
}

// Plan is the outcome of resolving module names.
type Plan struct {
	// Load is every module file to load, relative to the module dir, in
	// an order where each comes after the modules it needs.
	Load []string
	// Needs maps a file of Load to the files of Load it needs loaded
	// first (its dependencies and soft dependencies).
	Needs map[string][]string
	// Builtin are the requested names compiled into the kernel.
	Builtin []string
	// Missing are the requested names found neither as a module nor
	// built in, and soft dependencies that could not be found (as
	// "MODULE: DEPENDENCY").
	Missing []string
}

// Resolve plans the loading of the named modules and everything they need.
// It never fails: what cannot be found is listed in Plan.Missing, and a
// module whose hard dependency is missing is still planned (loading it will
// fail and say why).
func (ix *Index) Resolve(names ...string) Plan {
	r := resolver{ix: ix, seen: map[string]bool{}, plan: Plan{Needs: map[string][]string{}}}
	for _, n := range names {
		name := Name(n)
		switch {
		case ix.files[name] != "":
			r.add(name)
		case ix.builtin[name] != "":
			r.plan.Builtin = append(r.plan.Builtin, name)
		case len(ix.aliases[n]) > 0:
			for _, m := range ix.aliases[n] {
				r.add(m)
			}
		default:
			r.plan.Missing = append(r.plan.Missing, name)
		}
	}
	return r.plan
}

type resolver struct {
	ix   *Index
	seen map[string]bool
	plan Plan
}

// add plans name after its soft and hard dependencies. modules.dep lists a
// module's whole dependency closure with the modules needed last at the end
// (modprobe loads the list back to front), so walking it backwards gives a
// valid order; recursing as well keeps the order right for a hand-written or
// filtered index that lists only direct dependencies.
func (r *resolver) add(name string) {
	if r.seen[name] {
		return
	}
	r.seen[name] = true
	if r.ix.builtin[name] != "" {
		return
	}
	file := r.ix.files[name]
	if file == "" {
		return
	}
	var needs []string
	for _, p := range r.ix.pre[name] {
		targets := r.ix.lookup(p)
		if len(targets) == 0 {
			r.plan.Missing = append(r.plan.Missing, name+": "+p)
		}
		for _, t := range targets {
			r.add(t)
			needs = append(needs, t)
		}
	}
	deps := r.ix.deps[name]
	for i := len(deps) - 1; i >= 0; i-- {
		r.add(deps[i])
		needs = append(needs, deps[i])
	}
	r.plan.Load = append(r.plan.Load, file)
	for _, n := range needs {
		// A module in a dependency cycle is not yet in Load when the
		// cycle comes back to it: its order in Load decides.
		if f := r.ix.files[n]; f != "" && r.ix.builtin[n] == "" && slices.Contains(r.plan.Load, f) && f != file {
			r.plan.Needs[file] = append(r.plan.Needs[file], f)
		}
	}
}

// lookup finds the modules a soft dependency names: a module name or an
// exact alias. A built-in module is found but needs nothing loaded.
func (ix *Index) lookup(s string) []string {
	name := Name(s)
	if ix.files[name] != "" || ix.builtin[name] != "" {
		return []string{name}
	}
	var found []string
	for _, m := range ix.aliases[s] {
		if ix.files[m] != "" || ix.builtin[m] != "" {
			found = append(found, m)
		}
	}
	return found
}

// Subset returns the contents of the index files for a module directory
// that holds only the given module files (as listed in a Plan): the lines
// of modules.dep, modules.softdep and modules.alias that concern them, and
// all of modules.builtin. The result maps each file name to its contents.
func (ix *Index) Subset(files []string) map[string][]byte {
	keep := map[string]bool{}
	for _, f := range files {
		keep[Name(f)] = true
	}
	var dep, soft, alias, builtin bytes.Buffer
	for _, name := range ix.order {
		if !keep[name] {
			continue
		}
		fmt.Fprintf(&dep, "%s:", ix.files[name])
		for _, d := range ix.deps[name] {
			if keep[d] {
				fmt.Fprintf(&dep, " %s", ix.files[d])
			}
		}
		dep.WriteByte('\n')
		if pre := ix.pre[name]; len(pre) > 0 {
			fmt.Fprintf(&soft, "softdep %s pre: %s\n", name, strings.Join(pre, " "))
		}
	}
	var names []string
	for a, mods := range ix.aliases {
		for _, m := range mods {
			if keep[m] {
				names = append(names, "alias "+a+" "+m)
			}
		}
	}
	sort.Strings(names)
	for _, l := range names {
		alias.WriteString(l + "\n")
	}
	var bs []string
	for _, line := range ix.builtin {
		bs = append(bs, line)
	}
	sort.Strings(bs)
	for _, b := range bs {
		builtin.WriteString(b + "\n")
	}
	return map[string][]byte{
		DepFile:     dep.Bytes(),
		SoftdepFile: soft.Bytes(),
		AliasFile:   alias.Bytes(),
		BuiltinFile: builtin.Bytes(),
	}
}
