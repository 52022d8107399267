// Package configtest gives tests a valid configuration to start from, as
// a person writes it, and host keys to pin in it.
package configtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// HostKey returns a new ed25519 public key as a source's host_key takes
// it: "ssh-ed25519 AAAA...".
func HostKey(t testing.TB) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// Text is a valid configuration: the store at store, eth0 at
// 198.18.0.2/24, a daily window at 02:00 lasting an hour, and one agent
// source, db1, at host with host_key hostKey, pulling /etc.
func Text(store, host, hostKey string) string {
	return `store = "` + store + `"
[network]
interface = "eth0"
address = "198.18.0.2/24"
[[window]]
days = "daily"
start = "02:00"
duration = "1h"
[[source]]
name = "db1"
kind = "agent"
host = "` + host + `"
user = "backup"
host_key = "` + hostKey + `"
paths = ["/etc"]
`
}
