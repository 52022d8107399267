package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRefusesHostNames: the daemon's window lets through addresses
// only and the vault asks no name server, so run refuses a source named by
// a host name before it touches the network or the store.
func TestRunRefusesHostNames(t *testing.T) {
	bin := buildDrawbridge(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "drawbridge.toml")
	toml := `store = "` + filepath.Join(dir, "store") + `"

[network]
interface = "eth0"
address = "198.18.0.2/24"

[[window]]
days = "daily"
start = "02:00"
duration = "1h"

[[source]]
name = "db1"
kind = "sftp"
host = "db1.example.org"
user = "backup"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3ukDbZp5AtAfGZpmNwOeTX0xe1V9BKPYR6MUawHK92"
paths = ["/etc"]
`
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	r := drawbridge(t, bin, "run", "--config", cfg, "--netns", "drawbridge-no-such-namespace")
	if r.code != 2 || !strings.Contains(r.stderr, `source db1: host "db1.example.org" is a name`) {
		t.Fatalf("run with a host name: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
