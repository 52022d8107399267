package config

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	key := ed25519Key(t)
	base := `store = "/data/store"
[network]
interface = "eth0"
address = "198.18.0.2/24"
[[window]]
days = "daily"
start = "02:00"
duration = "1h"
[[window]]
days = "sat,sun"
start = "13:30"
duration = "3h"
[[source]]
name = "db1"
kind = "agent"
host = "198.18.0.1"
user = "backup"
host_key = "` + key + `"
paths = ["/etc"]
`
	old, err := Parse("old.toml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(old, old); d != nil {
		t.Fatalf("diff of a config with itself: %v", d)
	}
	next := strings.Replace(base, `host = "198.18.0.1"`, `host = "198.18.0.5"`, 1)
	next = strings.Replace(next, `paths = ["/etc"]`, `paths = ["/etc", "/srv"]`, 1)
	next = strings.Replace(next, "[[window]]\ndays = \"sat,sun\"\nstart = \"13:30\"\nduration = \"3h\"\n", "", 1)
	next = strings.Replace(next, `start = "02:00"`, `start = "03:00"`, 1)
	next = strings.Replace(next, `address = "198.18.0.2/24"`, `address = "dhcp"`, 1)
	next += `[[source]]
name = "web2"
kind = "exec"
host = "198.18.0.7"
user = "dump"
host_key = "` + key + `"
command = "pg_dumpall"
`
	nc, err := Parse("new.toml", []byte(next))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range Diff(old, nc) {
		got = append(got, c.String())
	}
	want := []string{
		"network: address 198.18.0.2/24 → dhcp",
		"window 1: start 02:00 → 03:00",
		"- window 2: days weekends, start 13:30, duration 3h",
		"source db1: host 198.18.0.1 → 198.18.0.5; paths /etc → /etc /srv",
		"+ source web2: kind exec, host 198.18.0.7, port 22, user dump, host_key ssh-ed25519 SHA256:",
	}
	if len(got) != len(want) {
		t.Fatalf("diff:\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("line %d: %q, want %q…", i, got[i], want[i])
		}
	}
	if !strings.HasSuffix(got[4], "command pg_dumpall, priority 0, timeout 5m") {
		t.Errorf("added source: %q", got[4])
	}

	// From nothing: everything is added.
	var added []string
	for _, c := range Diff(nil, old) {
		if c.Op != '+' {
			t.Errorf("from no configuration: %s", c)
		}
		added = append(added, c.Subject)
	}
	if strings.Join(added, ",") != "store,network,window 1,window 2,source db1" {
		t.Errorf("from no configuration: %v", added)
	}
	// A source removed, and a changed host key shown as fingerprints.
	other := strings.Replace(base, key, ed25519Key(t), 1)
	oc, _ := Parse("o.toml", []byte(other))
	d := Diff(old, oc)
	if len(d) != 1 || !strings.HasPrefix(d[0].String(), "source db1: host_key ssh-ed25519 SHA256:") || !strings.Contains(d[0].String(), " → ssh-ed25519 SHA256:") {
		t.Errorf("changed host key: %v", d)
	}
	empty, _ := ParseWith("e.toml", nil, ParseOptions{AllowNoStore: true})
	d = Diff(old, empty)
	if len(d) != 5 || d[len(d)-1].String()[:11] != "- source db" {
		t.Errorf("to an empty configuration: %v", d)
	}
}
