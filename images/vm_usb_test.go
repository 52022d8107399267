//go:build vm

package images

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"drawbridge/vault/admin"
	"drawbridge/vault/console"
	"drawbridge/vault/journal"
	"drawbridge/vault/store"
)

// TestConsoleUSBInVM boots the appliance with a store holding one
// snapshot and two emulated USB sticks, the first FAT (as sticks come) and
// the second blank, and drives the full-screen console on the serial line
// as a person at the box would: unlock with the restore passphrase (a wrong
// one first), find a file, restore it to the first stick, export the
// snapshot to it, open the settings with the admin passphrase, write the
// sources' authorized_keys lines to it and import the configuration on it,
// then format the second stick as exfat from the status screen's drive
// list, typing the confirmation the console shows, and power off. Then the
// host reads the sticks and the data disk: the restored file matches the
// source, drawbridge-verify accepts the export, the key file holds what
// authorized-key prints, the imported configuration is installed, the
// second stick holds an exfat filesystem labelled DRAWBRIDGE, and the
// journal holds the format.
//
// QEMU runs in a tmux pane of the console's size, so that the test reads
// the screen as it is drawn, not the stream of cursor moves.
func TestConsoleUSBInVM(t *testing.T) {
	need(t, append(BootRequirements(false),
		Requirement{"tmux", "tmux"},
		Requirement{"mkfs.vfat", "dosfstools"},
		Requirement{"mcopy", "mtools"},
		Requirement{"mke2fs", "e2fsprogs"},
		Requirement{"debugfs", "e2fsprogs"},
		Requirement{"blkid", "util-linux"},
	))
	a := image(t, "prod", false)
	work := t.TempDir()
	bin := hostBinaries(t, work)
	verify := filepath.Join(work, "bin", "drawbridge-verify")
	build := exec.Command("go", "build", "-o", verify, "./cmd/drawbridge-verify")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build drawbridge-verify: %v\n%s", err, out)
	}

	// A store with one snapshot of a small tree, on the data disk.
	tree := filepath.Join(work, "src")
	must(t, os.MkdirAll(filepath.Join(tree, "docs"), 0o755))
	hello := "hello from the vault\n"
	writeFile(t, filepath.Join(tree, "docs", "hello.txt"), hello)
	writeFile(t, filepath.Join(tree, "docs", "notes.txt"), strings.Repeat("a note\n", 1000))
	root := filepath.Join(work, "root")
	t.Cleanup(func() { exec.Command("chattr", "-R", "-i", root).Run() })
	pass := filepath.Join(work, "pass")
	writeFile(t, pass, vmPassphrase+"\n")
	sh(t, filepath.Join(bin, "drawbridge"), "init", "--store", filepath.Join(root, "store"), "--passphrase-file", pass)
	sh(t, filepath.Join(bin, "drawbridge"), "backup", "--store", filepath.Join(root, "store"), "--source", "home", tree)
	writeFile(t, filepath.Join(root, "drawbridge.toml"), vmConfig)
	// The admin passphrase, as the first configuration import sets it.
	s, err := store.Open(filepath.Join(root, "store"), store.Options{JournalOnly: true})
	must(t, err)
	must(t, admin.ForStore(s, admin.Options{}).Set(context.Background(), nil, []byte(e2eAdmin)))
	s.Close()
	keyLines := sh(t, filepath.Join(bin, "drawbridge"), "authorized-key", "--config", filepath.Join(root, "drawbridge.toml"), "--store", filepath.Join(root, "store"))
	data := blankDisk(t, 256<<20)
	sh(t, "mke2fs", "-q", "-F", "-t", "ext4", "-L", "DRAWBRIDGE", "-d", root, data)

	stick := filepath.Join(work, "stick.img")
	sh(t, "mkfs.vfat", "-C", "-n", "STICK", stick, "65536")
	// A new configuration on the stick, to import: the window moves.
	newConfig := strings.Replace(vmConfig, `start = "02:00"`, `start = "03:30"`, 1)
	writeFile(t, filepath.Join(work, "drawbridge.toml"), newConfig)
	sh(t, "mcopy", "-i", stick, filepath.Join(work, "drawbridge.toml"), "::/drawbridge.toml")
	// The second stick is blank, as a new one or one holding nothing
	// Drawbridge reads may be: the console offers only to format it, so
	// nothing above can land on it by mistake. It is larger than the
	// first, so that the size in the confirmation tells which drive the
	// console is about to erase.
	blank := filepath.Join(work, "blank.img")
	must(t, os.WriteFile(blank, nil, 0o644))
	must(t, os.Truncate(blank, 96<<20))

	// QEMU in a tmux pane of 80x24, the size the console takes on a
	// serial line that reports none.
	sock := filepath.Join(work, "tmux.sock")
	qmp := filepath.Join(work, "qmp")
	log := filepath.Join(work, "serial.log")
	cmd := fmt.Sprintf("./qemu --out %s --data %s --stick %s --stick %s --qmp %s 2>&1 | tee %s",
		filepath.Dir(a.Kernel), data, stick, blank, qmp, log)
	tt := &vmTmux{t: t, sock: sock}
	tt.run("new-session", "-d", "-s", "vm", "-x", "80", "-y", "24", cmd)
	tt.run("set-option", "-t", "vm", "status", "off")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last screen:\n%s", tt.screenQuiet())
		}
		exec.Command("tmux", "-S", sock, "kill-server").Run()
	})
	waitLog(t, log, "drawbridge: ready", readyTimeout)

	// Status → sources → snapshots of home → unlock.
	tt.waitFor(time.Minute, "Drawbridge console", "home")
	tt.keys("Enter")
	tt.waitFor(10*time.Second, "Sources")
	tt.keys("Enter")
	tt.waitFor(10*time.Second, "Snapshots of home")
	tt.keys("Enter")
	tt.waitFor(10*time.Second, "Restore passphrase")
	tt.text("not the passphrase")
	tt.keys("Enter")
	tt.waitFor(2*time.Minute, "wrong restore passphrase: refused")
	tt.text(vmPassphrase)
	tt.keys("Enter")
	tt.waitFor(2*time.Minute, "unlocked")
	comps := strings.Split(strings.TrimPrefix(tree, "/"), "/")
	for i := range comps {
		tt.waitFor(10*time.Second, comps[i]+"/")
		tt.keys("Enter")
		tt.waitFor(10*time.Second, "/"+strings.Join(comps[:i+1], "/")+" ")
	}
	tt.waitFor(10*time.Second, "docs/")
	tt.keys("Enter")
	tt.waitFor(10*time.Second, "hello.txt", "notes.txt")

	// Restore hello.txt to the first stick: on the appliance r offers the drives.
	tt.keys("r")
	tt.waitFor(30*time.Second, "Restore to a USB drive", "STICK")
	tt.toStick(2*time.Minute, "restored", "1 file identical", "pull it out now")

	// Export the snapshot, plain files, to the same stick.
	tt.backTo("Snapshots of home")
	tt.keys("e")
	tt.waitFor(10*time.Second, "p  plain files")
	tt.keys("p")
	tt.waitFor(30*time.Second, "to a USB drive", "STICK")
	tt.toStick(3*time.Minute, "exported", "pull it out now")

	// The settings, behind the admin passphrase: the keys, and each
	// source's authorized_keys line written to the stick.
	tt.home()
	tt.keys("s")
	tt.waitFor(time.Minute, "The settings need the admin passphrase")
	tt.text(e2eAdmin)
	tt.keys("Enter")
	tt.waitFor(3*time.Minute, "Settings", "ssh key   ssh-ed25519 ")
	tt.keys("a")
	tt.waitFor(30*time.Second, "Write the authorized_keys lines", "STICK")
	tt.toStick(2*time.Minute, "wrote the authorized_keys lines", "pull it out now")

	// Import the configuration on the stick: the change, y, the admin
	// passphrase.
	tt.waitFor(10*time.Second, "Settings")
	tt.keys("i")
	tt.waitFor(time.Minute, "Import a configuration from a USB drive", "drawbridge.toml, 1 sources")
	tt.keys("Enter")
	tt.waitFor(30*time.Second, "Import: what changes", "03:30")
	tt.keys("y")
	tt.waitFor(10*time.Second, "Applying the import needs the admin passphrase")
	tt.text(e2eAdmin)
	tt.keys("Enter")
	tt.waitFor(3*time.Minute, "is installed in /data/drawbridge.toml")
	tt.keys("Enter")

	// Format the blank stick: u on the status screen lists the drives, f
	// on its row asks for the filesystem, and the confirmation to type,
	// which names the drive's model and size, is read off the screen as a
	// person reads it.
	tt.home()
	tt.keys("u")
	tt.waitFor(30*time.Second, "USB drives", "(no filesystem: f formats it)", "STICK")
	tt.pick("(no filesystem")
	tt.keys("f")
	tt.waitFor(10*time.Second, "Which filesystem?", "1  exfat")
	tt.keys("1")
	tt.waitFor(10*time.Second, "Formatting ERASES EVERYTHING", "To go on, type exactly:")
	conf := regexp.MustCompile(`format (sd[a-z]+) (\S[^|]*?) (\d+\.\d [KMGTPE]iB)`).FindStringSubmatch(tt.screen())
	if conf == nil || conf[3] != "96.0 MiB" {
		t.Fatalf("the confirmation does not name the 96 MiB stick: %q\n%s", conf, tt.screen())
	}
	blankDev := conf[1]
	tt.text(conf[0])
	tt.keys("Enter")
	tt.waitFor(time.Minute, "formatted as exfat, labelled "+console.FormatLabel, "press any key")
	tt.keys("Enter")
	// The list, read again, shows the new filesystem on the drive.
	tt.waitFor(30*time.Second, fmt.Sprintf("%-10s %-6s %s", blankDev, "exfat", console.FormatLabel))

	// Power off from the console; the sticks are read on the host after.
	tt.home()
	tt.keys("p")
	tt.waitFor(10*time.Second, "o  power off")
	tt.keys("o")
	tt.waitFor(10*time.Second, "Really power off")
	tt.keys("y")
	waitLog(t, log, "drawbridge: power off", time.Minute)
	deadline := time.Now().Add(powerOffTimeout)
	for tt.alive() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}

	// The blank stick is exfat now, labelled as the console labels; the
	// first stick is read below as it was before.
	if got := sh(t, "blkid", "-p", "-o", "export", blank); !strings.Contains(got, "\nTYPE=exfat\n") || !strings.Contains(got, "\nLABEL="+console.FormatLabel+"\n") {
		t.Errorf("the formatted stick:\n%s", got)
	}

	out := filepath.Join(work, "stick")
	must(t, os.MkdirAll(out, 0o755))
	sh(t, "mcopy", "-s", "-n", "-i", stick, "::/", out)
	restored, _ := filepath.Glob(filepath.Join(out, "*", "drawbridge-restore-*", "hello.txt"))
	if len(restored) == 0 {
		restored, _ = filepath.Glob(filepath.Join(out, "drawbridge-restore-*", "hello.txt"))
	}
	if len(restored) != 1 {
		t.Fatalf("the restored file on the stick: %v\n%s", restored, sh(t, "find", out))
	}
	if got := readFile(t, restored[0]); got != hello {
		t.Errorf("restored hello.txt = %q, want %q", got, hello)
	}
	exports, _ := filepath.Glob(filepath.Join(out, "*", "drawbridge-export-*"))
	if len(exports) == 0 {
		exports, _ = filepath.Glob(filepath.Join(out, "drawbridge-export-*"))
	}
	if len(exports) != 1 {
		t.Fatalf("the export on the stick: %v\n%s", exports, sh(t, "find", out))
	}
	keys, _ := filepath.Glob(filepath.Join(out, "*", "drawbridge-authorized-keys.txt"))
	if len(keys) == 0 {
		keys, _ = filepath.Glob(filepath.Join(out, "drawbridge-authorized-keys.txt"))
	}
	if len(keys) != 1 || !strings.HasSuffix(readFile(t, keys[0]), keyLines) {
		t.Errorf("the keys on the stick %v do not end with what authorized-key prints:\n%s", keys, keyLines)
	}
	// The imported configuration is the one on the data disk, the old one
	// kept beside it.
	if got := sh(t, "debugfs", "-R", "cat /drawbridge.toml", data); got != newConfig {
		t.Errorf("the data disk's configuration after the import:\n%s", got)
	}
	if got := sh(t, "debugfs", "-R", "cat /drawbridge.toml.previous", data); got != vmConfig {
		t.Errorf("the previous configuration:\n%s", got)
	}
	// The format is journaled in the store on the data disk, copied out
	// of the filesystem image to be read.
	copied := filepath.Join(work, "copied")
	must(t, os.MkdirAll(copied, 0o755))
	t.Cleanup(func() { exec.Command("chattr", "-R", "-i", copied).Run() })
	sh(t, "debugfs", "-R", "rdump /store "+copied, data)
	s, err = store.Open(filepath.Join(copied, "store"), store.Options{JournalOnly: true})
	must(t, err)
	type formatted struct{ Drive, FSType string }
	var formats []formatted
	must(t, s.Journal().Scan(func(r journal.Record) error {
		if r.Type != console.RecordFormat {
			return nil
		}
		var f formatted
		err := json.Unmarshal(r.Data, &f)
		formats = append(formats, f)
		return err
	}))
	s.Close()
	if want := (formatted{blankDev, "exfat"}); len(formats) != 1 || formats[0] != want {
		t.Errorf("the %s records in the journal: %+v, want one %+v", console.RecordFormat, formats, want)
	}
	vout, err := exec.Command(verify, exports[0]).CombinedOutput()
	if err != nil || !regexp.MustCompile(`valid: \d+ entries, 2 files`).Match(vout) {
		t.Fatalf("drawbridge-verify on the stick's export: %v\n%s", err, vout)
	}
}

