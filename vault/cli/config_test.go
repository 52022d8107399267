package cli

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"drawbridge/hw/usb/sticktest"
	"drawbridge/hw/usb/usbtest"
	"drawbridge/vault/config/configtest"
	"drawbridge/vault/config/importer"
	"drawbridge/vault/console/termtest"
	"drawbridge/vault/fixture"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"

	"golang.org/x/sys/unix"
)

type configEnv struct {
	dir, st, current string
	key              string
}

func newConfigEnv(t *testing.T) *configEnv {
	t.Helper()
	e := &configEnv{dir: t.TempDir()}
	e.st = filepath.Join(e.dir, "store")
	e.current = filepath.Join(e.dir, "data", "drawbridge.toml")
	os.Mkdir(filepath.Dir(e.current), 0o755)
	storetest.New(t, e.st, "restore", store.InitOptions{}).Close()
	e.key = configtest.HostKey(t)
	return e
}

func (e *configEnv) config(host string) string { return configtest.Text(e.st, host, e.key) }

func (e *configEnv) file(name, content string) string {
	p := filepath.Join(e.dir, name)
	os.WriteFile(p, []byte(content), 0o644)
	return p
}

func (e *configEnv) main(stdin *os.File, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := Env{Stdin: stdin, Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code := Main(context.Background(), append(args, "--store", e.st, "--config", e.current), env)
	return code, out.String(), errb.String()
}

func (e *configEnv) journal(t *testing.T) string {
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"journal", "--json", "--store", e.st}, Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}); code != 0 {
		t.Fatalf("journal: %d %s", code, errb.String())
	}
	return out.String()
}

