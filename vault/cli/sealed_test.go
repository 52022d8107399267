package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"drawbridge/hw/usb/usbtest"
	"drawbridge/vault/export"
	"drawbridge/vault/fixture"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
)

// sealedVault is a store with three snapshots of three sources.
type sealedVault struct {
	dir, st, pass string
	src           [3]string
	ids           [3]string
}

func newSealedVault(t *testing.T) *sealedVault {
	t.Helper()
	v := &sealedVault{dir: t.TempDir()}
	v.st = filepath.Join(v.dir, "store")
	v.pass = filepath.Join(v.dir, "pass")
	os.WriteFile(v.pass, []byte("sealed passphrase\n"), 0o600)
	// The sealed exports under v.dir are sealed like a store.
	t.Cleanup(func() { fixture.Unseal(v.dir) })
	storetest.New(t, v.st, "sealed passphrase", store.InitOptions{}).Close()
	for i, name := range []string{"db1", "web2", "mail3"} {
		v.src[i] = filepath.Join(v.dir, "src-"+name)
		fixture.Random(v.src[i], uint64(10+i))
		code, out, e := v.main(v.st, "backup", "--source", name, v.src[i], "--json")
		if code != 0 {
			t.Fatalf("backup %s: %d %s", name, code, e)
		}
		var r struct{ ID string }
		json.Unmarshal([]byte(out), &r)
		v.ids[i] = r.ID
	}
	return v
}

func (v *sealedVault) main(st string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code := Main(context.Background(), append(args, "--store", st, "--passphrase-file", v.pass), env)
	return code, out.String(), errb.String()
}

