package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"drawbridge/vault/export"
	"drawbridge/vault/export/manifest"
	"drawbridge/vault/fixture"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
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
	// Under CI=true they always run: the promise that the verifier builds
	// for every system is checked there.
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("cross builds take a while; skipped under -short")
	}
	gobin := fixture.Go(t)
	for _, target := range []string{"linux/amd64", "linux/arm64", "windows/amd64", "darwin/amd64", "darwin/arm64"} {
		goos, goarch, _ := strings.Cut(target, "/")
		cmd := exec.Command(gobin, "build", "-o", filepath.Join(t.TempDir(), "v"), ".")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", target, err, out)
		}
	}
}

func TestVerifyAnExport(t *testing.T) {
	dir := t.TempDir()
	st := filepath.Join(dir, "store")
	s := storetest.New(t, st, "pass", store.InitOptions{})
	src := filepath.Join(dir, "src")
	fixture.Random(src, 11)
	snap := storetest.Backup(t, s, "h", src)
	r := storetest.Unlock(t, s, "pass")
	usb := filepath.Join(dir, "usb")
	if _, err := export.Export(context.Background(), r, storetest.Root(t, snap), "", usb, export.Snapshot{ID: snap.ID}, export.Options{Identity: s.Keys().Identity}); err != nil {
		t.Fatal(err)
	}
	fp := seal.Fingerprint(s.Keys().Identity.Public())
	var out bytes.Buffer
	t.Chdir(usb) // no DIR: the export under the current directory
	if code := run([]string{"--key", fp}, &out, &out); code != 0 || !strings.Contains(out.String(), fp) || !strings.Contains(out.String(), "valid:") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{filepath.Join(usb, manifest.Dir), "--key", "0000:0000"}, &out, &out); code != 1 || !strings.Contains(out.String(), "not by the required key") {
		t.Fatalf("wrong key: exit %d:\n%s", code, out.String())
	}
}
