package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"drawbridge/vault/config/configtest"
)

// authorized returns a public key in authorized_keys format, without the
// trailing newline.
func authorized(t testing.TB, pub any) string {
	t.Helper()
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func ed25519Key(t testing.TB) string { return configtest.HostKey(t) }

func ecdsaKey(t testing.TB, c elliptic.Curve) string {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return authorized(t, &k.PublicKey)
}

// rsaKey returns an RSA public key of the given size. Only the modulus'
// length matters to the checks, so a random odd number stands in for a
// product of primes and the test does not wait for key generation.
func rsaKey(t testing.TB, bits int) string {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits-1)))
	if err != nil {
		t.Fatal(err)
	}
	n.SetBit(n, bits-1, 1).SetBit(n, 0, 1)
	return authorized(t, &rsa.PublicKey{N: n, E: 65537})
}

// certKey returns an ed25519 host certificate.
func certKey(t testing.TB) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, caPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(caPriv)
	if err != nil {
		t.Fatal(err)
	}
	cert := &ssh.Certificate{Key: sshPub, CertType: ssh.HostCert, ValidPrincipals: []string{"db1"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))
}

// skKey returns a FIDO security-key ed25519 public key, a type the vault
// does not accept as a host key.
func skKey(t testing.TB) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blob := ssh.Marshal(struct {
		Name        string
		KeyBytes    []byte
		Application string
	}{"sk-ssh-ed25519@openssh.com", pub, "ssh:"})
	k, err := ssh.ParsePublicKey(blob)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// base is a good configuration; the table tests edit it line by line, so
// its line numbers matter.
const base = `store = "/data/store"

[network]
interface = "eth0"
address = "198.18.0.2/24"
gateway = "198.18.0.1"

[[window]]
days = "daily"
start = "02:00"
duration = "1h"

[[source]]
name = "db1"
kind = "agent"
host = "198.18.0.10"
port = 22
user = "backup"
host_key = "KEY1"
paths = ["/etc", "/srv/app"]

[[source]]
name = "dump"
kind = "exec"
host = "198.18.0.11"
user = "postgres"
host_key = "KEY2 pg@dump"
command = "pg_dumpall"
`

// Two real host keys, from fixed seeds so that runs (and fuzz seeds) repeat.
var (
	key1 = seededKey(1)
	key2 = seededKey(2)
)