func devNull(t *testing.T) *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestConfigImportFlags(t *testing.T) {
	e := newConfigEnv(t)
	null := devNull(t)
	one := e.file("one.toml", e.config("198.18.0.1"))
	two := e.file("two.toml", e.config("198.18.0.5"))
	adminFile := e.file("admin", "admin passphrase\n")
	wrongFile := e.file("wrong", "not it\n")

	// diff changes nothing.
	code, out, errs := e.main(null, "config", "diff", one)
	if code != 0 || !strings.Contains(out, "no configuration") || !strings.Contains(out, "+ source db1: kind agent, host 198.18.0.1") {
		t.Fatalf("config diff: %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(e.current); err == nil {
		t.Fatal("config diff wrote the configuration")
	}
	// Without a terminal, --yes and the passphrase file are required.
	if code, _, errs := e.main(null, "config", "import", one); code != 1 || !strings.Contains(errs, "--admin-passphrase-file") {
		t.Fatalf("import without a terminal: %d %s", code, errs)
	}
	// First import: sets the admin passphrase from the file.
	code, out, errs = e.main(null, "config", "import", one, "--yes", "--admin-passphrase-file", adminFile)
	if code != 0 || !strings.Contains(out, "Configuration installed") {
		t.Fatalf("first import: %d\n%s%s", code, out, errs)
	}
	if b, _ := os.ReadFile(e.current); string(b) != e.config("198.18.0.1") {
		t.Fatal("not installed")
	}
	// Wrong admin passphrase: refused, journaled, nothing changed.
	code, out, errs = e.main(null, "config", "import", two, "--yes", "--admin-passphrase-file", wrongFile)
	if code != 1 || !strings.Contains(errs, "wrong admin passphrase") || !strings.Contains(out, "source db1: host 198.18.0.1 → 198.18.0.5") {
		t.Fatalf("import with a wrong admin passphrase: %d\n%s%s", code, out, errs)
	}
	if b, _ := os.ReadFile(e.current); string(b) != e.config("198.18.0.1") {
		t.Fatal("a refused import changed the configuration")
	}
	// The right one (after the refusal's one-second delay).
	start := time.Now()
	code, out, errs = e.main(null, "config", "import", two, "--yes", "--admin-passphrase-file", adminFile)
	if code != 0 {
		t.Fatalf("second import: %d\n%s%s", code, out, errs)
	}
	if time.Since(start) < time.Second {
		t.Error("no delay after a refusal")
	}
	if b, _ := os.ReadFile(e.current + ".previous"); string(b) != e.config("198.18.0.1") {
		t.Error("the previous configuration was not kept")
	}
	j := e.journal(t)
	for _, typ := range []string{"admin-passphrase-set", "admin-refused", "config-imported"} {
		if !strings.Contains(j, `"type":"`+typ+`"`) {
			t.Errorf("no %s record in the journal", typ)
		}
	}
	if !strings.Contains(j, "host 198.18.0.1 → 198.18.0.5") {
		t.Error("the journal does not hold the diff")
	}
	// Same again: nothing to import.
	if code, out, _ := e.main(null, "config", "import", two, "--yes", "--admin-passphrase-file", adminFile); code != 0 || !strings.Contains(out, "Nothing to import") {
		t.Errorf("import of the installed file: %d %s", code, out)
	}

	// Hostile files: refused with a message, nothing changed.
	link := filepath.Join(e.dir, "link.toml")
	os.Symlink(one, link)
	big := filepath.Join(e.dir, "big.toml")
	f, _ := os.Create(big)
	f.Truncate(1 << 40)
	f.Close()
	other := strings.Replace(e.config("198.18.0.9"), e.st, "/elsewhere/store", 1)
	for _, c := range []struct{ file, want string }{
		{link, "symbolic link"},
		{big, "larger than 64 KiB"},
		{e.file("unknown.toml", e.config("198.18.0.9")+"x = 1\n"), `unknown key "x"`},
		{e.file("other.toml", other), "names the store"},
	} {
		code, out, errs := e.main(null, "config", "import", c.file, "--yes", "--admin-passphrase-file", adminFile)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("import of %s: exit %d, want 1 with %q\n%s%s", filepath.Base(c.file), code, c.want, out, errs)
		}
		if b, _ := os.ReadFile(e.current); string(b) != e.config("198.18.0.5") {
			t.Fatalf("import of %s changed the configuration", filepath.Base(c.file))
		}
	}
	// Usage.
	for _, args := range [][]string{{"config"}, {"config", "import"}, {"config", "import", one, "--usb"}, {"config", "diff"}, {"config", "frob", one}} {
		if code, _, _ := e.main(null, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	var o, eb bytes.Buffer
	if code := Main(context.Background(), []string{"config", "diff", one}, Env{Stdout: &o, Stderr: &eb, Getenv: func(string) string { return "" }}); code != 2 {
		t.Errorf("config diff without --config: exit %d", code)
	}
	if code := Main(context.Background(), []string{"config", "import", "--help"}, Env{Stdout: &o, Stderr: &eb, Getenv: func(string) string { return "" }}); code != 0 {
		t.Errorf("config import --help: exit %d", code)
	}
}

// openPTY returns a pseudo-terminal's controlling side and its terminal.
func openPTY(t *testing.T) (ctl, tty *os.File) {
	t.Helper()
	ctl, name := termtest.PTY(t)
	tty, err := os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return ctl, tty
}

// TestConfigImportTerminal types at a terminal as PID 1's first boot would
// have a person do: yes, then a new admin passphrase twice.
func TestConfigImportTerminal(t *testing.T) {
	e := newConfigEnv(t)
	ctl, tty := openPTY(t)
	one := e.file("one.toml", e.config("198.18.0.1"))
	// The prompts go to stderr (a buffer here); input is typed on the pty.
	go func() {
		w := bufio.NewWriter(ctl)
		for _, line := range []string{"yes", "first admin", "first admin"} {
			time.Sleep(300 * time.Millisecond)
			w.WriteString(line + "\n")
			w.Flush()
		}
	}()
	go func() { // drain the echo
		b := make([]byte, 1024)
		for {
			if _, err := ctl.Read(b); err != nil {
				return
			}
		}
	}()
	code, out, errs := e.main(tty, "config", "import", one)
	if code != 0 || !strings.Contains(errs, "Type yes") || !strings.Contains(errs, "Repeat it") {
		t.Fatalf("import at a terminal: %d\n%s%s", code, out, errs)
	}
	if b, _ := os.ReadFile(e.current); string(b) != e.config("198.18.0.1") {
		t.Fatal("not installed")
	}
	// Not confirmed: nothing changes.
	two := e.file("two.toml", e.config("198.18.0.5"))
	go func() {
		time.Sleep(300 * time.Millisecond)
		ctl.Write([]byte("no\n"))
	}()
	code, _, errs = e.main(tty, "config", "import", two)
	if code != 1 || !strings.Contains(errs, "not confirmed") {
		t.Fatalf("declined import: %d %s", code, errs)
	}
	if b, _ := os.ReadFile(e.current); string(b) != e.config("198.18.0.1") {
		t.Fatal("a declined import changed the configuration")
	}
}

// stick makes an ext4 stick image holding files.
func stick(t *testing.T, files map[string]string) string {
	t.Helper()
	return usbtest.Filled(t, 32<<20, func(dir string) {
		for n, c := range files {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}, "mke2fs", "-q", "-F", "-t", "ext4")
}

func TestConfigImportUSB(t *testing.T) {
	if os.Geteuid() != 0 {
		fixture.Need(t, "needs root for loop devices")
	}
	for _, tool := range []string{"mke2fs", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			fixture.Need(t, "needs "+tool+": apt-get install e2fsprogs mount")
		}
	}
	e := newConfigEnv(t)
	null := devNull(t)
	adminFile := e.file("admin", "admin passphrase\n")
	sticks := sticktest.New()
	old := usbDrives
	usbDrives = func() importer.Drives { return sticks }
	t.Cleanup(func() { usbDrives = old })

	// No drive yet: it waits, saying so, until one is plugged in; the
	// first has no configuration, the second one that is refused, the
	// third the good one.
	imgs := []string{
		stick(t, map[string]string{"notes.txt": "x"}),
		stick(t, map[string]string{"drawbridge.toml": e.config("198.18.0.1") + "hook = \"rm -rf /\"\n"}),
		stick(t, map[string]string{"drawbridge.toml": e.config("198.18.0.1")}),
	}
	go func() {
		for _, img := range imgs {
			time.Sleep(1200 * time.Millisecond)
			sticks.Plug(t, img)
		}
	}()
	code, out, errs := e.main(null, "config", "import", "--usb", "--yes", "--admin-passphrase-file", adminFile)
	if code != 0 {
		t.Fatalf("config import --usb: %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{"plug one in", "no drawbridge.toml at its top", `unknown key "hook"`, "Found drawbridge.toml on"} {
		if !strings.Contains(errs, want) {
			t.Errorf("the messages do not say %q:\n%s", want, errs)
		}
	}
	if b, _ := os.ReadFile(e.current); string(b) != e.config("198.18.0.1") {
		t.Fatal("not installed")
	}
	if j := e.journal(t); !strings.Contains(j, "configuration imported from USB drive") {
		t.Errorf("journal:\n%s", j)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), "drawbridge-usb-") {
		t.Error("a stick was left mounted")
	}
}
