// Command drawbridge-verify checks a Drawbridge plain-file export on any
// computer: the MANIFEST's signature, then every file against it. It ships
// on the export drive, built for Linux, Windows and macOS.
//
//	drawbridge-verify [--key FINGERPRINT] [DIR]
//
// DIR defaults to the export the verifier sits in (it lives in
// drawbridge-export/verify/), else the current directory. Exit status: 0 the
// export is valid, 1 it is not, 2 bad usage.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"drawbridge/vault/export/manifest"
)

func main() {
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	if len(os.Args) == 1 && runtime.GOOS == "windows" {
		// Started by a double click: keep the window open to be read.
		fmt.Print("Press Enter to close this window.")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	os.Exit(code)
}

func run(argv []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("drawbridge-verify", flag.ContinueOnError)
	fl.SetOutput(stderr)
	key := fl.String("key", "", "require the manifest to be signed by the key with this `fingerprint`")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: drawbridge-verify [--key FINGERPRINT] [DIR]")
		fmt.Fprintln(stderr, "Checks a Drawbridge export: DIR is its drawbridge-export folder (or the folder holding it).")
		fl.PrintDefaults()
	}
	// Flags may follow the directory too.
	var pos []string
	for {
		if err := fl.Parse(argv); err != nil {
			return 2
		}
		if fl.NArg() == 0 {
			break
		}
		pos = append(pos, fl.Arg(0))
		argv = fl.Args()[1:]
	}
	if len(pos) > 1 {
		fl.Usage()
		return 2
	}
	dir := ""
	if len(pos) == 1 {
		dir = exportDir(pos[0])
	} else {
		dir = defaultDir()
	}
	fmt.Fprintf(stdout, "checking the export in %s\n", dir)
	res, err := manifest.Verify(dir, *key)
	if err != nil {
		fmt.Fprintf(stdout, "cannot check: %v\n", err)
		fmt.Fprintln(stdout, "NOT VALID")
		return 1
	}
	if m := res.Manifest; m != nil {
		fmt.Fprintf(stdout, "signed by the vault key with fingerprint %s\n", res.Fingerprint)
		fmt.Fprintln(stdout, "  (compare it with the identity key shown on the vault's console)")
		fmt.Fprintf(stdout, "vault %s, snapshot %s of %s taken %s, exported %s\n", m.VaultID, m.Snapshot, m.Source,
			m.SnapshotTime.Format("2006-01-02 15:04:05 MST"), m.ExportTime.Format("2006-01-02 15:04:05 MST"))
	}
	for _, p := range res.Problems {
		fmt.Fprintln(stdout, p)
	}
	for _, p := range res.NotExported {
		fmt.Fprintf(stdout, "not exported: %s\n", p)
	}
	if !res.OK() {
		fmt.Fprintf(stdout, "NOT VALID: %d problems\n", len(res.Problems))
		return 1
	}
	fmt.Fprintf(stdout, "valid: %d entries, %d files, %d bytes checked", len(res.Manifest.Entries), res.Files, res.Bytes)
	if n := len(res.NotExported); n > 0 {
		fmt.Fprintf(stdout, " (%d entries were not exported, as the signed manifest says)", n)
	}
	fmt.Fprintln(stdout)
	return 0
}

// exportDir accepts the drawbridge-export folder or the folder holding it.
func exportDir(d string) string {
	if isExport(d) {
		return d
	}
	if in := filepath.Join(d, manifest.Dir); isDir(in) {
		return in
	}
	return d
}

// defaultDir is the export this verifier was copied into, else the
// current directory.
func defaultDir() string {
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			if d := filepath.Dir(filepath.Dir(exe)); isExport(d) {
				return d
			}
		}
	}
	return exportDir(".")
}

func isExport(d string) bool {
	return isDir(filepath.Join(d, manifest.FilesDir)) || exists(filepath.Join(d, manifest.Name))
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
