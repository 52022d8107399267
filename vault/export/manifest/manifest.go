// Package manifest is the plain-file export's MANIFEST format
// (docs/export-format.md) and its offline check. It uses only the standard
// library and vault/seal, so that the verifier built from it is small, static
// and runs on Linux, Windows and macOS.
//
// A MANIFEST is text: a header of "key value" lines, a blank line, one line
// per entry, and a last line "end COUNT". An export without the end line,
// or without MANIFEST at all, is incomplete: the exporter writes MANIFEST
// and MANIFEST.sig only after every file is on the drive.
package manifest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Names in an export directory.
const (
	Dir        = "drawbridge-export" // under the export target
	FilesDir   = "files"
	Name       = "MANIFEST"
	SigName    = "MANIFEST.sig"
	VerifyDir  = "verify"
	ReadmeName = "README.txt"
)

// Magic is the MANIFEST's first line; Domain is the signature's domain.
const (
	Magic  = "drawbridge export manifest v1"
	Domain = "drawbridge export manifest v1"
)

// Limits on what is read from a drive.
const (
	MaxManifest = 1 << 30
	MaxSig      = 1 << 10
	MaxEntries  = 1 << 26
)

// Entry types.
const (
	TypeFile     = "file"
	TypeDir      = "dir"
	TypeSymlink  = "symlink"
	TypeHardlink = "hardlink" // written as a copy of the file it links to
	TypeFIFO     = "fifo"
	TypeCharDev  = "chardev"
	TypeBlockDev = "blockdev"
	TypeSocket   = "socket"
)

var (
	// ErrIncomplete: the MANIFEST ends before its end line.
	ErrIncomplete = errors.New("incomplete export")
	// ErrFormat: the MANIFEST is not in this format.
	ErrFormat = errors.New("manifest damaged")
)

// Header describes the export.
type Header struct {
	VaultID      string
	Identity     string // fingerprint of PublicKey (seal.Fingerprint)
	PublicKey    []byte // Ed25519
	Snapshot     string
	Source       string
	Path         string // the part of the snapshot exported, "/" for all
	SnapshotTime time.Time
	ExportTime   time.Time
	Entries      int64
	Bytes        int64 // content bytes of the exported files
}

// Entry is one snapshot entry.
type Entry struct {
	Type      string
	Mode      uint32 // permission bits, setuid/setgid/sticky included
	Size      int64  // -1 unless a file or hardlink
	SHA256    string // hex; "" unless an exported file or hardlink
	MtimeSec  int64
	MtimeNsec uint32
	Path      string // slash path under files/, raw bytes
	Target    string // symlink target, or the snapshot path a hardlink names
	Dev       string // "major:minor" of a device
	// NotExported says why the entry is not on the drive ("" when it is).
	NotExported string
}

// OnDisk reports whether the entry is expected under files/.
func (e *Entry) OnDisk() bool {
	if e.NotExported != "" {
		return false
	}
	switch e.Type {
	case TypeFile, TypeHardlink, TypeDir, TypeSymlink:
		return true
	}
	return false
}

// Manifest is a parsed MANIFEST.
type Manifest struct {
	Header
	Entries []Entry
}