func seededKey(b byte) string {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
	k, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// edit applies replacements to base, each old string replaced once; an
// old string that is not there is a mistake in the test.
func edit(t *testing.T, edits ...string) string {
	t.Helper()
	s := strings.Replace(base, "KEY1", key1, 1)
	s = strings.Replace(s, "KEY2", key2, 1)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(s, edits[i]) {
			t.Fatalf("edit: %q not in the file", edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	return s
}

// problemsOf returns the Errors joined in err.
func problemsOf(t *testing.T, err error) []*Error {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error does not wrap ErrInvalid: %v", err)
	}
	var list []*Error
	var walk func(error)
	walk = func(e error) {
		if ce, ok := e.(*Error); ok {
			list = append(list, ce)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	if len(list) == 0 {
		t.Fatalf("no *Error in %v", err)
	}
	return list
}

func TestGoodBase(t *testing.T) {
	c, err := Parse("drawbridge.toml", []byte(edit(t)))
	if err != nil {
		t.Fatal(err)
	}
	k1, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(key1))
	want := &Config{
		Path:  "drawbridge.toml",
		Store: "/data/store",
		Network: Network{
			Interface: "eth0", Address: "198.18.0.2/24", Gateway: "198.18.0.1",
			Prefix: netip.MustParsePrefix("198.18.0.2/24"), GatewayAddr: netip.MustParseAddr("198.18.0.1"),
		},
		Windows: []Window{{
			Days:     []time.Weekday{time.Sunday, time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday},
			Start:    2 * time.Hour,
			Duration: time.Hour,
			Line:     8,
		}},
		Sources: []Source{{
			Name: "db1", Kind: KindAgent, Host: "198.18.0.10", Port: 22, User: "backup",
			HostKey: key1, HostKeyParsed: k1, Paths: []string{"/etc", "/srv/app"},
			Timeout: 5 * time.Minute, Line: 13,
		}, {
			Name: "dump", Kind: KindExec, Host: "198.18.0.11", Port: 22, User: "postgres",
			HostKey: key2, Command: "pg_dumpall", Timeout: 5 * time.Minute, Line: 22,
		}},
	}
	got := *c
	got.Sources = append([]Source(nil), c.Sources...)
	if got.Sources[1].HostKeyParsed == nil {
		t.Fatal("no parsed host key")
	}
	got.Sources[1].HostKeyParsed = nil // compared through HostKey
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("got  %+v\nwant %+v", &got, want)
	}
	s, ok := c.Source("dump")
	if !ok || s != &c.Sources[1] {
		t.Errorf("Source(dump) = %v, %v", s, ok)
	}
	if _, ok := c.Source("nope"); ok {
		t.Error("Source(nope) found something")
	}
}

func TestGood(t *testing.T) {
	ecdsa384 := ecdsaKey(t, elliptic.P384())
	for _, tc := range []struct {
		name  string
		edits []string
		check func(*Config) string
	}{
		{"dhcp", []string{`address = "198.18.0.2/24"`, `address = "dhcp"`, `gateway = "198.18.0.1"`, `#`},
			func(c *Config) string {
				if !c.Network.DHCP || c.Network.Prefix.IsValid() || c.Network.GatewayAddr.IsValid() {
					return fmt.Sprintf("%+v", c.Network)
				}
				return ""
			}},
		{"dhcp upper case", []string{`address = "198.18.0.2/24"`, `address = "DHCP"`, `gateway = "198.18.0.1"`, `#`},
			func(c *Config) string { return when(!c.Network.DHCP, "not DHCP") }},
		{"no gateway", []string{`gateway = "198.18.0.1"`, `#`},
			func(c *Config) string { return when(c.Network.GatewayAddr.IsValid(), "has a gateway") }},
		{"ipv6", []string{`address = "198.18.0.2/24"`, `address = "2001:db8::2/64"`, `gateway = "198.18.0.1"`, `gateway = "fe80::1"`},
			func(c *Config) string {
				return when(c.Network.Prefix != netip.MustParsePrefix("2001:db8::2/64") || c.Network.GatewayAddr != netip.MustParseAddr("fe80::1"), fmt.Sprint(c.Network))
			}},
		{"gateway outside the prefix", []string{`gateway = "198.18.0.1"`, `gateway = "198.19.0.1"`}, nil},
		{"hosted mode: no network, no windows", []string{"[network]\ninterface = \"eth0\"\naddress = \"198.18.0.2/24\"\ngateway = \"198.18.0.1\"\n\n[[window]]\ndays = \"daily\"\nstart = \"02:00\"\nduration = \"1h\"\n", ""},
			func(c *Config) string { return when(len(c.Windows) != 0 || c.Network != (Network{}), "not empty") }},
		{"weekdays", []string{`"daily"`, `"weekdays"`}, days(1, 2, 3, 4, 5)},
		{"weekends", []string{`"daily"`, `"Weekends"`}, days(0, 6)},
		{"list", []string{`"daily"`, `" Mon, wed ,FRI"`}, days(1, 3, 5)},
		{"list repeats", []string{`"daily"`, `"fri,mon,fri"`}, days(1, 5)},
		{"full names", []string{`"daily"`, `"sunday,Saturday"`}, days(0, 6)},
		{"one digit hour", []string{`"02:00"`, `"2:05"`},
			func(c *Config) string { return when(c.Windows[0].Start != 2*time.Hour+5*time.Minute, "wrong start") }},
		{"last minute", []string{`"02:00"`, `"23:59"`},
			func(c *Config) string { return when(c.Windows[0].Start != 23*time.Hour+59*time.Minute, "wrong start") }},
		{"24h", []string{`"1h"`, `"24h"`},
			func(c *Config) string { return when(c.Windows[0].Duration != 24*time.Hour, "wrong duration") }},
		{"1m30s", []string{`"1h"`, `"1m30s"`},
			func(c *Config) string { return when(c.Windows[0].Duration != 90*time.Second, "wrong duration") }},
		{"single [window] table", []string{`[[window]]`, `[window]`},
			func(c *Config) string { return when(len(c.Windows) != 1 || c.Windows[0].Line != 8, "no window") }},
		{"two windows", []string{`duration = "1h"`, "duration = \"1h\"\n[[window]]\ndays = \"sat\"\nstart = \"12:00\"\nduration = \"90m\""},
			func(c *Config) string { return when(len(c.Windows) != 2 || c.Windows[1].Line != 12, "not two windows") }},
		{"port, priority, timeout", []string{`port = 22`, "port = 2222\npriority = -5\ntimeout = \"30s\""},
			func(c *Config) string {
				s := c.Sources[0]
				return when(s.Port != 2222 || s.Priority != -5 || s.Timeout != 30*time.Second, fmt.Sprintf("%+v", s))
			}},
		{"default port", []string{`port = 22`, `#`},
			func(c *Config) string { return when(c.Sources[0].Port != 22, "no default port") }},
		{"paths cleaned", []string{`["/etc", "/srv/app"]`, `["/etc/", "//srv/./app", "/"]`},
			func(c *Config) string {
				return when(!reflect.DeepEqual(c.Sources[0].Paths, []string{"/etc", "/srv/app", "/"}), fmt.Sprint(c.Sources[0].Paths))
			}},
		{"sftp", []string{`kind = "agent"`, `kind = "sftp"`},
			func(c *Config) string { return when(c.Sources[0].Kind != KindSFTP, "not sftp") }},
		{"exec without command", []string{`command = "pg_dumpall"`, `#`},
			func(c *Config) string { return when(c.Sources[1].Command != "", "has a command") }},
		{"exec with empty paths", []string{`command = "pg_dumpall"`, `paths = []`}, nil},
		{"host name", []string{`"198.18.0.10"`, `"backup-01.example.org."`}, nil},
		{"host ipv6", []string{`"198.18.0.10"`, `"2001:db8::10"`}, nil},
		{"host one label", []string{`"198.18.0.10"`, `"db1"`}, nil},
		{"host key comment dropped", []string{key1, key1 + " root@db1 with spaces"},
			func(c *Config) string { return when(c.Sources[0].HostKey != key1, c.Sources[0].HostKey) }},
		{"ecdsa-sha2-nistp256", []string{key1, ecdsaKey(t, elliptic.P256())}, nil},
		{"ecdsa-sha2-nistp384", []string{key1, ecdsa384},
			func(c *Config) string { return when(c.Sources[0].HostKey != ecdsa384, "key changed") }},
		{"ecdsa-sha2-nistp521", []string{key1, ecdsaKey(t, elliptic.P521())}, nil},
		{"ssh-rsa 3072", []string{key1, rsaKey(t, 3072)}, nil},
		{"ssh-rsa 4096", []string{key1, rsaKey(t, 4096)}, nil},
		{"name characters", []string{`name = "db1"`, `name = "A-z_0.9"`},
			func(c *Config) string { _, ok := c.Source("A-z_0.9"); return when(!ok, "not found") }},
		{"name 64", []string{`name = "db1"`, `name = "` + strings.Repeat("n", 64) + `"`}, nil},
		{"CRLF", []string{"", ""}, nil}, // converted below
		{"byte order mark", []string{`store`, "\ufeffstore"}, nil},
		{"inline tables", []string{`[network]
interface = "eth0"
address = "198.18.0.2/24"
gateway = "198.18.0.1"`, `network = { interface = "eth0", address = "198.18.0.2/24" }`}, nil},
		{"dotted keys", []string{`[network]
interface = "eth0"
address = "198.18.0.2/24"
gateway = "198.18.0.1"`, `network.interface = "eth0"
network.address = "198.18.0.2/24"
network.gateway = "198.18.0.1"
#`}, nil},
		{"64 paths", []string{`["/etc", "/srv/app"]`, pathList(64)}, nil},
		{"command of 4096 bytes", []string{`"pg_dumpall"`, `"` + strings.Repeat("x", 4096) + `"`}, nil},
		{"command with tab", []string{`"pg_dumpall"`, `"pg_dumpall\t--clean"`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := edit(t, tc.edits...)
			if tc.name == "CRLF" {
				text = strings.ReplaceAll(text, "\n", "\r\n")
			}
			c, err := Parse("drawbridge.toml", []byte(text))
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			if tc.check != nil {
				if msg := tc.check(c); msg != "" {
					t.Error(msg)
				}
			}
		})
	}
}

func when(bad bool, msg string) string {
	if bad {
		return msg
	}
	return ""
}

func days(want ...time.Weekday) func(*Config) string {
	return func(c *Config) string {
		return when(!reflect.DeepEqual(c.Windows[0].Days, want), fmt.Sprint(c.Windows[0].Days))
	}
}

func pathList(n int) string {
	var b strings.Builder
	b.WriteString("[")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `"/p%d"`, i)
	}
	b.WriteString("]")
	return b.String()
}

