package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"drawbridge/vault/export/manifest"
	"drawbridge/vault/fixture"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
)

func TestExportCommand(t *testing.T) {
	dir := t.TempDir()
	st := filepath.Join(dir, "store")
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("export cli passphrase\n"), 0o600)
	s := storetest.New(t, st, "export cli passphrase", store.InitOptions{})
	fp := seal.Fingerprint(s.Keys().Identity.Public())
	s.Close()
	src := filepath.Join(dir, "src")
	fixture.Random(src, 9)
	main := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
		code := Main(context.Background(), append(args, "--store", st, "--passphrase-file", pass), env)
		return code, out.String(), errb.String()
	}
	if code, _, e := main("backup", "--source", "db1", src); code != 0 {
		t.Fatalf("backup: %d %s", code, e)
	}
	bins := filepath.Join(dir, "bins")
	os.Mkdir(bins, 0o755)
	os.WriteFile(filepath.Join(bins, "drawbridge-verify-linux-amd64"), []byte("x"), 0o755)
	to := filepath.Join(dir, "usb")
	code, out, e := main("export", "db1/latest:"+src, "--to", to, "--verifiers", bins, "--json")
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, e)
	}
	var rep struct {
		Files     int64    `json:"files"`
		Identity  string   `json:"identity"`
		Verifiers []string `json:"verifiers"`
		Manifest  string   `json:"manifest_sha256"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("export --json: %v\n%s", err, out)
	}
	if rep.Files == 0 || rep.Identity != fp || len(rep.Verifiers) != 1 || len(rep.Manifest) != 64 {
		t.Errorf("export --json: %s", out)
	}
	res, err := manifest.Verify(filepath.Join(to, manifest.Dir), fp)
	if err != nil || !res.OK() {
		t.Fatalf("verify: %v %q", err, res.Problems)
	}
	// Journaled, with the manifest's hash.
	_, jout, _ := main("journal", "--json")
	if !strings.Contains(jout, `"type":"export"`) || !strings.Contains(jout, rep.Manifest) {
		t.Errorf("no export record with the manifest's sha256 in the journal:\n%s", jout)
	}
	// A second export to the same drive is refused.
	if code, _, e := main("export", "latest", "--to", to); code != 1 || !strings.Contains(e, "not empty") {
		t.Errorf("export into a non-empty dir: exit %d: %s", code, e)
	}
	if code, _, _ := main("export", "latest"); code != 2 {
		t.Errorf("export without --to: exit %d", code)
	}
	// No verifiers: still exported, with a warning.
	code, _, e = main("export", "latest", "--to", filepath.Join(dir, "usb2"), "--verifiers", filepath.Join(dir, "none"))
	if code != 0 || !strings.Contains(e, "no drawbridge-verify builds") {
		t.Errorf("export without verifiers: exit %d: %s", code, e)
	}
}