// vmTmux is a tmux server holding QEMU's serial console in one pane.
type vmTmux struct {
	t    *testing.T
	sock string
}

func (tt *vmTmux) run(args ...string) string {
	tt.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", tt.sock}, args...)...).CombinedOutput()
	if err != nil {
		tt.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (tt *vmTmux) keys(k ...string) {
	tt.t.Helper()
	tt.run(append([]string{"send-keys", "-t", "vm"}, k...)...)
}
func (tt *vmTmux) text(s string)  { tt.t.Helper(); tt.run("send-keys", "-t", "vm", "-l", s) }
func (tt *vmTmux) screen() string { tt.t.Helper(); return tt.run("capture-pane", "-p", "-t", "vm") }

func (tt *vmTmux) screenQuiet() string {
	out, _ := exec.Command("tmux", "-S", tt.sock, "capture-pane", "-p", "-t", "vm").CombinedOutput()
	return string(out)
}

func (tt *vmTmux) alive() bool {
	return exec.Command("tmux", "-S", tt.sock, "has-session", "-t", "vm").Run() == nil
}

// backTo goes back, Escape by Escape, until the screen shows s.
func (tt *vmTmux) backTo(s string) {
	tt.t.Helper()
	for range 10 {
		if strings.Contains(tt.screen(), s) {
			return
		}
		tt.keys("Escape")
		time.Sleep(300 * time.Millisecond)
	}
	tt.waitFor(10*time.Second, s)
}

// home goes back to the status screen.
func (tt *vmTmux) home() { tt.t.Helper(); tt.backTo("b browse") }

// waitFor waits until the screen shows every one of want.
func (tt *vmTmux) waitFor(timeout time.Duration, want ...string) {
	tt.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := tt.screen()
		missing := ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			tt.t.Fatalf("after %v the console does not show %q:\n%s", timeout, missing, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// toStick picks the first stick's partition, the row with its label
// STICK, in the drive list (whichever name the kernel gave the stick),
// starts the work, waits for the result to show every one of want, and
// closes it.
func (tt *vmTmux) toStick(timeout time.Duration, want ...string) {
	tt.t.Helper()
	tt.pick(" STICK ")
	tt.keys("Enter")
	tt.waitFor(timeout, want...)
	tt.keys("Enter")
}

// pick moves the selection down until the selected row ("| > ") shows
// want.
func (tt *vmTmux) pick(want string) {
	tt.t.Helper()
	for range 40 {
		for _, l := range strings.Split(tt.screen(), "\n") {
			if i := strings.Index(l, "| > "); i >= 0 && strings.Contains(l[i:], want) {
				return
			}
		}
		tt.keys("Down")
		time.Sleep(300 * time.Millisecond)
	}
	tt.t.Fatalf("no row with %q to pick:\n%s", want, tt.screen())
}
