package importer_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"drawbridge/hw/usb/sticktest"
	"drawbridge/hw/usb/usbtest"
	"drawbridge/vault/config"
	"drawbridge/vault/config/configtest"
	"drawbridge/vault/config/importer"
)

func validConfig(t testing.TB) string {
	return configtest.Text("/data/store", "198.18.0.1", configtest.HostKey(t))
}

// image makes an ext4 stick image, filled by fill when it is not nil.
func image(t *testing.T, fill func(dir string)) string {
	t.Helper()
	if fill == nil {
		fill = func(string) {}
	}
	return usbtest.Filled(t, 32<<20, fill, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096")
}

func sum(t *testing.T, p string) [32]byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func mountedUnder(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return strings.Contains(string(b), " "+dir+"/")
}

func TestScanHostileSticks(t *testing.T) {
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, config.DriveFile), []byte(validConfig(t)), 0o644)
	cases := []struct {
		name string
		fill func(t *testing.T, dir string)
		want string
	}{
		{"valid", func(t *testing.T, d string) {
			os.WriteFile(filepath.Join(d, config.DriveFile), []byte(validConfig(t)), 0o644)
		}, ""},
		{"no file", func(t *testing.T, d string) { os.WriteFile(filepath.Join(d, "other.txt"), []byte("x"), 0o644) }, "no such file"},
		{"symlink outside", func(t *testing.T, d string) {
			os.Symlink(filepath.Join(outside, config.DriveFile), filepath.Join(d, config.DriveFile))
		}, "symbolic link"},
		{"2^40 bytes", func(t *testing.T, d string) {
			f, _ := os.Create(filepath.Join(d, config.DriveFile))
			if err := f.Truncate(1 << 40); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}, "larger than 64 KiB"},
		{"unknown keys", func(t *testing.T, d string) {
			os.WriteFile(filepath.Join(d, config.DriveFile), []byte(validConfig(t)+"autorun = \"/bin/sh\"\n"), 0o644)
		}, `unknown key "autorun"`},
		{"fifo", func(t *testing.T, d string) { syscall.Mkfifo(filepath.Join(d, config.DriveFile), 0o644) }, "not a regular file"},
		{"corrupt filesystem", nil, "damaged"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var img string
			if tc.fill != nil {
				img = image(t, func(d string) { tc.fill(t, d) })
			} else {
				img = image(t, nil)
				f, _ := os.OpenFile(img, os.O_WRONLY, 0)
				junk := make([]byte, 4096)
				for i := range junk {
					junk[i] = byte(i*7 + 3)
				}
				f.WriteAt(junk, 4096) // over the group descriptors
				f.Close()
			}
			before := sum(t, img)
			s := sticktest.New()
			s.Plug(t, img)
			base := t.TempDir()
			start := time.Now()
			found, err := importer.Scan(s, base)
			took := time.Since(start)
			if err != nil || len(found) != 1 {
				t.Fatalf("Scan: %v %+v", err, found)
			}
			f := found[0]
			if tc.want == "" {
				if f.Err != nil || f.Config == nil || f.Config.Sources[0].Name != "db1" {
					t.Fatalf("valid stick: %+v", f)
				}
			} else {
				if f.Err == nil || f.Config != nil || !strings.Contains(f.Err.Error(), tc.want) {
					t.Fatalf("%s: error %v, want %q", tc.name, f.Err, tc.want)
				}
				if len(importer.Valid(found)) != 0 {
					t.Fatal("a refused stick counted as valid")
				}
				t.Logf("%s: %v", f, f.Err)
			}
			if mountedUnder(base) {
				t.Error("left mounted")
			}
			if ents, _ := os.ReadDir(base); len(ents) != 0 {
				t.Errorf("mount points left: %v", ents)
			}
			if took > 10*time.Second {
				t.Errorf("scan took %v", took)
			}
			if sum(t, img) != before {
				t.Error("the stick changed")
			}
		})
	}
}

func TestWaitForStick(t *testing.T) {
	empty := image(t, nil)
	good := image(t, func(d string) {
		os.WriteFile(filepath.Join(d, config.DriveFile), []byte(validConfig(t)), 0o644)
	})
	s := sticktest.New()
	var mu sync.Mutex
	var said []string
	say := func(m string) { mu.Lock(); said = append(said, m); mu.Unlock() }

	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := importer.Wait(ctx, s, t.TempDir(), say); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait without drives: %v", err)
	}
	if len(said) != 1 || !strings.Contains(said[0], "plug one in") {
		t.Fatalf("said %q", said)
	}
	s.Plug(t, empty)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	go func() {
		time.Sleep(1500 * time.Millisecond)
		s.Plug(t, good)
	}()
	found, err := importer.Wait(ctx2, s, t.TempDir(), say)
	if err != nil || len(found) != 1 || found[0].Config == nil {
		t.Fatalf("Wait: %v %+v", err, found)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(said, "\n"), "no "+config.DriveFile+" at its top") {
		t.Errorf("said %q", said)
	}
}
