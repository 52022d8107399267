package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/internal/sshtest"
	"drawbridge/vault/store"
)

// buildDrawbridge builds the drawbridge binary into a temporary directory.
func buildDrawbridge(t *testing.T) string {
	t.Helper()
	return fixture.Build(t, "drawbridge/cmd/drawbridge")[0]
}

type cliRun struct {
	stdout, stderr string
	code           int
}

func drawbridge(t *testing.T, bin string, args ...string) cliRun {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DRAWBRIDGE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	err := cmd.Run()
	r := cliRun{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run drawbridge %v: %v", args, err)
	}
	return r
}

func sourceTOML(name, kind string, h *sshtest.Host, hostKey, extra string) string {
	host, port, _ := net.SplitHostPort(h.Addr)
	return fmt.Sprintf("\n[[source]]\nname = %q\nkind = %q\nhost = %q\nport = %s\nuser = %q\nhost_key = %q\n%s\n",
		name, kind, host, port, h.User, hostKey, extra)
}

// TestPullCommand runs `drawbridge pull` from a configuration file against
// real sources: one exec and one sftp source succeed, a source whose host
// key changed is refused, and every outcome shows in `snapshots` and
// `journal`.
func TestPullCommand(t *testing.T) {
	sshtest.Require(t)
	if testing.Short() {
		t.Skip("builds the drawbridge binary")
	}
	bin := buildDrawbridge(t)
	work := t.TempDir()
	storeDir := filepath.Join(work, "store")
	pass := filepath.Join(work, "pass")
	if err := os.WriteFile(pass, []byte("a restore passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := drawbridge(t, bin, "init", "--store", storeDir, "--passphrase-file", pass)
	if r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	t.Cleanup(func() { fixture.Unseal(storeDir) })
	var key string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "ssh-ed25519 ") {
			key = l
		}
	}
	if key == "" {
		t.Fatalf("init printed no SSH key:\n%s", r.stdout)
	}

	data := filepath.Join(work, "data")
	fixture.Random(data, 3)
	execHost := sshtest.Start(t, sshtest.Options{AuthorizedKeys: []string{`restrict,command="cat /etc/os-release" ` + key}})
	sftpHost := sshtest.Start(t, sshtest.Options{AuthorizedKeys: []string{`restrict,command="internal-sftp -R" ` + key}, SFTPReadOnly: true})
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	wrong, _ := ssh.NewPublicKey(pub)

	cfgPath := filepath.Join(work, "vault.toml")
	cfg := fmt.Sprintf("store = %q\n", storeDir) +
		sourceTOML("osrel", "exec", execHost, execHost.HostKeyLine, `command = "cat /etc/os-release"`) +
		sourceTOML("files", "sftp", sftpHost, sftpHost.HostKeyLine, fmt.Sprintf("paths = [%q]\npriority = -1", data)) +
		sourceTOML("moved", "exec", execHost, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(wrong))), "")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	// The lines authorized-key prints are the ones installed above.
	r = drawbridge(t, bin, "authorized-key", "--config", cfgPath, "--source", "files")
	if r.code != 0 || r.stdout != `restrict,command="internal-sftp -R" `+key+"\n" {
		t.Fatalf("authorized-key --source files: %+v", r)
	}
	r = drawbridge(t, bin, "authorized-key", "--config", cfgPath)
	if r.code != 0 || !strings.Contains(r.stdout, "\n"+`restrict,command="cat /etc/os-release" `+key+"\n") ||
		strings.Count(r.stdout, key) != 3 {
		t.Fatalf("authorized-key: %+v", r)
	}

	// Usage errors.
	for _, args := range [][]string{
		{"pull", "--config", cfgPath, "--source", "nope"},
		{"pull", "--config", cfgPath, "--bogus"},
		{"pull"},
		{"pull", "--config", filepath.Join(work, "missing.toml")},
		{"pull", "--config", cfgPath, "extra"},
	} {
		if r := drawbridge(t, bin, args...); r.code != 2 {
			t.Errorf("drawbridge %v: exit %d, want 2\n%s", args, r.code, r.stderr)
		}
	}

	// One source alone.
	r = drawbridge(t, bin, "pull", "--config", cfgPath, "--source", "osrel")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "osrel  snapshot ") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("pull --source osrel: %+v", r)
	}

	t.Logf("pull --source osrel:\n%s", r.stdout)

	// All of them: the refused source fails alone.
	r = drawbridge(t, bin, "pull", "--config", cfgPath, "--json")
	if r.code != 1 {
		t.Fatalf("pull with a refused source: %+v", r)
	}
	t.Logf("pull --json, standard error:\n%s", r.stderr)
	var results []pullResult
	if err := json.Unmarshal([]byte(r.stdout), &results); err != nil {
		t.Fatalf("pull --json: %v\n%s", err, r.stdout)
	}
	if len(results) != 3 || results[0].Source != "files" || !results[0].OK || results[0].Files == 0 ||
		results[1].Source != "moved" || results[1].OK || !strings.Contains(results[1].Error, "host key refused") ||
		results[2].Source != "osrel" || !results[2].OK {
		t.Fatalf("pull --json: %+v", results)
	}
	if strings.Contains(r.stdout+r.stderr, "PRIVATE KEY") {
		t.Fatal("pull printed a private key")
	}

	r = drawbridge(t, bin, "snapshots", "--store", storeDir, "--json")
	var snaps []struct {
		ID, Source, Kind string
		Files            int64
	}
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil || r.code != 0 {
		t.Fatalf("snapshots --json: %v %+v", err, r)
	}
	got := map[string]int{}
	for _, s := range snaps {
		got[s.Source+"/"+s.Kind]++
		got[s.ID]++
	}
	if len(snaps) != 3 || got["osrel/exec"] != 2 || got["files/sftp"] != 1 || got[results[0].ID] != 1 || got[results[2].ID] != 1 {
		t.Fatalf("snapshots: %+v", snaps)
	}
	r = drawbridge(t, bin, "journal", "--store", storeDir, "--json")
	if !strings.Contains(r.stdout, `"type":"hostkey-refused"`) || !strings.Contains(r.stdout, `"type":"pull-failed"`) {
		t.Fatalf("journal: %s", r.stdout)
	}

	// The sftp snapshot restores to the tree it was taken from, to the
	// second.
	target := filepath.Join(work, "restored")
	r = drawbridge(t, bin, "restore", "files/latest:"+data, "--target", target, "--store", storeDir, "--passphrase-file", pass)
	if r.code != 0 {
		t.Fatalf("restore: %+v", r)
	}
	for _, d := range fixture.Compare(data, target) {
		if !strings.Contains(d, "mtime") && !strings.HasPrefix(d, `".": mode`) {
			t.Errorf("restored tree differs: %s", d)
		}
	}
}