func TestErrors(t *testing.T) {
	rsa2048 := rsaKey(t, 2048)
	for _, tc := range []struct {
		name  string
		edits []string
		line  int
		frag  string
		n     int // how many problems; 0 means 1
	}{
		// store
		{"store missing", []string{`store = "/data/store"`, `#`}, 0, `store: missing, expected the store's absolute path`, 0},
		{"store empty", []string{`"/data/store"`, `""`}, 1, `store: is empty`, 0},
		{"store relative", []string{`"/data/store"`, `"data/store"`}, 1, `store: "data/store" is not an absolute path`, 0},
		{"store control", []string{`"/data/store"`, `"/data/\u0007"`}, 1, `store: "/data/\a" contains a control character`, 0},
		{"store type", []string{`"/data/store"`, `5`}, 1, `store: an integer is not allowed here, expected a quoted absolute path`, 0},

		// network
		{"interface missing", []string{`interface = "eth0"`, `#`}, 3, `network: interface: missing, expected the interface`, 0},
		{"interface empty", []string{`"eth0"`, `""`}, 4, `network: interface: is empty`, 0},
		{"interface space", []string{`"eth0"`, `"eth 0"`}, 4, `network: interface: "eth 0" is not an interface name`, 0},
		{"interface long", []string{`"eth0"`, `"abcdefghijklmnop"`}, 4, `is not an interface name, expected 1-15 characters`, 0},
		{"interface slash", []string{`"eth0"`, `"eth/0"`}, 4, `is not an interface name`, 0},
		{"address missing", []string{`address = "198.18.0.2/24"`, `#`}, 3, `network: address: missing`, 2},
		{"address no prefix", []string{`"198.18.0.2/24"`, `"198.18.0.2"`}, 5, `network: address: "198.18.0.2" is not "dhcp" or an address with prefix length`, 0},
		{"address bad prefix", []string{`"198.18.0.2/24"`, `"198.18.0.2/33"`}, 5, `is not "dhcp" or an address with prefix length`, 0},
		{"address multicast", []string{`"198.18.0.2/24"`, `"224.0.0.1/4"`}, 5, `is not a unicast address`, 0},
		{"address type", []string{`"198.18.0.2/24"`, `[1]`}, 5, `network: address: an array is not allowed here`, 0},
		{"gateway bad", []string{`"198.18.0.1"`, `"198.18.0.256"`}, 6, `network: gateway: "198.18.0.256" is not an IP address`, 0},
		{"gateway family", []string{`"198.18.0.1"`, `"2001:db8::1"`}, 6, `network: gateway: "2001:db8::1" is IPv6 but address "198.18.0.2/24" is IPv4`, 0},
		{"gateway with dhcp", []string{`"198.18.0.2/24"`, `"dhcp"`}, 6, `network: gateway: not allowed with address = "dhcp"`, 0},
		{"no network with windows", []string{"[network]\ninterface = \"eth0\"\naddress = \"198.18.0.2/24\"\ngateway = \"198.18.0.1\"\n", "#\n#\n#\n#\n"}, 0, `network: interface: missing`, 2},
		{"network inline bad", []string{"[network]\ninterface = \"eth0\"\naddress = \"198.18.0.2/24\"\ngateway = \"198.18.0.1\"\n", "network = { interface = \"eth0\", address = \"x\" }\n#\n#\n#\n"}, 3, `network: address: "x" is not`, 0},

		// windows
		{"days unknown", []string{`"daily"`, `"funday"`}, 9, `window: days: "funday" is not a day, expected "daily", "weekdays", "weekends" or days like "mon,wed,fri"`, 0},
		{"days unknown in list", []string{`"daily"`, `"mon,funday"`}, 9, `window: days: "funday" in "mon,funday" is not a day`, 0},
		{"days empty item", []string{`"daily"`, `"mon,,fri"`}, 9, `"mon,,fri" has an empty day between commas`, 0},
		{"days trailing comma", []string{`"daily"`, `"mon,"`}, 9, `has an empty day`, 0},
		{"days missing", []string{`days = "daily"`, `#`}, 8, `window: days: missing`, 0},
		{"days array", []string{`"daily"`, `["mon"]`}, 9, `window: days: an array is not allowed here, expected a quoted "daily"`, 0},
		{"start 25:00", []string{`"02:00"`, `"25:00"`}, 10, `window: start: "25:00" is not a time, expected HH:MM`, 0},
		{"start 02:60", []string{`"02:00"`, `"02:60"`}, 10, `window: start: "02:60" is not a time`, 0},
		{"start 24:00", []string{`"02:00"`, `"24:00"`}, 10, `is not a time`, 0},
		{"start no minutes", []string{`"02:00"`, `"2"`}, 10, `is not a time`, 0},
		{"start one digit minute", []string{`"02:00"`, `"02:0"`}, 10, `is not a time`, 0},
		{"start negative", []string{`"02:00"`, `"-1:00"`}, 10, `is not a time`, 0},
		{"start seconds", []string{`"02:00"`, `"02:00:00"`}, 10, `is not a time`, 0},
		{"start letters", []string{`"02:00"`, `"ab:cd"`}, 10, `is not a time`, 0},
		{"start TOML time", []string{`"02:00"`, `02:00:00`}, 10, `window: start: a local time is not allowed here, expected a quoted time HH:MM`, 0},
		{"start missing", []string{`start = "02:00"`, `#`}, 8, `window: start: missing`, 0},
		{"duration zero", []string{`"1h"`, `"0s"`}, 11, `window: duration: "0s" is out of range, expected 1m to 24h`, 0},
		{"duration short", []string{`"1h"`, `"30s"`}, 11, `is out of range`, 0},
		{"duration long", []string{`"1h"`, `"24h1s"`}, 11, `is out of range`, 0},
		{"duration negative", []string{`"1h"`, `"-1h"`}, 11, `is out of range`, 0},
		{"duration days", []string{`"1h"`, `"1d"`}, 11, `window: duration: "1d" is not a duration, expected e.g. "1h"`, 0},
		{"duration missing", []string{`duration = "1h"`, `#`}, 8, `window: duration: missing`, 0},
		{"duration number", []string{`"1h"`, `60`}, 11, `window: duration: an integer is not allowed here, expected a quoted duration`, 0},
		{"window not a table", []string{"[[window]]\ndays = \"daily\"\nstart = \"02:00\"\nduration = \"1h\"\n", "#\n#\n#\n#\n", "store = \"/data/store\"\n\n", "store = \"/data/store\"\nwindow = 5\n"}, 2, `window: an integer is not allowed here, expected [[window]] tables`, 0},

		// sources: name
		{"name missing", []string{`name = "db1"`, `#`}, 13, `source #1: name: missing, expected a unique name`, 0},
		{"name empty", []string{`name = "db1"`, `name = ""`}, 14, `source #1: name: is empty`, 0},
		{"name dot", []string{`name = "db1"`, `name = ".db1"`}, 14, `source #1: name: ".db1" is not a valid name, expected 1-64 characters from A-Z a-z 0-9 . _ - not starting with "."`, 0},
		{"name space", []string{`name = "db1"`, `name = "db 1"`}, 14, `source #1: name: "db 1" is not a valid name`, 0},
		{"name slash", []string{`name = "db1"`, `name = "db/1"`}, 14, `is not a valid name`, 0},
		{"name 65", []string{`name = "db1"`, `name = "` + strings.Repeat("n", 65) + `"`}, 14, `is not a valid name`, 0},
		{"name unicode", []string{`name = "db1"`, `name = "dbé"`}, 14, `is not a valid name`, 0},
		{"name twice", []string{`name = "dump"`, `name = "db1"`}, 23, `source "db1": name: "db1" is already the name of the source on line 14`, 0},
		// kind
		{"kind unknown", []string{`kind = "agent"`, `kind = "ssh"`}, 15, `source "db1": kind: "ssh" is not a kind, expected agent, sftp or exec`, 0},
		{"kind case", []string{`kind = "agent"`, `kind = "Agent"`}, 15, `"Agent" is not a kind`, 0},
		{"kind missing", []string{`kind = "agent"`, `#`}, 13, `source "db1": kind: missing, expected agent, sftp or exec`, 0},
		// host
		{"host missing", []string{`host = "198.18.0.10"`, `#`}, 13, `source "db1": host: missing`, 0},
		{"host space", []string{`"198.18.0.10"`, `"db 1"`}, 16, `source "db1": host: "db 1" is not an IP address or host name`, 0},
		{"host bad IPv4", []string{`"198.18.0.10"`, `"198.18.0.300"`}, 16, `is not an IP address or host name`, 0},
		{"host hyphen", []string{`"198.18.0.10"`, `"-db.example"`}, 16, `is not an IP address or host name`, 0},
		{"host empty label", []string{`"198.18.0.10"`, `"db..example"`}, 16, `is not an IP address or host name`, 0},
		{"host unspecified", []string{`"198.18.0.10"`, `"0.0.0.0"`}, 16, `is not an IP address or host name`, 0},
		{"host bracketed", []string{`"198.18.0.10"`, `"[2001:db8::1]"`}, 16, `is not an IP address or host name`, 0},
		{"host with port", []string{`"198.18.0.10"`, `"198.18.0.10:22"`}, 16, `is not an IP address or host name`, 0},
		{"host user@", []string{`"198.18.0.10"`, `"backup@198.18.0.10"`}, 16, `is not an IP address or host name`, 0},
		{"host long label", []string{`"198.18.0.10"`, `"` + strings.Repeat("a", 64) + `.example"`}, 16, `is not an IP address or host name`, 0},
		// port
		{"port 70000", []string{`port = 22`, `port = 70000`}, 17, `source "db1": port: 70000 is out of range, expected 1-65535`, 0},
		{"port 0", []string{`port = 22`, `port = 0`}, 17, `port: 0 is out of range`, 0},
		{"port negative", []string{`port = 22`, `port = -1`}, 17, `port: -1 is out of range`, 0},
		{"port string", []string{`port = 22`, `port = "22"`}, 17, `source: port: a string is not allowed here, expected a whole number 1-65535`, 0},
		{"port float", []string{`port = 22`, `port = 22.5`}, 17, `source: port: a float is not allowed here`, 0},
		{"port huge", []string{`port = 22`, `port = 99999999999999999999`}, 17, `source: port:`, 0},
		// user
		{"user missing", []string{`user = "backup"`, `#`}, 13, `source "db1": user: missing, expected the SSH user`, 0},
		{"user space", []string{`user = "backup"`, `user = "back up"`}, 18, `source "db1": user: "back up" is not a user name`, 0},
		// host key
		{"host_key missing", []string{`host_key = "` + key1 + `"`, `#`}, 13, `source "db1": host_key: missing, expected the source's SSH host key`, 0},
		{"host_key empty", []string{key1, ``}, 19, `host_key: is empty`, 0},
		{"host_key garbage", []string{key1, `not a key`}, 19, `source "db1": host_key: "not a key" is not an SSH public key, expected e.g. "ssh-ed25519 AAAA..."`, 0},
		{"host_key truncated", []string{key1, key1[:40]}, 19, `is not an SSH public key`, 0},
		{"host_key options", []string{`"` + key1 + `"`, `'from="198.18.0.1" ` + key1 + `'`}, 19, `host_key: has "from=\"198.18.0.1\"" before the key, expected only the key`, 0},
		{"host_key known_hosts line", []string{key1, `198.18.0.10 ` + key1}, 19, `host_key: has "198.18.0.10" before the key`, 0},
		{"host_key two keys", []string{key1, key1 + `\n` + key2}, 19, `host_key: holds more than one key, expected exactly one`, 0},
		{"host_key certificate", []string{key1, certKey(t)}, 19, `host_key: is a certificate (ssh-ed25519-cert-v01@openssh.com), expected the host's plain public key`, 0},
		{"host_key rsa 2048", []string{key1, rsa2048}, 19, `host_key: is a 2048-bit RSA key, expected at least 3072 bits`, 0},
		{"host_key security key", []string{key1, skKey(t)}, 19, `host_key: key type "sk-ssh-ed25519@openssh.com" is not allowed, expected ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least 3072 bits`, 0},
		{"host_key private", []string{key1, `-----BEGIN OPENSSH PRIVATE KEY-----`}, 19, `is not an SSH public key`, 0},
		// paths
		{"paths missing", []string{`paths = ["/etc", "/srv/app"]`, `#`}, 13, `source "db1": paths: missing, expected at least one absolute path`, 0},
		{"paths empty", []string{`["/etc", "/srv/app"]`, `[]`}, 20, `source "db1": paths: is empty, expected at least one absolute path`, 0},
		{"paths relative", []string{`["/etc", "/srv/app"]`, `["/etc", "srv/app"]`}, 20, `source "db1": paths: "srv/app" is not an absolute path, expected it to start with "/"`, 0},
		{"paths dot dot", []string{`["/etc", "/srv/app"]`, `["/srv/../etc"]`}, 20, `paths: "/srv/../etc" contains "..", expected a path without it`, 0},
		{"paths twice", []string{`["/etc", "/srv/app"]`, `["/etc", "/etc/"]`}, 20, `paths: "/etc/" is listed twice`, 0},
		{"paths empty string", []string{`["/etc", "/srv/app"]`, `[""]`}, 20, `paths: "" is empty, expected an absolute path`, 0},
		{"paths newline", []string{`["/etc", "/srv/app"]`, `["/etc\nx"]`}, 20, `paths: "/etc\nx" contains a control character`, 0},
		{"paths 65", []string{`["/etc", "/srv/app"]`, pathList(65)}, 20, `paths: 65 paths, expected at most 64`, 0},
		{"paths string", []string{`["/etc", "/srv/app"]`, `"/etc"`}, 20, `source: paths: a string is not allowed here, expected a list of quoted absolute paths`, 0},
		{"paths multi-line", []string{`["/etc", "/srv/app"]`, "[\n  \"/etc\",\n  \"rel\",\n]"}, 22, `paths: "rel" is not an absolute path`, 0},
		{"paths for exec", []string{`command = "pg_dumpall"`, `paths = ["/var"]`}, 28, `source "dump": paths: not allowed for an exec source`, 0},
		// command
		{"command for agent", []string{`port = 22`, `command = "ls"`}, 17, `source "db1": command: not allowed for an agent source, expected it only with kind = "exec"`, 0},
		{"command NUL", []string{`"pg_dumpall"`, `"pg\u0000dump"`}, 28, `source "dump": command: "pg\x00dump" contains a newline, NUL or other control character`, 0},
		{"command newline", []string{`"pg_dumpall"`, `"a\nb"`}, 28, `command: "a\nb" contains a newline`, 0},
		{"command long", []string{`"pg_dumpall"`, `"` + strings.Repeat("x", 4097) + `"`}, 28, `command: 4097 bytes is too long, expected at most 4096`, 0},
		// priority and timeout
		{"priority range", []string{`port = 22`, `priority = 2000000`}, 17, `source "db1": priority: 2000000 is out of range`, 0},
		{"priority string", []string{`port = 22`, `priority = "high"`}, 17, `source: priority: a string is not allowed here, expected a whole number`, 0},
		{"timeout short", []string{`port = 22`, `timeout = "1s"`}, 17, `source "db1": timeout: "1s" is out of range, expected 5s to 24h`, 0},
		{"timeout long", []string{`port = 22`, `timeout = "25h"`}, 17, `timeout: "25h" is out of range`, 0},
		{"timeout no unit", []string{`port = 22`, `timeout = "5"`}, 17, `timeout: "5" is not a duration`, 0},
		{"timeout empty", []string{`port = 22`, `timeout = ""`}, 17, `timeout: is empty`, 0},

		// syntax
		{"syntax", []string{`port = 22`, `port = 22 x`}, 17, `not valid TOML at column 11`, 0},
		{"unterminated string", []string{`"backup"`, `"backup`}, 18, `not valid TOML`, 0},
		{"duplicate key", []string{`port = 22`, "port = 22\nport = 23"}, 18, `port: key port is already defined`, 0},
		{"paths as a table", []string{`paths = ["/etc", "/srv/app"]`, `paths.x = 1`}, 20, `source: paths: a table is not allowed here, expected a list of quoted absolute paths`, 0},
		{"duplicate table", []string{`[[window]]`, "[network]\n[[window]]"}, 8, `network: table network already exists`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := edit(t, tc.edits...)
			c, err := Parse("drawbridge.toml", []byte(text))
			if err == nil {
				t.Fatalf("accepted:\n%s\n%+v", text, c)
			}
			if c != nil {
				t.Error("a Config came with the error")
			}
			list := problemsOf(t, err)
			want := max(tc.n, 1)
			if len(list) != want {
				t.Errorf("%d problems, want %d:\n%v", len(list), want, err)
			}
			prefix := "drawbridge.toml: "
			if tc.line > 0 {
				prefix = fmt.Sprintf("drawbridge.toml:%d: ", tc.line)
			}
			found := false
			for _, e := range list {
				if e.File != "drawbridge.toml" {
					t.Errorf("File = %q", e.File)
				}
				if e.Line == tc.line && strings.HasPrefix(e.Error(), prefix) && strings.Contains(e.Msg, tc.frag) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem on line %d containing\n\t%s\ngot:\n%v", tc.line, tc.frag, err)
			}
		})
	}
}

