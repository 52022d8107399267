// Package usbtest gives tests loop devices standing in for USB sticks: a
// sparse image in the test's temporary directory, a filesystem made on it
// when asked, attached to a loop device (Attach: the loop ioctls, so no
// losetup is needed) and detached when the test ends. Pull makes one
// behave as a stick pulled out.
//
//	dev := usbtest.Loop(t, 64<<20, "mkfs.ext4", "-q", "-F", "-L", "STICK")
//	// ... list it with usb.Ports{Any: true}, mount it, write to it ...
//	usbtest.Pull(t, dev) // every read and write past the first sector fails
//
// Where loop devices cannot be had (not root, no losetup, no mkfs), the
// test is skipped with what to install, and fails under CI=true.
package usbtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"drawbridge/vault/fixture"
)

// Loop makes a sparse image of size bytes, runs mkfs on it if one is
// given (the command and its flags; the image is added last), attaches it
// to a loop device and returns the device's path (/dev/loopN).
func Loop(t testing.TB, size int64, mkfs ...string) string {
	t.Helper()
	_, dev := Image(t, size, mkfs...)
	return dev
}

// Image is Loop, and also returns the image's path.
func Image(t testing.TB, size int64, mkfs ...string) (img, dev string) {
	t.Helper()
	img = NewImage(t, size, mkfs...)
	return img, Attach(t, img, 0)
}

// Filled makes an image as Image does, fills the filesystem on it through
// a loop mount (fill gets its root), and returns the image's path,
// attached to nothing: a test plugs it in later (Attach, AttachLoop).
func Filled(t testing.TB, size int64, fill func(dir string), mkfs ...string) string {
	t.Helper()
	img := NewImage(t, size, mkfs...)
	dev, detach, err := AttachLoop(img, 0)
	if err != nil {
		fixture.Need(t, "a loop device: "+err.Error())
	}
	defer detach()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		fixture.Need(t, "mount "+dev+": "+strings.TrimSpace(string(out)))
	}
	fill(mnt)
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatalf("unmount %s: %v", mnt, err)
	}
	return img
}

// NewImage makes a sparse image of size bytes in the test's temporary
// directory, runs mkfs on it when one is given (the command and its
// flags; the image is added last), and returns its path, attached to
// nothing (Attach it with the flags the test wants).
func NewImage(t testing.TB, size int64, mkfs ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		fixture.Need(t, "needs root for loop devices")
	}
	img := filepath.Join(t.TempDir(), "stick.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if len(mkfs) > 0 {
		if _, err := exec.LookPath(mkfs[0]); err != nil {
			fixture.Need(t, "needs "+mkfs[0]+": apt-get install e2fsprogs dosfstools exfatprogs")
		}
		if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", mkfs[0], err, out)
		}
	}
	return img
}

// Pull makes the loop device dev one sector long, in one step: from then
// on every read or write past that sector fails with EIO, as on a stick
// pulled out.
func Pull(t testing.TB, dev string) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	info.Sizelimit = 512
	if err := unix.IoctlLoopSetStatus64(int(f.Fd()), info); err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		t.Fatal(err)
	}
}
