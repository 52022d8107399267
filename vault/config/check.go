package config

import (
	"crypto/rsa"
	"fmt"
	"net/netip"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/ssh"
)

// check turns the decoded file into a Config, reporting every problem.
func check(p *problems, raw *fileConfig, lines keyLines, opts ParseOptions) *Config {
	c := &Config{Store: checkStore(p, raw.Store, lines, opts)}
	c.Windows = checkWindows(p, raw.Window, lines)
	c.Network = checkNetwork(p, raw.Network, lines, len(raw.Window) > 0)
	c.Sources = checkSources(p, raw.Source, lines)
	return c
}

// quote quotes a value for a message, shortened so that a pasted blob does
// not fill the screen.
func quote(s string) string {
	const max = 60
	if len(s) > max {
		cut := max
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// missing says whether an empty value was left out or written as "".
func (k keyLines) missing(path string) string {
	if k.has(path) {
		return "is empty"
	}
	return "missing"
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

func checkStore(p *problems, s string, lines keyLines, opts ParseOptions) string {
	line := lines.line("store")
	switch {
	case s == "":
		if !opts.AllowNoStore {
			p.add(line, `store: %s, expected the store's absolute path, e.g. store = "/data/store"`, lines.missing("store"))
		}
		return ""
	case hasControl(s):
		p.add(line, "store: %s contains a control character, expected an absolute path", quote(s))
	case !filepath.IsAbs(s):
		p.add(line, `store: %s is not an absolute path, expected e.g. "/data/store"`, quote(s))
	}
	return filepath.Clean(s)
}

func checkWindows(p *problems, raw []fileWindow, lines keyLines) []Window {
	if len(raw) > maxWindows {
		p.add(lines.line(fmt.Sprintf("window[%d]", maxWindows)), "window: %d windows, expected at most %d", len(raw), maxWindows)
		raw = raw[:maxWindows]
	}
	var out []Window
	for i, w := range raw {
		hdr := fmt.Sprintf("window[%d]", i)
		at := func(key string) int { return lines.line(hdr+"."+key, hdr) }
		win := Window{Line: lines.line(hdr)}

		if w.Days == "" {
			p.add(at("days"), `window: days: %s, expected "daily", "weekdays", "weekends" or days like "mon,wed,fri"`, lines.missing(hdr+".days"))
		} else if days, msg := parseDays(w.Days); msg != "" {
			p.add(at("days"), `window: days: %s, expected "daily", "weekdays", "weekends" or days like "mon,wed,fri"`, msg)
		} else {
			win.Days = days
		}

		if w.Start == "" {
			p.add(at("start"), `window: start: %s, expected HH:MM (RTC local time), e.g. "02:00"`, lines.missing(hdr+".start"))
		} else if start, ok := parseClock(w.Start); !ok {
			p.add(at("start"), "window: start: %s is not a time, expected HH:MM from 00:00 to 23:59", quote(w.Start))
		} else {
			win.Start = start
		}

		if w.Duration == "" {
			p.add(at("duration"), `window: duration: %s, expected a duration from 1m to 24h, e.g. "1h" or "90m"`, lines.missing(hdr+".duration"))
		} else if d, err := time.ParseDuration(w.Duration); err != nil {
			p.add(at("duration"), `window: duration: %s is not a duration, expected e.g. "1h", "90m" or "1h30m"`, quote(w.Duration))
		} else if d < time.Minute || d > 24*time.Hour {
			p.add(at("duration"), "window: duration: %s is out of range, expected 1m to 24h", quote(w.Duration))
		} else {
			win.Duration = d
		}
		out = append(out, win)
	}
	return out
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
	"sunday": time.Sunday, "monday": time.Monday, "tuesday": time.Tuesday, "wednesday": time.Wednesday,
	"thursday": time.Thursday, "friday": time.Friday, "saturday": time.Saturday,
}

// parseDays reads "daily", "weekdays", "weekends" or a comma-separated list
// of day names (case does not matter). It returns the days in ascending
// order, or a message saying what is wrong.
func parseDays(s string) ([]time.Weekday, string) {
	var set [7]bool
	switch t := strings.ToLower(strings.TrimSpace(s)); t {
	case "daily":
		set = [7]bool{true, true, true, true, true, true, true}
	case "weekdays":
		set = [7]bool{false, true, true, true, true, true, false}
	case "weekends":
		set = [7]bool{true, false, false, false, false, false, true}
	default:
		for _, part := range strings.Split(t, ",") {
			part = strings.TrimSpace(part)
			d, ok := dayNames[part]
			switch {
			case ok:
				set[d] = true
			case part == "":
				return nil, fmt.Sprintf("%s has an empty day between commas", quote(s))
			case part == t:
				return nil, fmt.Sprintf("%s is not a day", quote(s))
			default:
				return nil, fmt.Sprintf("%s in %s is not a day", quote(part), quote(s))
			}
		}
	}
	var days []time.Weekday
	for d, on := range set {
		if on {
			days = append(days, time.Weekday(d))
		}
	}
	return days, ""
}

// parseClock reads HH:MM (or H:MM) from 00:00 to 23:59 as an offset from
// midnight.
func parseClock(s string) (time.Duration, bool) {
	hs, ms, ok := strings.Cut(s, ":")
	if !ok || len(hs) < 1 || len(hs) > 2 || len(ms) != 2 || !allDigits(hs) || !allDigits(ms) {
		return 0, false
	}
	h, _ := strconv.Atoi(hs)
	m, _ := strconv.Atoi(ms)
	if h > 23 || m > 59 {
		return 0, false
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func checkNetwork(p *problems, n fileNetwork, lines keyLines, needed bool) Network {
	out := Network{Interface: n.Interface, Address: n.Address, Gateway: n.Gateway}
	at := func(key string) int { return lines.line("network."+key, "network") }

	switch {
	case n.Interface == "":
		if needed {
			p.add(at("interface"), `network: interface: %s, expected the interface that windows bring up, e.g. "eth0"`, lines.missing("network.interface"))
		}
	case !validInterface(n.Interface):
		p.add(at("interface"), `network: interface: %s is not an interface name, expected 1-15 characters without "/", ":" or spaces`, quote(n.Interface))
	}

	switch {
	case n.Address == "":
		if needed {
			p.add(at("address"), `network: address: %s, expected "dhcp" or an address with prefix length, e.g. "198.18.0.2/24"`, lines.missing("network.address"))
		}
	case strings.EqualFold(n.Address, "dhcp"):
		out.DHCP = true
	default:
		pfx, err := netip.ParsePrefix(n.Address)
		switch {
		case err != nil:
			p.add(at("address"), `network: address: %s is not "dhcp" or an address with prefix length, expected e.g. "198.18.0.2/24" or "2001:db8::2/64"`, quote(n.Address))
		case !hostAddr(pfx.Addr()):
			p.add(at("address"), "network: address: %s is not a unicast address, expected the vault's own address", quote(n.Address))
		default:
			out.Prefix = pfx
		}
	}

	if n.Gateway != "" {
		gw, err := netip.ParseAddr(n.Gateway)
		switch {
		case err != nil || !hostAddr(gw):
			p.add(at("gateway"), `network: gateway: %s is not an IP address, expected e.g. "198.18.0.1"`, quote(n.Gateway))
		case out.DHCP:
			p.add(at("gateway"), `network: gateway: not allowed with address = "dhcp", which supplies the gateway`)
		case n.Address == "":
			p.add(at("gateway"), "network: gateway: set without an address, expected address too")
		case out.Prefix.IsValid() && gw.Unmap().Is4() != out.Prefix.Addr().Unmap().Is4():
			p.add(at("gateway"), "network: gateway: %s is %s but address %s is %s, expected both of one family",
				quote(n.Gateway), family(gw), quote(n.Address), family(out.Prefix.Addr()))
		default:
			out.GatewayAddr = gw
		}
	}
	return out
}

func family(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func hostAddr(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast()
}

// validInterface follows the kernel's rule for interface names.
func validInterface(s string) bool {
	if len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func checkSources(p *problems, raw []fileSource, lines keyLines) []Source {
	if len(raw) > maxSources {
		p.add(lines.line(fmt.Sprintf("source[%d]", maxSources)), "source: %d sources, expected at most %d", len(raw), maxSources)
		raw = raw[:maxSources]
	}
	var out []Source
	names := map[string]int{} // name → line of its name key
	for i := range raw {
		out = append(out, checkSource(p, &raw[i], i, lines, names))
	}
	return out
}

func checkSource(p *problems, s *fileSource, i int, lines keyLines, names map[string]int) Source {
	hdr := fmt.Sprintf("source[%d]", i)
	label := fmt.Sprintf("source #%d", i+1)
	if validName(s.Name) {
		label = fmt.Sprintf("source %q", s.Name)
	}
	add := func(key string, format string, args ...any) {
		p.add(lines.line(hdr+"."+key, hdr), "%s: %s: %s", label, key, fmt.Sprintf(format, args...))
	}
	missing := func(key string) string { return lines.missing(hdr + "." + key) }

	out := Source{
		Name:    s.Name,
		Kind:    s.Kind,
		Host:    s.Host,
		Port:    DefaultPort,
		User:    s.User,
		Timeout: DefaultTimeout,
		Line:    lines.line(hdr),
	}

	switch {
	case s.Name == "":
		add("name", `%s, expected a unique name of 1-64 characters from A-Z a-z 0-9 . _ -`, missing("name"))
	case !validName(s.Name):
		add("name", `%s is not a valid name, expected 1-64 characters from A-Z a-z 0-9 . _ - not starting with "."`, quote(s.Name))
	default:
		line := lines.line(hdr+".name", hdr)
		if first, dup := names[s.Name]; dup {
			add("name", "%s is already the name of the source on line %d, expected a unique name", quote(s.Name), first)
		} else {
			names[s.Name] = line
		}
	}

	kindOK := true
	switch s.Kind {
	case KindAgent, KindSFTP, KindExec:
	case "":
		kindOK = false
		add("kind", "%s, expected agent, sftp or exec", missing("kind"))
	default:
		kindOK = false
		add("kind", "%s is not a kind, expected agent, sftp or exec", quote(s.Kind))
	}

	switch {
	case s.Host == "":
		add("host", `%s, expected the source's IP address or host name, e.g. "198.18.0.1"`, missing("host"))
	case !validHost(s.Host):
		add("host", "%s is not an IP address or host name", quote(s.Host))
	}

	if s.Port != nil {
		if *s.Port < 1 || *s.Port > 65535 {
			add("port", "%d is out of range, expected 1-65535", *s.Port)
		} else {
			out.Port = int(*s.Port)
		}
	}

	switch {
	case s.User == "":
		add("user", "%s, expected the SSH user on the source", missing("user"))
	case len(s.User) > 255 || hasControl(s.User) || strings.ContainsFunc(s.User, unicode.IsSpace):
		add("user", "%s is not a user name, expected at most 255 characters without spaces", quote(s.User))
	}

	if s.HostKey == "" {
		add("host_key", `%s, expected the source's SSH host key, e.g. "ssh-ed25519 AAAA..." from its /etc/ssh/ssh_host_ed25519_key.pub`, missing("host_key"))
	} else if pub, norm, msg := parseHostKey(s.HostKey); msg != "" {
		add("host_key", "%s", msg)
	} else {
		out.HostKeyParsed, out.HostKey = pub, norm
	}

	if kindOK && s.Kind == KindExec {
		if len(s.Paths) > 0 {
			add("paths", "not allowed for an exec source, which keeps its command's output; expected no paths")
		}
	} else {
		out.Paths = checkPaths(p, s, hdr, label, lines, kindOK)
	}

	if s.Command != "" {
		switch {
		case kindOK && s.Kind != KindExec:
			add("command", "not allowed for an %s source, expected it only with kind = \"exec\"", s.Kind)
		case len(s.Command) > maxCommand:
			add("command", "%d bytes is too long, expected at most %d", len(s.Command), maxCommand)
		case strings.ContainsFunc(s.Command, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }):
			add("command", "%s contains a newline, NUL or other control character, expected one line", quote(s.Command))
		default:
			out.Command = s.Command
		}
	}

	if s.Priority != nil {
		const lim = 1_000_000
		if *s.Priority < -lim || *s.Priority > lim {
			add("priority", "%d is out of range, expected -%d to %d (lower runs first)", *s.Priority, lim, lim)
		} else {
			out.Priority = int(*s.Priority)
		}
	}

	if s.Timeout != "" || lines.has(hdr+".timeout") {
		d, err := time.ParseDuration(s.Timeout)
		switch {
		case s.Timeout == "":
			add("timeout", `is empty, expected a duration from 5s to 24h, e.g. "5m", or no timeout key for the default`)
		case err != nil:
			add("timeout", `%s is not a duration, expected e.g. "30s", "5m" or "1h"`, quote(s.Timeout))
		case d < 5*time.Second || d > 24*time.Hour:
			add("timeout", "%s is out of range, expected 5s to 24h", quote(s.Timeout))
		default:
			out.Timeout = d
		}
	}
	return out
}

// checkPaths checks the paths of an agent or sftp source (or of a source
// whose kind is wrong, so that its paths are still checked).
func checkPaths(p *problems, s *fileSource, hdr, label string, lines keyLines, kindOK bool) []string {
	at := func(j int) int { return lines.line(fmt.Sprintf("%s.paths[%d]", hdr, j), hdr+".paths", hdr) }
	if len(s.Paths) == 0 {
		if kindOK {
			p.add(at(0), `%s: paths: %s, expected at least one absolute path to pull, e.g. ["/etc", "/srv"]`, label, lines.missing(hdr+".paths"))
		}
		return nil
	}
	if len(s.Paths) > maxPaths {
		p.add(at(maxPaths), "%s: paths: %d paths, expected at most %d", label, len(s.Paths), maxPaths)
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for j, v := range s.Paths {
		msg := ""
		switch {
		case v == "":
			msg = `"" is empty, expected an absolute path`
		case len(v) > 4096:
			msg = fmt.Sprintf("%s is too long, expected at most 4096 bytes", quote(v))
		case hasControl(v):
			msg = fmt.Sprintf("%s contains a control character, expected a path", quote(v))
		case !path.IsAbs(v):
			msg = fmt.Sprintf(`%s is not an absolute path, expected it to start with "/"`, quote(v))
		case hasDotDot(v):
			msg = fmt.Sprintf(`%s contains "..", expected a path without it`, quote(v))
		case seen[path.Clean(v)]:
			msg = fmt.Sprintf("%s is listed twice, expected each path once", quote(v))
		}
		if msg != "" {
			p.add(at(j), "%s: paths: %s", label, msg)
			continue
		}
		c := path.Clean(v)
		seen[c] = true
		out = append(out, c)
	}
	return out
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func validName(s string) bool {
	if len(s) < 1 || len(s) > 64 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validHost accepts an IP address or a name in DNS syntax (letters, digits
// and hyphens in dot-separated labels).
func validHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return hostAddr(a)
	}
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	// An all-digit last label is a mistyped IPv4 address, not a name.
	return !allDigits(labels[len(labels)-1])
}

const maxHostKey = 16 << 10

// parseHostKey reads a pinned host key: one public key in authorized_keys
// format, with an optional comment and nothing else. It returns the key and
// its normalized text, or a message saying what is wrong.
func parseHostKey(s string) (ssh.PublicKey, string, string) {
	if len(s) > maxHostKey {
		return nil, "", fmt.Sprintf("%d bytes is too long for a public key", len(s))
	}
	pub, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, "", fmt.Sprintf(`%s is not an SSH public key, expected e.g. "ssh-ed25519 AAAA..." as in the source's /etc/ssh/ssh_host_ed25519_key.pub`, quote(s))
	}
	if len(options) > 0 {
		return nil, "", fmt.Sprintf("has %s before the key, expected only the key and an optional comment (from a known_hosts line, leave out the host names)", quote(strings.Join(options, ",")))
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, "", "holds more than one key, expected exactly one"
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return nil, "", fmt.Sprintf("is a certificate (%s), expected the host's plain public key", pub.Type())
	}
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
	case ssh.KeyAlgoRSA:
		bits := 0
		if ck, ok := pub.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok {
				bits = rk.N.BitLen()
			}
		}
		if bits < 3072 {
			return nil, "", fmt.Sprintf("is a %d-bit RSA key, expected at least 3072 bits (or an ssh-ed25519 key)", bits)
		}
	default:
		return nil, "", fmt.Sprintf("key type %s is not allowed, expected ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least 3072 bits", quote(pub.Type()))
	}
	return pub, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), ""
}
