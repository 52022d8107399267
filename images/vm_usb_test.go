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
	"drawbridge/vault/console/termtest"
	"drawbridge/vault/fixture"
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
	bins := fixture.Build(t, "drawbridge/cmd/drawbridge", "drawbridge/cmd/drawbridge-verify")
	bin, verify := filepath.Dir(bins[0]), bins[1]

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
	qmp := filepath.Join(work, "qmp")
	log := filepath.Join(work, "serial.log")
	cmd := fmt.Sprintf("./qemu --out %s --data %s --stick %s --stick %s --qmp %s 2>&1 | tee %s",
		filepath.Dir(a.Kernel), data, stick, blank, qmp, log)
	tt := termtest.Start(t, "vm", 80, 24, cmd)
	tt.Poll, tt.Settle = 100*time.Millisecond, 300*time.Millisecond // a serial line, emulated
	waitLog(t, log, "drawbridge: ready", readyTimeout)

	// Status → sources → snapshots of home → unlock.
	tt.WaitFor(time.Minute, "Drawbridge console", "home")
	tt.Unlock("home", "not the passphrase", vmPassphrase, 10*time.Second, 2*time.Minute)
	comps := strings.Split(strings.TrimPrefix(tree, "/"), "/")
	for i := range comps {
		tt.WaitFor(10*time.Second, comps[i]+"/")
		tt.Keys("Enter")
		tt.WaitFor(10*time.Second, "/"+strings.Join(comps[:i+1], "/")+" ")
	}
	tt.WaitFor(10*time.Second, "docs/")
	tt.Keys("Enter")
	tt.WaitFor(10*time.Second, "hello.txt", "notes.txt")

	// Restore hello.txt to the first stick: on the appliance r offers the drives.
	tt.Keys("r")
	tt.WaitFor(30*time.Second, "Restore to a USB drive", "STICK")
	toStick(tt, 2*time.Minute, "restored", "1 file identical", "pull it out now")

	// Export the snapshot, plain files, to the same stick.
	tt.BackTo("Snapshots of home")
	tt.Keys("e")
	tt.WaitFor(10*time.Second, "p  plain files")
	tt.Keys("p")
	tt.WaitFor(30*time.Second, "to a USB drive", "STICK")
	toStick(tt, 3*time.Minute, "exported", "pull it out now")

	// The settings, behind the admin passphrase: the keys, and each
	// source's authorized_keys line written to the stick.
	tt.BackTo("b browse") // the status screen
	tt.Keys("s")
	tt.WaitFor(time.Minute, "The settings need the admin passphrase")
	tt.Text(e2eAdmin)
	tt.Keys("Enter")
	tt.WaitFor(3*time.Minute, "Settings", "ssh key   ssh-ed25519 ")
	tt.Keys("a")
	tt.WaitFor(30*time.Second, "Write the authorized_keys lines", "STICK")
	toStick(tt, 2*time.Minute, "wrote the authorized_keys lines", "pull it out now")

	// Import the configuration on the stick: the change, y, the admin
	// passphrase.
	tt.WaitFor(10*time.Second, "Settings")
	tt.Keys("i")
	tt.WaitFor(time.Minute, "Import a configuration from a USB drive", "drawbridge.toml, 1 sources")
	tt.Keys("Enter")
	tt.WaitFor(30*time.Second, "Import: what changes", "03:30")
	tt.Keys("y")
	tt.WaitFor(10*time.Second, "Applying the import needs the admin passphrase")
	tt.Text(e2eAdmin)
	tt.Keys("Enter")
	tt.WaitFor(3*time.Minute, "is installed in /data/drawbridge.toml")
	tt.Keys("Enter")

	// Format the blank stick: u on the status screen lists the drives, f
	// on its row asks for the filesystem, and the confirmation to type,
	// which names the drive's model and size, is read off the screen as a
	// person reads it.
	tt.BackTo("b browse") // the status screen
	tt.Keys("u")
	tt.WaitFor(30*time.Second, "USB drives", "(no filesystem: f formats it)", "STICK")
	tt.Pick("(no filesystem")
	tt.Keys("f")
	tt.WaitFor(10*time.Second, "Which filesystem?", "1  exfat")
	tt.Keys("1")
	tt.WaitFor(10*time.Second, "Formatting ERASES EVERYTHING", "To go on, type exactly:")
	conf := regexp.MustCompile(`format (sd[a-z]+) (\S[^|]*?) (\d+\.\d [KMGTPE]iB)`).FindStringSubmatch(tt.Screen())
	if conf == nil || conf[3] != "96.0 MiB" {
		t.Fatalf("the confirmation does not name the 96 MiB stick: %q\n%s", conf, tt.Screen())
	}
	blankDev := conf[1]
	tt.Text(conf[0])
	tt.Keys("Enter")
	tt.WaitFor(time.Minute, "formatted as exfat, labelled "+console.FormatLabel, "press any key")
	tt.Keys("Enter")
	// The list, read again, shows the new filesystem on the drive.
	tt.WaitFor(30*time.Second, fmt.Sprintf("%-10s %-6s %s", blankDev, "exfat", console.FormatLabel))

	// Power off from the console; the sticks are read on the host after.
	tt.BackTo("b browse") // the status screen
	tt.Keys("p")
	tt.WaitFor(10*time.Second, "o  power off")
	tt.Keys("o")
	tt.WaitFor(10*time.Second, "Really power off")
	tt.Keys("y")
	waitLog(t, log, "drawbridge: power off", time.Minute)
	deadline := time.Now().Add(powerOffTimeout)
	for tt.Alive() && time.Now().Before(deadline) {
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

// toStick picks the first stick's partition, the row with its label
// STICK, in the drive list (whichever name the kernel gave the stick),
// starts the work, waits for the result to show every one of want, and
// closes it.
func toStick(tt *termtest.Term, timeout time.Duration, want ...string) {
	tt.Pick(" STICK ")
	tt.Keys("Enter")
	tt.WaitFor(timeout, want...)
	tt.Keys("Enter")
}
