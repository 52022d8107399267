package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"drawbridge/hw/usb/usbtest"
	"drawbridge/vault/console/termtest"
	"drawbridge/vault/internal/fixture"
)

// loopStick makes an ext4 filesystem of size bytes on a loop device,
// standing in for a USB stick, and returns the device's path.
func loopStick(t *testing.T, size int64) string {
	t.Helper()
	for _, tool := range []string{"mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			fixture.Need(t, "needs "+tool+": apt-get install mount")
		}
	}
	return usbtest.Loop(t, size, "mke2fs", "-q", "-F", "-t", "ext4", "-m", "0", "-L", "STICK")
}

// onStick mounts dev read-only while fn looks at it.
func onStick(t *testing.T, dev string, fn func(dir string)) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "ro,nosuid,nodev", dev, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", dev, err, out)
	}
	defer exec.Command("umount", dir).Run()
	fn(dir)
}

// TestConsoleDrivesInTmux drives the console with a real ext4 loop device
// as the USB drive: a refused passphrase, then a file found in the
// snapshot and restored to the drive and read back; the snapshot exported
// to the same drive, checked there by drawbridge-verify; both journaled.
func TestConsoleDrivesInTmux(t *testing.T) {
	termtest.Need(t)
	dev := loopStick(t, 64<<20)
	name := filepath.Base(dev)
	bins := fixture.Build(t, "drawbridge/cmd/drawbridge", "drawbridge/cmd/drawbridge-verify")
	bin, verify := bins[0], bins[1]
	work := t.TempDir()
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	hello := []byte("hello from the vault, on a stick\n")
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), hello, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("second file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	storeDir, sn := consoleStore(t, work, src)

	rc := filepath.Join(work, "rc")
	tt := termtest.Start(t, "console", 120, 40, fmt.Sprintf("%s console --drives-any --store %s 2>%s; echo $? >%s", bin, storeDir, filepath.Join(work, "stderr"), rc))
	tt.WaitFor(10*time.Second, "no daemon status", "home")
	tt.Unlock("home", "wrong pass", "right pass", 5*time.Second, 10*time.Second)
	comps := strings.Split(strings.TrimPrefix(src, "/"), "/")
	for i := range comps {
		tt.WaitFor(5*time.Second, comps[i]+"/")
		tt.Keys("Enter")
		tt.WaitFor(5*time.Second, "  /"+strings.Join(comps[:i+1], "/")+" ")
	}
	tt.WaitFor(5*time.Second, "hello.txt", "notes.txt", "1/2")

	// Restore hello.txt to the stick: r asks for a directory, Tab gives the
	// drives.
	tt.Keys("r")
	tt.WaitFor(5*time.Second, "Restore "+src+"/hello.txt", "Tab  a USB drive instead")
	tt.Keys("Tab")
	tt.WaitFor(5*time.Second, "Restore to a USB drive", "/src/hello.txt", name, "ext4", "STICK")
	tt.Pick(name + " ")
	tt.Keys("Down") // from the drive to its filesystem
	tt.Pick(name + " ")
	tt.Keys("Enter")
	tt.WaitFor(30*time.Second, "restored", "to "+name+":/drawbridge-restore-", "1 file identical", "pull it out now")
	tt.Keys("Enter")
	tt.WaitFor(5*time.Second, "Enter open   r restore")
	onStick(t, dev, func(dir string) {
		got, err := filepath.Glob(filepath.Join(dir, "drawbridge-restore-"+sn.ID[:12]+"-*", "hello.txt"))
		if err != nil || len(got) != 1 {
			t.Fatalf("on the stick: %v %v", got, err)
		}
		if b, err := os.ReadFile(got[0]); err != nil || string(b) != string(hello) {
			t.Fatalf("restored file: %q, %v", b, err)
		}
	})

	// Export the snapshot (plain) to the same stick.
	for range 10 {
		if strings.Contains(tt.Screen(), "Snapshots of home") {
			break
		}
		tt.Keys("Escape")
		time.Sleep(100 * time.Millisecond)
	}
	tt.WaitFor(5*time.Second, "Snapshots of home")
	tt.Keys("e")
	tt.WaitFor(5*time.Second, "p  plain files", "s  sealed copy")
	tt.Keys("p")
	tt.WaitFor(5*time.Second, "Export "+sn.ID[:12]+" (plain) to a USB drive", name)
	tt.Pick(name + " ")
	tt.Keys("Down")
	tt.Pick(name + " ")
	tt.Keys("Enter")
	tt.WaitFor(30*time.Second, "exported", "to "+name+":/drawbridge-export-", "2 files identical", "pull it out now")
	tt.Keys("Enter")
	onStick(t, dev, func(dir string) {
		got, _ := filepath.Glob(filepath.Join(dir, "drawbridge-export-"+sn.ID[:12]+"-*"))
		if len(got) != 1 {
			t.Fatalf("no export on the stick: %v", got)
		}
		out, err := exec.Command(verify, got[0]).CombinedOutput()
		if err != nil || !regexp.MustCompile(`valid: \d+ entries, 2 files`).Match(out) {
			t.Fatalf("drawbridge-verify: %v\n%s", err, out)
		}
	})

	quitConsole(t, tt, rc, work)
	journalHas(t, bin, storeDir, "console-unlock-failed", "console-restore-drive", "console-export")
}
