package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"drawbridge/vault/config/configtest"
	"drawbridge/vault/internal/fixture"
)

// stickConfig is a valid configuration as a person writes it.
func stickConfig(t testing.TB, dbHost string) string {
	return configtest.Text("/data/store", dbHost, ed25519Key(t))
}

// stick is a real directory standing in for a mounted USB stick.
func stick(t *testing.T) (string, *os.Root) {
	dir := t.TempDir()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return dir, r
}

func TestReadFromDrive(t *testing.T) {
	dir, root := stick(t)
	text := stickConfig(t, "198.18.0.1")
	os.WriteFile(filepath.Join(dir, DriveFile), []byte(text), 0o644)
	c, data, err := ReadFromDrive(root, DriveFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != text || len(c.Sources) != 1 || c.Sources[0].Host != "198.18.0.1" {
		t.Fatalf("read %+v", c)
	}
}

func TestReadFromDriveHostile(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret.toml")
	os.WriteFile(outside, []byte(stickConfig(t, "198.18.0.9")), 0o644)
	cases := []struct {
		name string
		make func(t *testing.T, path string)
		want string
	}{
		{"symlink outside", func(t *testing.T, p string) { must(t, os.Symlink(outside, p)) }, "symbolic link"},
		{"symlink inside", func(t *testing.T, p string) {
			must(t, os.WriteFile(filepath.Join(filepath.Dir(p), "real.toml"), []byte(stickConfig(t, "198.18.0.1")), 0o644))
			must(t, os.Symlink("real.toml", p))
		}, "symbolic link"},
		{"directory", func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o755)) }, "is a directory"},
		{"fifo", func(t *testing.T, p string) { must(t, syscall.Mkfifo(p, 0o644)) }, "not a regular file"},
		{"sparse 2^40 bytes", func(t *testing.T, p string) {
			f, err := os.Create(p)
			must(t, err)
			must(t, f.Truncate(1<<40))
			f.Close()
		}, "larger than 64 KiB"},
		{"just over the cap", func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte("# "+strings.Repeat("x", DriveMaxSize)+"\n"), 0o644))
		}, "larger than 64 KiB"},
		{"unknown key", func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte(stickConfig(t, "198.18.0.1")+"run_on_import = \"sh -c evil\"\n"), 0o644))
		}, `unknown key "run_on_import"`},
		{"invalid UTF-8", func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte("store = \"/data/st\xffore\"\n"), 0o644))
		}, "not UTF-8"},
		{"fails a check", func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte(strings.Replace(stickConfig(t, "198.18.0.1"), `kind = "agent"`, `kind = "ftp"`, 1)), 0o644))
		}, "kind"},
		{"not TOML", func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte("\x7fELF\x02\x01\x01"), 0o755)) }, "drawbridge.toml"},
		{"missing", func(t *testing.T, p string) {}, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, root := stick(t)
			p := filepath.Join(dir, DriveFile)
			tc.make(t, p)
			start := time.Now()
			c, data, err := ReadFromDrive(root, DriveFile)
			if err == nil || c != nil || data != nil {
				t.Fatalf("accepted: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if tc.name != "missing" && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid", err)
			}
			if tc.name == "missing" && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("missing file: %v", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("refusing took %v", d)
			}
		})
	}
	// A name that leaves the drive is refused before anything is opened.
	_, root := stick(t)
	for _, name := range []string{"../x.toml", "/etc/drawbridge.toml", ""} {
		if _, _, err := ReadFromDrive(root, name); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	cur := filepath.Join(dir, "drawbridge.toml")
	if c, err := LoadCurrent(cur); c != nil || err != nil {
		t.Fatalf("LoadCurrent of a missing file: %v %v", c, err)
	}
	one, two := stickConfig(t, "198.18.0.1"), stickConfig(t, "198.18.0.5")
	must(t, Install(cur, []byte(one)))
	if _, err := os.Stat(cur + PreviousSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a previous copy without a previous file: %v", err)
	}
	must(t, Install(cur, []byte(two)))
	if b, _ := os.ReadFile(cur); string(b) != two {
		t.Error("not installed")
	}
	if b, _ := os.ReadFile(cur + PreviousSuffix); string(b) != one {
		t.Error("previous not kept")
	}
	c, err := LoadCurrent(cur)
	if err != nil || c.Sources[0].Host != "198.18.0.5" {
		t.Fatalf("LoadCurrent: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("leftovers in the directory: %v", ents)
	}
	if open := fixture.OpenUnder(dir); len(open) > 0 {
		t.Errorf("Install left descriptors open: %v", open)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