func TestSealedExportRoundTrip(t *testing.T) {
	v := newSealedVault(t)
	usb := filepath.Join(v.dir, "usb")
	// No collection during the export: a handle left open must still be
	// open when it is looked for, not closed by the garbage collector.
	gc := debug.SetGCPercent(-1)
	code, out, e := v.main(v.st, "export", v.ids[0][:12], "web2/latest", "--to", usb, "--sealed", "--json")
	if code != 0 {
		t.Fatalf("export --sealed: exit %d: %s", code, e)
	}
	var rep struct {
		Snapshots []string `json:"snapshots"`
		Packs     int      `json:"packs"`
		Bytes     int64    `json:"bytes"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Snapshots) != 2 || rep.Packs == 0 {
		t.Fatalf("export --sealed --json: %v\n%s", err, out)
	}
	// Nothing is left open on the drive: it can be unmounted at once.
	if open := fixture.OpenUnder(usb); len(open) > 0 {
		t.Errorf("the sealed export left descriptors open on the drive: %v", open)
	}
	debug.SetGCPercent(gc)
	// The vault journals it.
	if _, j, _ := v.main(v.st, "journal", "--json"); !strings.Contains(j, `"sealed":true`) {
		t.Errorf("no export record in the vault's journal:\n%s", j)
	}

	// Elsewhere: a copy of the drive, opened on its own.
	elsewhere := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(elsewhere, os.DirFS(usb)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fixture.Unseal(elsewhere) })
	keys, _ := os.ReadFile(filepath.Join(elsewhere, "keys.json"))
	if bytes.Contains(keys, []byte("identity_private")) || bytes.Contains(keys, []byte("ssh_private")) {
		t.Fatal("the sealed export carries a private key in plain")
	}
	code, out, e = v.main(elsewhere, "snapshots", "--json")
	if code != 0 {
		t.Fatalf("snapshots on the copy: %d %s", code, e)
	}
	var list []store.Snapshot
	json.Unmarshal([]byte(out), &list)
	if len(list) != 2 || list[0].ID != v.ids[0] || list[1].ID != v.ids[1] {
		t.Fatalf("snapshots on the copy: %s", out)
	}
	if code, out, e := v.main(elsewhere, "verify"); code != 0 || !strings.Contains(out, ": 0 problems") {
		t.Fatalf("verify of the copy: exit %d\n%s%s", code, out, e)
	}
	if code, out, e := v.main(elsewhere, "verify", "--deep"); code != 0 {
		t.Fatalf("deep verify of the copy: exit %d\n%s%s", code, out, e)
	}
	if open := fixture.OpenUnder(elsewhere); len(open) > 0 {
		t.Errorf("reading the export left descriptors open on it: %v", open)
	}
	for i := 0; i < 2; i++ {
		target := filepath.Join(t.TempDir(), "r")
		if code, _, e := v.main(elsewhere, "restore", v.ids[i], "--target", target); code != 0 {
			t.Fatalf("restore %d from the copy: %d %s", i, code, e)
		}
		if d := fixture.Compare(v.src[i], filepath.Join(target, v.src[i])); len(d) > 0 {
			t.Fatalf("restored snapshot %d differs: %q", i, d[:min(5, len(d))])
		}
	}
	if code, _, e := v.main(elsewhere, "ls", v.ids[2][:12]); code != 1 || !strings.Contains(e, "no such snapshot") {
		t.Errorf("the third snapshot on the copy: exit %d: %s", code, e)
	}
	// Only the packs the two snapshots reference: the third's are not there.
	needed := map[string]bool{}
	for i := 0; i < 2; i++ {
		refs, _ := os.ReadFile(filepath.Join(v.st, "refs", v.ids[i]))
		for _, p := range strings.Fields(string(refs)) {
			needed[p] = true
		}
	}
	copied, _ := filepath.Glob(filepath.Join(elsewhere, "packs", "*", "*.pack"))
	for _, p := range copied {
		if !needed[strings.TrimSuffix(filepath.Base(p), ".pack")] {
			t.Errorf("pack %s is exported but no chosen snapshot needs it", p)
		}
	}
	if len(copied) != len(needed) || len(needed) == 0 {
		t.Errorf("%d packs exported, the two snapshots need %d", len(copied), len(needed))
	}
	refs, _ := os.ReadFile(filepath.Join(v.st, "refs", v.ids[2]))
	own := 0
	for _, p := range strings.Fields(string(refs)) {
		if !needed[p] {
			own++
		}
	}
	if own == 0 {
		t.Error("the third snapshot has no pack of its own: the test proves nothing")
	}

	// Wrong passphrase: refused, nothing read.
	bad := filepath.Join(v.dir, "bad")
	os.WriteFile(bad, []byte("not it"), 0o600)
	var o, eb bytes.Buffer
	c := Main(context.Background(), []string{"ls", "latest", "--store", elsewhere, "--passphrase-file", bad},
		Env{Stdout: &o, Stderr: &eb, Getenv: func(string) string { return "" }})
	if c != 1 || !strings.Contains(eb.String(), "wrong restore passphrase") || o.Len() > 0 {
		t.Errorf("wrong passphrase on the copy: exit %d: %s", c, eb.String())
	}
	// The copy cannot be written to or sign anything.
	if code, _, e := v.main(elsewhere, "backup", "--source", "x", v.src[0]); code != 1 || !strings.Contains(e, "no signing key") {
		t.Errorf("backup into a sealed export: exit %d: %s", code, e)
	}
	if code, _, e := v.main(elsewhere, "export", "latest", "--to", filepath.Join(v.dir, "plain")); code != 1 || !strings.Contains(e, "sealed export") {
		t.Errorf("plain export from a sealed export: exit %d: %s", code, e)
	}
	if code, _, e := v.main(elsewhere, "index", "rebuild"); code != 0 {
		t.Errorf("index rebuild on the copy: exit %d: %s", code, e)
	}
	// A sealed export into a non-empty directory is refused.
	if code, _, e := v.main(v.st, "export", "latest", "--to", usb, "--sealed"); code != 1 || !strings.Contains(e, "not empty") {
		t.Errorf("sealed export into a non-empty dir: exit %d: %s", code, e)
	}
	if code, _, _ := v.main(v.st, "export", "latest:/x", "--to", filepath.Join(v.dir, "u3"), "--sealed"); code != 2 {
		t.Errorf("sealed export of a path: exit %d, want 2", code)
	}
}

func TestSealedExportTampered(t *testing.T) {
	v := newSealedVault(t)
	usb := filepath.Join(v.dir, "usb")
	if code, _, e := v.main(v.st, "export", v.ids[0], v.ids[1], "--to", usb, "--sealed"); code != 0 {
		t.Fatalf("export --sealed: exit %d: %s", code, e)
	}
	fixture.Unseal(usb)
	packs, _ := filepath.Glob(filepath.Join(usb, "packs", "*", "*.pack"))
	records, _ := filepath.Glob(filepath.Join(usb, "journal", "*"))
	if len(packs) == 0 || len(records) < 3 {
		t.Fatalf("packs %d records %d", len(packs), len(records))
	}
	fresh := func(t *testing.T) string {
		d := filepath.Join(t.TempDir(), "copy")
		if err := os.CopyFS(d, os.DirFS(usb)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fixture.Unseal(d) })
		return d
	}
	rel := func(p string) string { r, _ := filepath.Rel(usb, p); return r }
	cases := map[string]func(d string){
		// A pack whose bytes changed (its outer checksums too could be
		// fixed up; the signed hash cannot).
		"pack byte": func(d string) {
			p := filepath.Join(d, rel(packs[0]))
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 1
			os.WriteFile(p, b, 0o644)
		},
		"pack removed": func(d string) { os.Remove(filepath.Join(d, rel(packs[0]))) },
		"pack added": func(d string) {
			b, _ := os.ReadFile(packs[0])
			fan := filepath.Base(filepath.Dir(packs[0]))
			if err := os.WriteFile(filepath.Join(d, "packs", fan, fan+"112233445566778899aabbccddeeff.pack"), b, 0o444); err != nil {
				t.Fatal(err)
			}
		},
		"journal record": func(d string) {
			p := filepath.Join(d, rel(records[len(records)-1]))
			b, _ := os.ReadFile(p)
			i := bytes.Index(b, []byte(`"files":`))
			if i < 0 {
				i = 20
			}
			b[i+2] ^= 1
			os.WriteFile(p, b, 0o644)
		},
		"journal record removed": func(d string) { os.Remove(filepath.Join(d, rel(records[1]))) },
		"reference list": func(d string) {
			refs, _ := filepath.Glob(filepath.Join(d, "refs", "*"))
			os.WriteFile(refs[0], nil, 0o644)
		},
		"store.json": func(d string) {
			p := filepath.Join(d, "store.json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(b, []byte(`"created"`), []byte(` "created"`), 1), 0o644)
		},
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			d := fresh(t)
			tamper(d)
			if code, out, e := v.main(d, "verify"); code != 1 {
				t.Errorf("verify of a copy with a changed %s: exit %d\n%s%s", name, code, out, e)
			}
		})
	}
}

func TestSealedExportInterrupted(t *testing.T) {
	v := newSealedVault(t)
	s, err := store.Open(v.st, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snaps, _ := s.Snapshots()
	ctx, cancel := context.WithCancel(context.Background())
	usb := filepath.Join(v.dir, "usb")
	_, err = export.Sealed(ctx, s, snaps, usb, export.SealedOptions{Progress: func(int64) { cancel() }})
	s.Close()
	if err == nil {
		t.Fatal("an interrupted sealed export succeeded")
	}
	if !export.IncompleteSealed(usb) {
		t.Fatal("an interrupted sealed export is not detected as incomplete")
	}
	for _, cmd := range [][]string{{"verify"}, {"snapshots"}, {"restore", "latest", "--target", filepath.Join(v.dir, "r")}} {
		code, out, e := v.main(usb, cmd...)
		if code != 1 || !strings.Contains(e, "interrupted") {
			t.Errorf("%s on an interrupted sealed export: exit %d\n%s%s", cmd[0], code, out, e)
		}
	}
}

// TestSealedExportExFAT writes a sealed export to an exFAT filesystem (the
// kernel's, or exfat-fuse where the kernel has none), which has no
// read-only mode bits worth the name and no immutable flag, and reads it
// back from there.
func TestSealedExportExFAT(t *testing.T) {
	if os.Geteuid() != 0 {
		fixture.Need(t, "needs root to mount")
	}
	if _, err := exec.LookPath("mkfs.exfat"); err != nil {
		fixture.Need(t, "needs mkfs.exfat: apt-get install exfatprogs")
	}
	v := newSealedVault(t)
	// Reading the copy puts its index (a cache) on the drive: badger's logs
	// take some 150 MiB.
	dev := usbtest.Loop(t, 512<<20, "mkfs.exfat")
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	fsList, _ := os.ReadFile("/proc/filesystems")
	if strings.Contains(string(fsList), "\texfat\n") {
		if out, err := exec.Command("mount", "-t", "exfat", dev, mnt).CombinedOutput(); err != nil {
			t.Fatalf("mount: %v\n%s", err, out)
		}
	} else {
		if _, err := exec.LookPath("mount.exfat-fuse"); err != nil {
			fixture.Need(t, "no exfat in the kernel and no exfat-fuse: apt-get install exfat-fuse")
		}
		if out, err := exec.Command("mount.exfat-fuse", dev, mnt).CombinedOutput(); err != nil {
			t.Fatalf("mount.exfat-fuse: %v\n%s", err, out)
		}
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); !strings.Contains(string(b), " "+mnt+" ") {
		t.Fatal("the exFAT filesystem is not mounted")
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	if code, _, e := v.main(v.st, "export", "db1/latest", "--to", mnt, "--sealed"); code != 0 {
		t.Fatalf("sealed export to exFAT: %d %s", code, e)
	}
	if code, out, e := v.main(mnt, "verify"); code != 0 {
		t.Fatalf("verify on exFAT: %d\n%s%s", code, out, e)
	}
	target := filepath.Join(t.TempDir(), "r")
	if code, _, e := v.main(mnt, "restore", v.ids[0], "--target", target); code != 0 {
		t.Fatalf("restore from exFAT: %d %s", code, e)
	}
	if d := fixture.Compare(v.src[0], filepath.Join(target, v.src[0])); len(d) > 0 {
		t.Fatalf("restored from exFAT differs: %q", d[:min(5, len(d))])
	}
	out, _ := exec.Command("du", "-sh", filepath.Join(mnt, "index"), filepath.Join(mnt, "packs")).CombinedOutput()
	t.Logf("on the drive after reading it:\n%s", out)
}
