package images

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/mkuimage/cpio"
)

// ExternalTools are the programs from the build machine's Debian packages
// that the image carries, in /sbin: PID 1 formats the data disk with
// mke2fs on first boot, and an export drive is made FAT or exFAT. Nothing
// else that is not built from this repository goes in.
var ExternalTools = []Requirement{
	{"mke2fs", "e2fsprogs"},
	{"mkfs.vfat", "dosfstools"},
	{"mkfs.exfat", "exfatprogs"},
}

// libDir is where the tools' shared libraries go in the image: a directory
// Debian's dynamic loader searches when there is no /etc/ld.so.cache.
const libDir = "lib/x86_64-linux-gnu"

// hostLibDirs are the build machine's directories searched for a library
// named by DT_NEEDED, in the loader's order.
var hostLibDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// maxELF caps what is read of one tool or library.
const maxELF = 64 << 20

// externalRecords are the archive records of the external tools: each
// program in sbin/, the shared libraries it needs (DT_NEEDED, followed
// through the libraries themselves) in lib/x86_64-linux-gnu/, and the
// dynamic loader at the path its program header names. Records come in
// sorted order, so the archive does not depend on the build machine's
// directory order.
func externalRecords(tools []Requirement) ([]cpio.Record, error) {
	files := map[string][]byte{}  // archive path → contents
	var need []string             // sonames still to resolve
	resolved := map[string]bool{} // sonames resolved
	loaders := map[string]bool{}  // sonames of the dynamic loaders
	dirs := map[string]bool{"sbin": true, libDir: true}
	for _, t := range tools {
		src, err := findTool(t.Path)
		if err != nil {
			return nil, MissingError([]Requirement{t})
		}
		b, libs, interp, err := readELF(src)
		if err != nil {
			return nil, err
		}
		files[path.Join("sbin", t.Path)] = b
		need = append(need, libs...)
		if interp != "" {
			ib, _, _, err := readELF(interp)
			if err != nil {
				return nil, fmt.Errorf("%s's loader: %w", t.Path, err)
			}
			rel := strings.TrimPrefix(path.Clean(interp), "/")
			files[rel] = ib
			loaders[path.Base(rel)] = true
			dirs[path.Dir(rel)] = true
		}
	}
	for len(need) > 0 {
		soname := need[0]
		need = need[1:]
		if resolved[soname] {
			continue
		}
		resolved[soname] = true
		src, err := findLib(soname)
		if err != nil {
			return nil, err
		}
		b, libs, _, err := readELF(src)
		if err != nil {
			return nil, err
		}
		if loaders[soname] {
			continue // libc names the loader, which is already in
		}
		files[path.Join(libDir, soname)] = b
		need = append(need, libs...)
	}
	var recs []cpio.Record
	var dirNames []string
	for d := range dirs {
		for ; d != "." && d != "/"; d = path.Dir(d) {
			dirNames = append(dirNames, d)
		}
	}
	sort.Strings(dirNames)
	for i, d := range dirNames {
		if i == 0 || dirNames[i-1] != d {
			recs = append(recs, cpio.Directory(d, 0o755))
		}
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		recs = append(recs, cpio.StaticFile(n, string(files[n]), 0o755))
	}
	return recs, nil
}

// findTool finds a program in the directories Debian installs them to.
func findTool(name string) (string, error) {
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, os.ErrNotExist)
}

// findLib finds a shared library by its DT_NEEDED name.
func findLib(soname string) (string, error) {
	if strings.Contains(soname, "/") {
		return "", fmt.Errorf("shared library %q: a path, not a name", soname)
	}
	for _, d := range hostLibDirs {
		p := filepath.Join(d, soname)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("shared library %s: not found in %s", soname, strings.Join(hostLibDirs, ", "))
}

// readELF reads an x86-64 ELF file (following symlinks) and returns its
// bytes, the libraries it needs and its program interpreter.
func readELF(name string) (b []byte, needed []string, interp string, err error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, "", err
	}
	if st.Size() > maxELF {
		return nil, nil, "", fmt.Errorf("%s: %d bytes, more than the %d a tool may have", name, st.Size(), maxELF)
	}
	b = make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, nil, "", fmt.Errorf("read %s: %w", name, err)
	}
	e, err := elf.NewFile(f)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%s: %w", name, err)
	}
	defer e.Close()
	if e.Machine != elf.EM_X86_64 {
		return nil, nil, "", fmt.Errorf("%s: machine %v, want x86-64", name, e.Machine)
	}
	needed, err = e.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, nil, "", fmt.Errorf("%s: DT_NEEDED: %w", name, err)
	}
	for _, p := range e.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		s := make([]byte, min(p.Filesz, 4096))
		if _, err := p.ReadAt(s, 0); err != nil {
			return nil, nil, "", fmt.Errorf("%s: PT_INTERP: %w", name, err)
		}
		interp = strings.TrimRight(string(s), "\x00")
		if !path.IsAbs(interp) {
			return nil, nil, "", fmt.Errorf("%s: loader %q is not an absolute path", name, interp)
		}
	}
	return b, needed, interp, nil
}
