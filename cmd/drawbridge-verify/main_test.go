package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestNotAnExport(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{t.TempDir()}, &out, &out); code != 1 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if !strings.Contains(out.String(), "incomplete export: no MANIFEST") {
		t.Errorf("output: %s", out.String())
	}
	out.Reset()
	if code := run([]string{"a", "b"}, &out, &out); code != 2 {
		t.Errorf("two directories: exit %d", code)
	}
	if code := run([]string{"--nope"}, &out, &out); code != 2 {
		t.Errorf("unknown flag: exit %d", code)
	}
}

// TestCrossBuild builds the verifier for every system an export carries it
// for: it must stay pure Go without cgo.
func TestCrossBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("cross builds take a while; skipped under -short")
	}
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, target := range []string{"linux/amd64", "linux/arm64", "windows/amd64", "darwin/amd64", "darwin/arm64"} {
		goos, goarch, _ := strings.Cut(target, "/")
		cmd := exec.Command(gobin, "build", "-o", filepath.Join(t.TempDir(), "v"), ".")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", target, err, out)
		}
	}
}
