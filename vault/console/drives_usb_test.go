package console

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/hw/usb"
	"drawbridge/hw/usb/sticktest"
	"drawbridge/hw/usb/usbtest"
	"drawbridge/vault/admin"
	"drawbridge/vault/config/importer"
	"drawbridge/vault/export/manifest"
	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/journal"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
	"drawbridge/vault/todrive"
)

// usbVault is a store with one snapshot of src, unlocked, and the
// console's drives on loop devices.
type usbVault struct {
	s     *store.Store
	sn    store.Snapshot
	r     *store.Reader
	u     *USBDrives
	ports *sticktest.Ports // the loop devices of this test: only they are offered
}

// stick makes an ext4 loop device that the drives offer.
func (v *usbVault) stick(t *testing.T, size int64) string {
	return v.ports.Loop(t, size, "mke2fs", "-q", "-F", "-t", "ext4", "-m", "0")
}

func newUSBVault(t *testing.T, fill func(src string)) *usbVault {
	t.Helper()
	work := t.TempDir()
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	fill(src)
	dir := filepath.Join(work, "store")
	s := storetest.New(t, dir, "pass", store.InitOptions{})
	sn := storetest.Backup(t, s, "home", src)
	r := storetest.Unlock(t, s, "pass")
	p := sticktest.New()
	v := &usbVault{s: s, sn: *sn, r: r, ports: p, u: &USBDrives{Ports: p.Ports, MountDir: filepath.Join(work, "mnt"), Store: s, StoreDir: dir}}
	// A test that fails with a drive mounted leaves neither the mount nor
	// the loop device behind.
	t.Cleanup(func() {
		ents, _ := os.ReadDir(v.u.MountDir)
		for _, e := range ents {
			unix.Unmount(filepath.Join(v.u.MountDir, e.Name()), unix.MNT_DETACH)
		}
	})
	return v
}

// partition finds the loop device's filesystem in the drive list.
func (v *usbVault) partition(t *testing.T, name string) usb.Partition {
	t.Helper()
	drives, _ := v.u.List()
	for _, d := range drives {
		if d.Name == name && len(d.Partitions) == 1 {
			return d.Partitions[0]
		}
	}
	t.Fatalf("%s not listed with a filesystem among %+v", name, drives)
	return usb.Partition{}
}

