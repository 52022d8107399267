package manifest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEscape(t *testing.T) {
	for _, s := range []string{"plain", "with space", "new\nline", "tab\there", "100%", "non-utf8-\xff\xfe", "é ü 日本", "a=b", "\x7f", "\u2028"} {
		e := Escape(s)
		if strings.ContainsAny(e, " \n\t\r") || !isPrintable(e) {
			t.Errorf("Escape(%q) = %q: not one printable field", s, e)
		}
		u, err := Unescape(e)
		if err != nil || u != s {
			t.Errorf("Unescape(Escape(%q)) = %q, %v", s, u, err)
		}
	}
	if Escape("é") != "é" {
		t.Errorf("UTF-8 is escaped: %q", Escape("é"))
	}
}

func isPrintable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func sample() *Manifest {
	return &Manifest{
		Header: Header{VaultID: "v1", Identity: "ab:cd", PublicKey: bytes.Repeat([]byte{7}, 32), Snapshot: "s1",
			Source: "db 1", Path: "/", SnapshotTime: time.Unix(1700000000, 5).UTC(), ExportTime: time.Unix(1700000100, 0).UTC(), Bytes: 3},
		Entries: []Entry{
			{Type: TypeDir, Mode: 0o755, Size: -1, Path: "d"},
			{Type: TypeFile, Mode: 0o644, Size: 3, SHA256: strings.Repeat("ab", 32), MtimeSec: -5, MtimeNsec: 1, Path: "d/a b\nc"},
			{Type: TypeSymlink, Mode: 0o777, Size: -1, Path: "d/l", Target: "../x y"},
			{Type: TypeCharDev, Mode: 0o600, Size: -1, Path: "null", Dev: "1:3"},
			{Type: TypeFile, Mode: 0o644, Size: 9, Path: "d/x:y", NotExported: "the drive's filesystem cannot hold this name"},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	m := sample()
	b := m.Marshal()
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Marshal(), b) {
		t.Fatalf("round trip differs:\n%s\n%s", b, got.Marshal())
	}
	if got.Entries[1].Path != "d/a b\nc" || got.Entries[4].NotExported == "" || got.Entries[2].Target != "../x y" {
		t.Errorf("entries: %+v", got.Entries)
	}
}

func TestParseRejects(t *testing.T) {
	b := sample().Marshal()
	s := string(b)
	for name, c := range map[string]struct {
		in   string
		want error
	}{
		"cut":         {s[:len(s)/2], ErrIncomplete},
		"no newline":  {strings.TrimSuffix(s, "\n"), ErrIncomplete},
		"empty":       {"", ErrIncomplete},
		"wrong count": {strings.Replace(s, "end 5", "end 4", 1), ErrFormat},
		"entries":     {strings.Replace(s, "entries 5", "entries 6", 1), ErrFormat},
		"dot dot":     {strings.Replace(s, " d/l ", " ../l ", 1), ErrFormat},
		"absolute":    {strings.Replace(s, " d/l ", " /l ", 1), ErrFormat},
		"bad sha":     {strings.Replace(s, strings.Repeat("ab", 32), strings.Repeat("AB", 32), 1), ErrFormat},
		"magic":       {"x" + s, ErrFormat},
	} {
		if _, err := Parse([]byte(c.in)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample().Marshal())
	f.Add([]byte(Magic + "\nentries 0\nbytes 0\nidentity-public-key \n\nend 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		again, err := Parse(m.Marshal())
		if err != nil {
			t.Fatalf("a parsed manifest does not parse again: %v", err)
		}
		if len(again.Entries) != len(m.Entries) {
			t.Fatalf("%d entries, then %d", len(m.Entries), len(again.Entries))
		}
		for _, e := range m.Entries {
			if !validPath(e.Path) {
				t.Fatalf("invalid path %q accepted", e.Path)
			}
		}
	})
}