func TestAllowNoStore(t *testing.T) {
	text := edit(t, `store = "/data/store"`, `#`)
	c, err := ParseWith("drawbridge.toml", []byte(text), ParseOptions{AllowNoStore: true})
	if err != nil || c.Store != "" {
		t.Fatalf("%v %+v", err, c)
	}
	text = edit(t, `"/data/store"`, `"relative"`)
	if _, err := ParseWith("drawbridge.toml", []byte(text), ParseOptions{AllowNoStore: true}); err == nil {
		t.Fatal("a relative store was accepted")
	}
	c, err = ParseWith("drawbridge.toml", []byte(edit(t, `"/data/store"`, `"/data//store/"`)), ParseOptions{AllowNoStore: true})
	if err != nil || c.Store != "/data/store" {
		t.Fatalf("%v %+v", err, c)
	}

	path := filepath.Join(t.TempDir(), "drawbridge.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadWith(path, ParseOptions{AllowNoStore: true})
	if err == nil || !strings.HasPrefix(err.Error(), path+":1: store:") {
		t.Fatalf("LoadWith: %v", err)
	}
}

// TestAllReported checks that one pass reports every problem, in line order.
func TestAllReported(t *testing.T) {
	text := edit(t,
		`"/data/store"`, `"rel"`,
		`"eth0"`, `""`,
		`"02:00"`, `"25:00"`,
		`port = 22`, `port = 0`,
		`kind = "exec"`, `kind = "tape"`,
	)
	_, err := Parse("drawbridge.toml", []byte(text))
	list := problemsOf(t, err)
	var lines []int
	for _, e := range list {
		lines = append(lines, e.Line)
	}
	if want := []int{1, 4, 10, 17, 24}; !reflect.DeepEqual(lines, want) {
		t.Errorf("lines %v, want %v:\n%v", lines, want, err)
	}
	// The command of a source whose kind is wrong is not judged against it.
	if strings.Contains(err.Error(), "command") {
		t.Errorf("command reported: %v", err)
	}
}

func TestErrorCap(t *testing.T) {
	var b strings.Builder
	b.WriteString("store = \"/data/store\"\n")
	for range 30 {
		b.WriteString("[[source]]\nname = \"x\"\nkind = \"exec\"\nhost = \"198.18.0.1\"\nuser = \"u\"\n")
	}
	_, err := Parse("drawbridge.toml", []byte(b.String()))
	list := problemsOf(t, err)
	if len(list) != maxErrors+1 {
		t.Fatalf("%d problems, want %d", len(list), maxErrors+1)
	}
	last := list[len(list)-1]
	if last.Line != 0 || !strings.Contains(last.Msg, "and 39 more problems not shown") {
		t.Errorf("last = %v", last)
	}
}

func TestTooManySources(t *testing.T) {
	var b strings.Builder
	b.WriteString("store = \"/data/store\"\n")
	for i := range maxSources + 1 {
		fmt.Fprintf(&b, "[[source]]\nname = \"s%d\"\nkind = \"exec\"\nhost = \"198.18.0.1\"\nuser = \"u\"\nhost_key = %q\n", i, key1)
	}
	_, err := Parse("drawbridge.toml", []byte(b.String()))
	list := problemsOf(t, err)
	if len(list) != 1 || list[0].Line != 2+6*maxSources || !strings.Contains(list[0].Msg, "source: 1001 sources, expected at most 1000") {
		t.Fatalf("%v", err)
	}
}

func TestTooManyWindows(t *testing.T) {
	text := edit(t)
	for range maxWindows {
		text += "[[window]]\ndays = \"daily\"\nstart = \"02:00\"\nduration = \"1h\"\n"
	}
	_, err := Parse("drawbridge.toml", []byte(text))
	list := problemsOf(t, err)
	if len(list) != 1 || !strings.Contains(list[0].Msg, "window: 101 windows, expected at most 100") {
		t.Fatalf("%v", err)
	}
}

func TestUnknownKeys(t *testing.T) {
	text := `stor = "/data/store"
store = "/data/store"
colour = "blue"

[network]
interface = "eth0"
address = "198.18.0.2/24"
mtu = 1500
store = "/x"
dns.server = "198.18.0.53"

[network.extra]
x = 1

[[window]]
days = "daily"
start = "02:00"
duration = "1h"
end = "03:00"

[[source]]
name = "db1"
kind = "agent"
hostt = "198.18.0.10"
user = "backup"
host_key = "` + key1 + `"
paths = ["/etc"]
Port = 22
hostKey = "x"

[source.options]
compress = true

[[source]]
name = "db2"
kind = "exec"
host = "198.18.0.11"
user = "backup"
host_key = "` + key1 + `"

[[sources]]
name = "x"

[extra]
y = 2
`
	_, err := Parse("drawbridge.toml", []byte(text))
	list := problemsOf(t, err)
	want := []struct {
		line int
		msg  string
	}{
		{1, `unknown key "stor" at the top level (expected one of: store, network, window, source); did you mean "store"?`},
		{3, `unknown key "colour" at the top level (expected one of: store, network, window, source)`},
		{8, `unknown key "mtu" in [network] (expected one of: interface, address, gateway)`},
		{9, `unknown key "store" in [network] (expected one of: interface, address, gateway); "store" belongs at the top, before the first [table]`},
		{10, `unknown key "dns" in [network]`},
		{12, `unknown key "extra" in [network]`},
		{19, `unknown key "end" in [[window]] (expected one of: days, start, duration)`},
		{24, `unknown key "hostt" in [[source]] (expected one of: name, kind, host, port, user, host_key, paths, command, priority, timeout); did you mean "host"?`},
		{21, `source "db1": host: missing`}, // checks still run
		{28, `unknown key "Port" in [[source]]`},
		{28, `did you mean "port"? Keys are lower case`},
		{29, `unknown key "hostKey" in [[source]]`},
		{29, `did you mean "host_key"?`},
		{31, `unknown key "options" in [[source]]`},
		{41, `unknown key "sources" at the top level`},
		{41, `did you mean "source"?`},
		{44, `unknown key "extra" at the top level`},
	}
	for _, w := range want {
		found := false
		for _, e := range list {
			if e.Line == w.line && strings.Contains(e.Msg, w.msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("missing line %d: %s", w.line, w.msg)
		}
	}
	if t.Failed() {
		t.Log(err)
	}
}

// TestKeyCase checks that keys match in case: go-toml alone would take
// "Port" for "port".
func TestKeyCase(t *testing.T) {
	for _, tc := range []struct {
		edits []string
		line  int
		frag  string
	}{
		{[]string{`store =`, `Store =`}, 1, `unknown key "Store" at the top level (expected one of: store, network, window, source); did you mean "store"? Keys are lower case`},
		{[]string{`[network]`, `[Network]`}, 3, `unknown key "Network" at the top level`},
		{[]string{`interface =`, `Interface =`}, 4, `unknown key "Interface" in [network]`},
		{[]string{`[[window]]`, `[[WINDOW]]`}, 8, `unknown key "WINDOW" at the top level`},
		{[]string{`days =`, `Days =`}, 9, `unknown key "Days" in [[window]]`},
		{[]string{`name = "db1"`, `Name = "db1"`}, 14, `unknown key "Name" in [[source]]`},
		{[]string{`port = 22`, "port = 22\nPort = 23"}, 18, `unknown key "Port" in [[source]]`},
		{[]string{`host_key =`, `Host_Key =`}, 19, `did you mean "host_key"?`},
	} {
		_, err := Parse("drawbridge.toml", []byte(edit(t, tc.edits...)))
		if err == nil {
			t.Errorf("%v accepted", tc.edits)
			continue
		}
		list := problemsOf(t, err)
		if list[0].Line != tc.line || !strings.Contains(list[0].Msg, tc.frag) {
			t.Errorf("%v: %v", tc.edits, err)
		}
		// One problem per key written, not one per key under a table.
		n := 0
		for _, e := range list {
			if strings.Contains(e.Msg, "Keys are lower case") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%v: %d case problems:\n%v", tc.edits, n, err)
		}
	}
}

func TestDesignExample(t *testing.T) {
	// DESIGN.md §9, with its elided host key replaced by a real one.
	const design = `store = "/data/store"

[network]
interface = "eth0"
address = "198.18.0.2/24"     # or "dhcp"
gateway = "198.18.0.1"        # optional

[[window]]
days = "daily"                # or "mon,wed,fri"
start = "02:00"               # RTC local time
duration = "1h"

[[source]]
name = "db1"
kind = "agent"                # agent | sftp | exec
host = "198.18.0.1"
port = 22
user = "backup"
host_key = "ssh-ed25519 AAAAC3Nza..."   # pinned; anything else is refused
paths = ["/etc", "/srv/app"]  # agent and sftp
# command = "pg_dumpall"      # exec: the stream to keep (the source's forced command runs it)
`
	text := strings.Replace(design, "ssh-ed25519 AAAAC3Nza...", key1, 1)
	c, err := Parse("drawbridge.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	s, ok := c.Source("db1")
	if !ok || s.Host != "198.18.0.1" || s.Port != 22 || s.HostKey != key1 || len(s.Paths) != 2 || c.Windows[0].Duration != time.Hour {
		t.Fatalf("%+v", c)
	}
	// As written, with the elided key, it is refused at that key.
	_, err = Parse("drawbridge.toml", []byte(design))
	if list := problemsOf(t, err); len(list) != 1 || list[0].Line != 19 || !strings.Contains(list[0].Msg, "host_key") {
		t.Fatal(err)
	}
}

func TestExampleFile(t *testing.T) {
	const path = "../../docs/drawbridge.example.toml"
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != path || c.Store != "/data/store" || len(c.Windows) != 2 || len(c.Sources) != 3 {
		t.Fatalf("%+v", c)
	}
	kinds := map[string]bool{}
	for _, s := range c.Sources {
		kinds[s.Kind] = true
	}
	if len(kinds) != 3 {
		t.Errorf("the example shows kinds %v, want all three", kinds)
	}
	// Addresses in the example come from the range set aside for tests.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bench := netip.MustParsePrefix("198.18.0.0/15")
	for _, m := range regexp.MustCompile(`\b\d+\.\d+\.\d+\.\d+\b`).FindAllString(string(data), -1) {
		if a, err := netip.ParseAddr(m); err != nil || !bench.Contains(a) {
			t.Errorf("the example uses %s, outside %s", m, bench)
		}
	}
}

func TestSize(t *testing.T) {
	big := []byte("# " + strings.Repeat("x", 2<<20) + "\n" + edit(t))
	path := filepath.Join(t.TempDir(), "drawbridge.toml")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		func() error { _, err := Load(path); return err }(),
		func() error { _, err := Parse("drawbridge.toml", big); return err }(),
	} {
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "larger than the limit of 1 MiB") {
			t.Errorf("%v", err)
		}
	}
	// Just under the limit is fine.
	text := edit(t)
	ok := []byte(text + "#" + strings.Repeat("x", MaxSize-len(text)-2) + "\n")
	if len(ok) != MaxSize {
		t.Fatal(len(ok))
	}
	if _, err := Parse("drawbridge.toml", ok); err != nil {
		t.Fatal(err)
	}
}

func TestNotUTF8(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		line int
	}{
		{"latin-1 comment", "store = \"/data/store\"\n# caf\xe9\n", 2},
		{"in a string", "store = \"/data/st\xffore\"\n", 1},
		{"binary", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xff", 1},
		{"zip", "PK\x03\x04\x14\x00\x08\x08\x08\x00\xa0\xb1", 1},
		{"utf-16", "\xff\xfes\x00t\x00o\x00", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("drawbridge.toml", []byte(tc.data))
			list := problemsOf(t, err)
			if len(list) != 1 || list[0].Line != tc.line || !strings.Contains(list[0].Msg, "is not UTF-8 text; expected a TOML text file") {
				t.Fatalf("%v", err)
			}
		})
	}
	// Garbage that is valid UTF-8 is a syntax error.
	_, err := Parse("drawbridge.toml", []byte("\x00\x01\x02 binary"))
	if list := problemsOf(t, err); len(list) != 1 || !strings.Contains(list[0].Msg, "not valid TOML") {
		t.Fatalf("%v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: %v", err)
	}
	_, err = Load(dir)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err == nil {
		// Opening a FIFO without a writer would block; O_NONBLOCK is not
		// what Load uses, so only check when a writer can be attached.
		w, err := os.OpenFile(fifo, os.O_RDWR, 0)
		if err == nil {
			defer w.Close()
			if _, err := Load(fifo); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("fifo: %v", err)
			}
		}
	}
	path := filepath.Join(dir, "drawbridge.toml")
	if err := os.WriteFile(path, []byte(edit(t, `port = 22`, `port = 70000`)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if want := path + `:17: source "db1": port: 70000 is out of range, expected 1-65535`; err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestQuoteShortens(t *testing.T) {
	text := edit(t, `"db1"`, `"`+strings.Repeat("é", 200)+`"`)
	_, err := Parse("drawbridge.toml", []byte(text))
	for _, e := range problemsOf(t, err) {
		if len(e.Msg) > 300 {
			t.Errorf("message of %d bytes: %s", len(e.Msg), e.Msg)
		}
	}
}