// look mounts part read-only and calls fn with its root.
func (v *usbVault) look(t *testing.T, part usb.Partition, fn func(root string)) {
	t.Helper()
	m, err := v.u.Ports.Mount(part, filepath.Join(t.TempDir(), "look"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	fn(m.Root())
}

func mounted(dir string) bool {
	var a, b unix.Stat_t
	return unix.Stat(dir, &a) == nil && unix.Stat(filepath.Dir(dir), &b) == nil && a.Dev != b.Dev
}

// TestUSBDrivesRestoreAndExport restores a file, exports the snapshot
// plain and sealed to a real ext4 loop device, and checks each on the
// drive; a drive too small refuses before writing.
func TestUSBDrivesRestoreAndExport(t *testing.T) {
	hello := []byte("hello from the vault\n")
	v := newUSBVault(t, func(src string) {
		os.WriteFile(filepath.Join(src, "hello.txt"), hello, 0o644)
		os.WriteFile(filepath.Join(src, "big.bin"), bytes.Repeat([]byte{7}, 3<<20), 0o644)
	})
	dev := v.stick(t, 64<<20)
	part := v.partition(t, dev)
	root, err := parseRoot(v.sn.Root)
	if err != nil {
		t.Fatal(err)
	}
	srcDir := strings.TrimSuffix(v.sn.Paths[0], "/")
	var phases sync.Map
	rep, err := v.u.RestoreTo(context.Background(), v.r, v.sn, root, srcDir+"/hello.txt", part, func(p todrive.Progress) { phases.Store(p.Phase, true) })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files != 1 || rep.Verified != 1 || !rep.Unmounted || len(rep.Problems) != 0 || !strings.HasPrefix(rep.Dir, "drawbridge-restore-") {
		t.Fatalf("restore report %+v", rep)
	}
	if _, ok := phases.Load(todrive.PhaseVerify); !ok {
		t.Error("no progress of the read-back")
	}
	if mounted(filepath.Join(v.u.MountDir, part.Name)) {
		t.Fatal("the drive is still mounted after the restore")
	}
	v.look(t, part, func(r string) {
		got, err := os.ReadFile(filepath.Join(r, rep.Dir, "hello.txt"))
		if err != nil || !bytes.Equal(got, hello) {
			t.Fatalf("on the drive: %q, %v", got, err)
		}
	})

	// The whole snapshot, as R at its top asks.
	rep, err = v.u.RestoreTo(context.Background(), v.r, v.sn, root, "/", part, func(todrive.Progress) {})
	if err != nil || rep.Files != 2 || rep.Verified != 2 || !rep.Unmounted {
		t.Fatalf("whole snapshot: %+v, %v", rep, err)
	}
	v.look(t, part, func(r string) {
		if _, err := os.Stat(filepath.Join(r, rep.Dir, srcDir, "big.bin")); err != nil {
			t.Fatalf("whole snapshot on the drive: %v", err)
		}
	})

	// Plain export: read back and checked against the signed MANIFEST.
	rep, err = v.u.ExportTo(context.Background(), v.r, v.sn, part, false, func(todrive.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files != 2 || rep.Verified != 2 || !rep.Unmounted || len(rep.Problems) != 0 || !strings.HasPrefix(rep.Dir, "drawbridge-export-") {
		t.Fatalf("export report %+v", rep)
	}
	v.look(t, part, func(r string) {
		res, err := manifest.Verify(filepath.Join(r, rep.Dir, manifest.Dir), seal.Fingerprint(v.s.Keys().Identity.Public()))
		if err != nil || !res.OK() || res.Files != 2 {
			t.Fatalf("the export does not verify: %+v, %v", res, err)
		}
	})

	// Sealed export: the drive gets a store of its own.
	rep, err = v.u.ExportTo(context.Background(), nil, v.sn, part, true, func(todrive.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files == 0 || rep.Verified != rep.Files || !rep.Unmounted || len(rep.Problems) != 0 {
		t.Fatalf("sealed export report %+v", rep)
	}
	v.look(t, part, func(r string) {
		if _, err := os.Stat(filepath.Join(r, rep.Dir, "store.json")); err != nil {
			t.Fatalf("sealed copy: %v", err)
		}
	})

	// The authorized_keys lines, twice: the second file gets a name of its
	// own.
	v.u.Keys = func() (string, error) { return "# web1 (agent)\nrestrict ssh-ed25519 AAAA drawbridge\n", nil }
	for _, name := range []string{KeysFile, KeysFile + "-2"} {
		rep, err = v.u.WriteKeys(context.Background(), part)
		if err != nil || rep.Dir != name || rep.Verified != 1 || !rep.Unmounted || len(rep.Problems) != 0 {
			t.Fatalf("write the keys: %+v, %v", rep, err)
		}
	}
	v.look(t, part, func(r string) {
		if b, err := os.ReadFile(filepath.Join(r, KeysFile)); err != nil || !strings.Contains(string(b), "restrict ssh-ed25519 AAAA drawbridge") {
			t.Fatalf("the keys on the drive: %q, %v", b, err)
		}
	})

	// A drive too small: refused before anything is written.
	small := v.partition(t, v.stick(t, 2<<20))
	_, err = v.u.RestoreTo(context.Background(), v.r, v.sn, root, srcDir, small, func(todrive.Progress) {})
	if !errors.Is(err, todrive.ErrNoSpace) {
		t.Fatalf("restore to a 2 MiB drive: %v", err)
	}
	_, err = v.u.ExportTo(context.Background(), v.r, v.sn, small, false, func(todrive.Progress) {})
	if !errors.Is(err, todrive.ErrNoSpace) {
		t.Fatalf("export to a 2 MiB drive: %v", err)
	}
	if mounted(filepath.Join(v.u.MountDir, small.Name)) {
		t.Fatal("the small drive is still mounted")
	}
}

// TestUSBDrivesPulled pulls the drive (the loop device shrinks to one
// sector) in the middle of an export: ErrDriveGone, and nothing stays
// mounted.
func TestUSBDrivesPulled(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 48 MiB")
	}
	v := newUSBVault(t, func(src string) {
		r := rand.New(rand.NewPCG(1, 2))
		for i := range 12 {
			b := make([]byte, 4<<20)
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			os.WriteFile(filepath.Join(src, "f"+string(rune('a'+i))), b, 0o644)
		}
	})
	dev := v.stick(t, 128<<20)
	part := v.partition(t, dev)
	var once sync.Once
	pulled := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := v.u.ExportTo(context.Background(), v.r, v.sn, part, false, func(p todrive.Progress) {
			if p.Done > 8<<20 {
				once.Do(func() { close(pulled) })
			}
		})
		errc <- err
	}()
	select {
	case <-pulled:
	case err := <-errc:
		t.Fatalf("the export ended before the drive was pulled: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("no progress within 60s")
	}
	usbtest.Pull(t, "/dev/"+dev)
	select {
	case err := <-errc:
		if !errors.Is(err, todrive.ErrDriveGone) {
			t.Fatalf("err = %v, want ErrDriveGone", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the export did not notice the pulled drive within 20s")
	}
	if mounted(filepath.Join(v.u.MountDir, part.Name)) {
		t.Fatal("the pulled drive is still mounted")
	}
}

// TestUSBDrivesImport finds drawbridge.toml on a real drive, shows its
// changes, refuses a wrong admin passphrase and installs it with the
// right one, journaled.
func TestUSBDrivesImport(t *testing.T) {
	v := newUSBVault(t, func(src string) {})
	dev := v.stick(t, 16<<20)
	part := v.partition(t, dev)
	cfg := strings.ReplaceAll(`store = "STORE"
[network]
interface = "eth0"
address = "198.18.0.2/24"
[[window]]
days = "daily"
start = "02:00"
duration = "1h"
`, "STORE", v.u.StoreDir)
	m, err := v.u.Ports.Mount(part, filepath.Join(t.TempDir(), "w"), false)
	if err != nil {
		t.Fatal(err)
	}
	werr := os.WriteFile(filepath.Join(m.Root(), "drawbridge.toml"), []byte(cfg), 0o644)
	if err := m.Unmount(); err != nil || werr != nil {
		t.Fatal(err, werr)
	}
	v.u.ConfigPath = filepath.Join(t.TempDir(), "drawbridge.toml")
	v.u.Admin = admin.ForStore(v.s, admin.Options{KDF: seal.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
		Sleep: func(context.Context, time.Duration) error { return nil }})
	if err := v.u.ApplyImport(context.Background(), &importer.Plan{}, []byte("x")); !errors.Is(err, ErrNoAdmin) {
		t.Fatalf("without an admin passphrase: %v", err)
	}
	if err := v.u.Admin.Set(context.Background(), nil, []byte("admin pass")); err != nil {
		t.Fatal(err)
	}

	found, err := v.u.FindConfigs(context.Background())
	if err != nil || len(found) != 1 || found[0].Err != nil || found[0].Partition.Name != dev {
		t.Fatalf("found %+v, %v", found, err)
	}
	p, err := v.u.PlanImport(found[0])
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Join(p.Lines(), "\n"); !strings.Contains(lines, "window 1") || !strings.Contains(lines, "network") {
		t.Fatalf("plan lines:\n%s", lines)
	}
	if err := v.u.ApplyImport(context.Background(), p, []byte("wrong")); !errors.Is(err, ErrAdminPassphrase) {
		t.Fatalf("wrong admin passphrase: %v", err)
	}
	if _, err := os.Stat(v.u.ConfigPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("installed after a refusal: %v", err)
	}
	if err := v.u.ApplyImport(context.Background(), p, []byte("admin pass")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(v.u.ConfigPath); err != nil || string(b) != cfg {
		t.Fatalf("installed: %q, %v", b, err)
	}
	var types []string
	v.s.Journal().Scan(func(r journal.Record) error { types = append(types, r.Type); return nil })
	if got := strings.Join(types, " "); !strings.Contains(got, "admin-refused") || !strings.Contains(got, importer.RecordImported) {
		t.Fatalf("journal: %s", got)
	}
	if mounted(filepath.Join(v.u.MountDir, dev)) {
		t.Fatal("the drive stays mounted after the search")
	}
}

// TestUSBDrivesFAT: a FAT drive cannot hold a symlink: the restore and the
// export leave it out and say so, and the rest reads back.
func TestUSBDrivesFAT(t *testing.T) {
	v := newUSBVault(t, func(src string) {
		os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha"), 0o644)
		os.Symlink("a.txt", filepath.Join(src, "link"))
	})
	name := v.ports.Loop(t, 64<<20, "mkfs.vfat", "-I")
	part := v.partition(t, name)
	m, err := v.u.Ports.Mount(part, filepath.Join(t.TempDir(), "probe"), true)
	if err != nil {
		fixture.Need(t, "this machine cannot mount vfat: "+err.Error())
	}
	m.Unmount()
	root, _ := parseRoot(v.sn.Root)
	rep, err := v.u.RestoreTo(context.Background(), v.r, v.sn, root, "/", part, func(todrive.Progress) {})
	if err != nil || rep.Verified != 1 || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "link") || !rep.Unmounted {
		t.Fatalf("restore to FAT: %+v, %v", rep, err)
	}
	rep, err = v.u.ExportTo(context.Background(), v.r, v.sn, part, false, func(todrive.Progress) {})
	if err != nil || rep.Verified != 1 || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "not exported") || !rep.Unmounted {
		t.Fatalf("export to FAT: %+v, %v", rep, err)
	}
}