// Marshal writes the MANIFEST bytes.
func (m *Manifest) Marshal() []byte {
	var b bytes.Buffer
	h := &m.Header
	fmt.Fprintln(&b, Magic)
	fmt.Fprintf(&b, "vault-id %s\n", Escape(h.VaultID))
	fmt.Fprintf(&b, "identity-fingerprint %s\n", Escape(h.Identity))
	fmt.Fprintf(&b, "identity-public-key %s\n", base64.StdEncoding.EncodeToString(h.PublicKey))
	fmt.Fprintf(&b, "snapshot %s\n", Escape(h.Snapshot))
	fmt.Fprintf(&b, "source %s\n", Escape(h.Source))
	fmt.Fprintf(&b, "snapshot-path %s\n", Escape(h.Path))
	fmt.Fprintf(&b, "snapshot-time %s\n", h.SnapshotTime.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(&b, "export-time %s\n", h.ExportTime.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(&b, "entries %d\n", len(m.Entries))
	fmt.Fprintf(&b, "bytes %d\n", h.Bytes)
	b.WriteString("\n")
	for i := range m.Entries {
		e := &m.Entries[i]
		size, sum := "-", "-"
		if e.Size >= 0 {
			size = strconv.FormatInt(e.Size, 10)
		}
		if e.SHA256 != "" {
			sum = e.SHA256
		}
		fmt.Fprintf(&b, "%s %04o %s %s %d.%09d %s", e.Type, e.Mode, size, sum, e.MtimeSec, e.MtimeNsec, Escape(e.Path))
		if e.Target != "" {
			fmt.Fprintf(&b, " target=%s", Escape(e.Target))
		}
		if e.Dev != "" {
			fmt.Fprintf(&b, " dev=%s", Escape(e.Dev))
		}
		if e.NotExported != "" {
			fmt.Fprintf(&b, " not-exported=%s", Escape(e.NotExported))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "end %d\n", len(m.Entries))
	return b.Bytes()
}

// Parse reads MANIFEST bytes. A MANIFEST cut short gives ErrIncomplete;
// anything else malformed gives ErrFormat.
func Parse(b []byte) (*Manifest, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: MANIFEST is empty", ErrIncomplete)
	}
	text := string(b)
	if !strings.HasSuffix(text, "\n") {
		return nil, fmt.Errorf("%w: MANIFEST is cut short", ErrIncomplete)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if lines[0] != Magic {
		return nil, fmt.Errorf("%w: first line is not %q", ErrFormat, Magic)
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "end ") {
		return nil, fmt.Errorf("%w: MANIFEST has no end line", ErrIncomplete)
	}
	m := &Manifest{}
	i := 1
	seen := map[string]bool{}
	for ; i < len(lines) && lines[i] != ""; i++ {
		k, v, ok := strings.Cut(lines[i], " ")
		if !ok || seen[k] {
			return nil, fmt.Errorf("%w: header line %d", ErrFormat, i+1)
		}
		seen[k] = true
		var err error
		switch k {
		case "vault-id":
			m.VaultID, err = Unescape(v)
		case "identity-fingerprint":
			m.Identity, err = Unescape(v)
		case "identity-public-key":
			m.PublicKey, err = base64.StdEncoding.DecodeString(v)
		case "snapshot":
			m.Snapshot, err = Unescape(v)
		case "source":
			m.Source, err = Unescape(v)
		case "snapshot-path":
			m.Path, err = Unescape(v)
		case "snapshot-time":
			m.SnapshotTime, err = time.Parse(time.RFC3339Nano, v)
		case "export-time":
			m.ExportTime, err = time.Parse(time.RFC3339Nano, v)
		case "entries":
			m.Header.Entries, err = strconv.ParseInt(v, 10, 64)
		case "bytes":
			m.Bytes, err = strconv.ParseInt(v, 10, 64)
		default:
			// Later versions may add header lines; they are signed too.
		}
		if err != nil {
			return nil, fmt.Errorf("%w: header %s: %v", ErrFormat, k, err)
		}
	}
	for _, k := range []string{"identity-public-key", "entries", "bytes"} {
		if !seen[k] {
			return nil, fmt.Errorf("%w: no %s in the header", ErrFormat, k)
		}
	}
	if m.Header.Entries < 0 || m.Header.Entries > MaxEntries {
		return nil, fmt.Errorf("%w: %d entries", ErrFormat, m.Header.Entries)
	}
	body := lines[min(i+1, len(lines)-1) : len(lines)-1]
	if int64(len(body)) != m.Header.Entries {
		return nil, fmt.Errorf("%w: the header says %d entries, the MANIFEST has %d", ErrFormat, m.Header.Entries, len(body))
	}
	if last != fmt.Sprintf("end %d", len(body)) {
		return nil, fmt.Errorf("%w: end line %q does not match %d entries", ErrFormat, last, len(body))
	}
	m.Entries = make([]Entry, 0, len(body))
	for j, line := range body {
		e, err := parseEntry(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrFormat, i+2+j, err)
		}
		m.Entries = append(m.Entries, e)
	}
	return m, nil
}

func parseEntry(line string) (Entry, error) {
	f := strings.Split(line, " ")
	if len(f) < 6 {
		return Entry{}, errors.New("fewer than 6 fields")
	}
	e := Entry{Type: f[0], Size: -1}
	switch e.Type {
	case TypeFile, TypeDir, TypeSymlink, TypeHardlink, TypeFIFO, TypeCharDev, TypeBlockDev, TypeSocket:
	default:
		return e, fmt.Errorf("unknown type %q", e.Type)
	}
	mode, err := strconv.ParseUint(f[1], 8, 32)
	if err != nil || mode > 0o7777 {
		return e, fmt.Errorf("mode %q", f[1])
	}
	e.Mode = uint32(mode)
	if f[2] != "-" {
		if e.Size, err = strconv.ParseInt(f[2], 10, 64); err != nil || e.Size < 0 {
			return e, fmt.Errorf("size %q", f[2])
		}
	}
	if f[3] != "-" {
		if len(f[3]) != 64 || strings.Trim(f[3], "0123456789abcdef") != "" {
			return e, fmt.Errorf("sha256 %q", f[3])
		}
		e.SHA256 = f[3]
	}
	sec, nsec, ok := strings.Cut(f[4], ".")
	if e.MtimeSec, err = strconv.ParseInt(sec, 10, 64); err != nil || !ok || len(nsec) != 9 {
		return e, fmt.Errorf("mtime %q", f[4])
	}
	ns, err := strconv.ParseUint(nsec, 10, 32)
	if err != nil || ns >= 1e9 {
		return e, fmt.Errorf("mtime %q", f[4])
	}
	e.MtimeNsec = uint32(ns)
	if e.Path, err = Unescape(f[5]); err != nil || !validPath(e.Path) {
		return e, fmt.Errorf("path %q", f[5])
	}
	for _, x := range f[6:] {
		k, v, _ := strings.Cut(x, "=")
		s, err := Unescape(v)
		if err != nil {
			return e, fmt.Errorf("%s: %v", k, err)
		}
		switch k {
		case "target":
			e.Target = s
		case "dev":
			e.Dev = s
		case "not-exported":
			e.NotExported = s
		default:
			return e, fmt.Errorf("unknown field %q", k)
		}
	}
	if (e.Type == TypeFile || e.Type == TypeHardlink) && e.NotExported == "" && (e.Size < 0 || e.SHA256 == "") {
		return e, errors.New("an exported file without size or sha256")
	}
	return e, nil
}

// validPath: a relative slash path without empty, "." or ".." components,
// so that no entry can name anything outside files/.
func validPath(p string) bool {
	if p == "" || strings.IndexByte(p, 0) >= 0 {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

// Escape percent-encodes s so that it is one field of printable text:
// '%', spaces, control characters, characters that are not graphic and
// bytes that are not UTF-8 become %XX; other UTF-8 stays readable.
func Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == '%' || r == '=' || r == utf8.RuneError && n <= 1 || !unicode.IsGraphic(r) || unicode.IsSpace(r) {
			for _, c := range []byte(s[i : i+n]) {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Unescape reverses Escape.
func Unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b = append(b, byte(v))
		i += 2
	}
	return string(b), nil
}