// TestAuthorizedKeyOptions: the line for each kind, with from= only for a
// static vault address.
func TestAuthorizedKey(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the drawbridge binary")
	}
	bin := buildDrawbridge(t)
	work := t.TempDir()
	storeDir := filepath.Join(work, "store")
	pass := filepath.Join(work, "pass")
	os.WriteFile(pass, []byte("pass\n"), 0o600)
	if r := drawbridge(t, bin, "init", "--store", storeDir, "--passphrase-file", pass); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	t.Cleanup(func() { fixture.Unseal(storeDir) })
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	hk, _ := ssh.NewPublicKey(pub)
	hostKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk)))
	src := func(name, kind, extra string) string {
		return fmt.Sprintf("\n[[source]]\nname = %q\nkind = %q\nhost = \"198.18.0.1\"\nuser = \"backup\"\nhost_key = %q\n%s\n", name, kind, hostKey, extra)
	}
	sources := src("a", "agent", `paths = ["/etc"]`) + src("s", "sftp", `paths = ["/srv"]`) +
		src("e", "exec", `command = "pg_dump --format \"custom\" app"`) + src("x", "exec", "")

	for _, tc := range []struct {
		network, from string
	}{
		{"", ""},
		{"[network]\ninterface = \"eth0\"\naddress = \"198.18.0.2/24\"\n", `from="198.18.0.2",`},
		{"[network]\ninterface = \"eth0\"\naddress = \"dhcp\"\n", ""},
	} {
		cfg := filepath.Join(t.TempDir(), "vault.toml")
		os.WriteFile(cfg, []byte(tc.network+sources), 0o644)
		r := drawbridge(t, bin, "authorized-key", "--config", cfg, "--store", storeDir, "--json")
		var list []struct{ Source, Line string }
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || r.code != 0 {
			t.Fatalf("authorized-key --json: %v %+v", err, r)
		}
		if len(list) != 4 {
			t.Fatalf("%d lines", len(list))
		}
		key := list[0].Line[strings.Index(list[0].Line, "ssh-ed25519 "):]
		if !strings.HasSuffix(key, " drawbridge") {
			t.Fatalf("key %q", key)
		}
		want := []string{
			`restrict,` + tc.from + `command="/usr/local/bin/drawbridge-agent" ` + key,
			`restrict,` + tc.from + `command="internal-sftp -R" ` + key,
			`restrict,` + tc.from + `command="pg_dump --format \"custom\" app" ` + key,
			`restrict,` + tc.from + `command="COMMAND" ` + key,
		}
		for i, w := range want {
			if list[i].Line != w {
				t.Errorf("%s: got  %s\nwant %s", list[i].Source, list[i].Line, w)
			}
			// Every line parses as an authorized_keys line.
			if _, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(list[i].Line)); err != nil || opts[0] != "restrict" {
				t.Errorf("%s: %v %v", list[i].Source, opts, err)
			}
		}
		text := drawbridge(t, bin, "authorized-key", "--config", cfg, "--store", storeDir)
		if text.code != 0 || !strings.Contains(text.stdout, "# x (exec): in ~backup/.ssh/authorized_keys on 198.18.0.1\n# no command") {
			t.Fatalf("authorized-key: %+v", text)
		}
		// The console's settings screen shows the same lines, and the file
		// it writes to a drive holds them, as a person at the appliance has
		// no shell to run authorized-key.
		s, err := store.Open(storeDir, store.Options{JournalOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		file, err := keysText(s, cfg)
		if err != nil || !strings.HasSuffix(file, text.stdout) || !strings.HasPrefix(file, "# Drawbridge vault ") {
			t.Errorf("the keys file: %v\n%s", err, file)
		}
		lines, err := settingsLines(s, cfg)
		s.Close()
		shown := strings.Join(lines, "\n")
		if err != nil || !strings.Contains(shown, text.stdout) || !strings.Contains(shown, "ssh key   "+key) || !strings.Contains(shown, "name = \"x\"") {
			t.Errorf("the settings: %v\n%s", err, shown)
		}
	}
}
