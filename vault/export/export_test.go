package export_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"drawbridge/hw/usb/sticktest"
	"drawbridge/vault/export"
	"drawbridge/vault/export/manifest"
	"drawbridge/vault/fixture"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
	"drawbridge/vault/tree"
)

// vault is a store holding one snapshot of a fixture tree.
type vault struct {
	s    *store.Store
	r    *store.Reader
	snap *store.Snapshot
	root tree.ID
	src  string // the tree that was backed up
	sub  string // its path inside the snapshot
}

func newVault(t testing.TB, fill func(dir string)) *vault {
	t.Helper()
	s := storetest.New(t, filepath.Join(t.TempDir(), "store"), "export test passphrase", store.InitOptions{})
	src := filepath.Join(t.TempDir(), "src")
	fill(src)
	snap := storetest.Backup(t, s, "fixture", src)
	r := storetest.Unlock(t, s, "export test passphrase")
	return &vault{s: s, r: r, snap: snap, root: storetest.Root(t, snap), src: src, sub: strings.TrimPrefix(src, "/")}
}

func (v *vault) export(t testing.TB, target string) (*export.Report, error) {
	t.Helper()
	return v.exportCtx(context.Background(), target, "")
}

func (v *vault) exportCtx(ctx context.Context, target, verifiers string) (*export.Report, error) {
	return export.Export(ctx, v.r, v.root, v.sub, target, export.Snapshot{
		VaultID: v.s.Info().VaultID, ID: v.snap.ID, Source: v.snap.Source, Time: v.snap.Time,
	}, export.Options{Identity: v.s.Keys().Identity, Verifiers: verifiers})
}

func (v *vault) fingerprint() string { return seal.Fingerprint(v.s.Keys().Identity.Public()) }

func mustExport(t *testing.T, v *vault) string {
	t.Helper()
	target := filepath.Join(t.TempDir(), "usb")
	rep, err := v.export(t, target)
	if err != nil {
		t.Fatal(err)
	}
	// Every file written was read back before the MANIFEST was signed.
	if rep.ReadBack != rep.Files || rep.ReadBackBytes != rep.Bytes || len(rep.Mismatches) != 0 {
		t.Errorf("read back %d files (%d bytes) of %d (%d bytes); mismatches %v", rep.ReadBack, rep.ReadBackBytes, rep.Files, rep.Bytes, rep.Mismatches)
	}
	return filepath.Join(target, manifest.Dir)
}

func verify(t *testing.T, dir, key string) *manifest.Result {
	t.Helper()
	res, err := manifest.Verify(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func nastyAndRandom(dir string) {
	fixture.Nasty(filepath.Join(dir, "nasty"))
	fixture.Random(filepath.Join(dir, "random"), 42)
}

func TestExportVerifies(t *testing.T) {
	v := newVault(t, nastyAndRandom)
	dir := mustExport(t, v)
	res := verify(t, dir, v.fingerprint())
	if !res.OK() {
		t.Fatalf("a fresh export does not verify: %q", res.Problems)
	}
	t.Logf("%d entries, %d files, %d bytes verified", len(res.Manifest.Entries), res.Files, res.Bytes)
	if res.Fingerprint != v.fingerprint() {
		t.Errorf("fingerprint %s, want %s", res.Fingerprint, v.fingerprint())
	}
	// Every regular file of the source is in files/ with the same content.
	files := 0
	err := filepath.WalkDir(v.src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(v.src, p)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(dir, manifest.FilesDir, rel))
		if err != nil {
			t.Errorf("%q: %v", rel, err)
			return nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%q: content differs", rel)
		}
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 || res.Files != int64(files) {
		t.Errorf("verified %d files, the source has %d", res.Files, files)
	}
	// A fifo is listed without content and not made.
	m := res.Manifest
	var fifo bool
	for _, e := range m.Entries {
		if e.Type == manifest.TypeFIFO && e.Path == "nasty/fifo" {
			fifo = true
		}
	}
	if !fifo {
		t.Error("the MANIFEST does not list nasty/fifo")
	}
	if _, err := os.Lstat(filepath.Join(dir, manifest.FilesDir, "nasty", "fifo")); err == nil {
		t.Error("the fifo was made on the drive")
	}
	if m.Snapshot != v.snap.ID || m.VaultID != v.s.Info().VaultID || m.Path != "/"+v.sub {
		t.Errorf("header: %+v", m.Header)
	}
}

func TestTampering(t *testing.T) {
	v := newVault(t, nastyAndRandom)
	other, err := seal.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	files := func(dir string, p ...string) string {
		return filepath.Join(append([]string{dir, manifest.FilesDir}, p...)...)
	}
	resign := func(t *testing.T, dir string, edit func(m []byte) []byte, id *seal.Identity) {
		mp := filepath.Join(dir, manifest.Name)
		mb, err := os.ReadFile(mp)
		if err != nil {
			t.Fatal(err)
		}
		mb = edit(mb)
		if err := os.WriteFile(mp, mb, 0o644); err != nil {
			t.Fatal(err)
		}
		sig := id.Sign(manifest.Domain, mb)
		if err := os.WriteFile(filepath.Join(dir, manifest.SigName), []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// swapKey puts other's key into the header, as a forger would.
	swapKey := func(m []byte) []byte {
		s := string(m)
		s = strings.Replace(s, base64.StdEncoding.EncodeToString(v.s.Keys().Identity.Public()), base64.StdEncoding.EncodeToString(other.Public()), 1)
		s = strings.Replace(s, v.fingerprint(), seal.Fingerprint(other.Public()), 1)
		return []byte(s)
	}
	cases := []struct {
		name   string
		key    string
		tamper func(t *testing.T, dir string)
		want   string
	}{
		{"byte changed", "", func(t *testing.T, dir string) {
			p := files(dir, "nasty", "big.bin")
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 1
			os.WriteFile(p, b, 0o644)
		}, "changed: nasty/big.bin (sha256 differs)"},
		{"file truncated", "", func(t *testing.T, dir string) {
			os.Truncate(files(dir, "nasty", "plain.txt"), 3)
		}, "changed: nasty/plain.txt (size 3,"},
		{"file added", "", func(t *testing.T, dir string) {
			os.WriteFile(files(dir, "nasty", "a", "planted"), []byte("x"), 0o644)
		}, "extra: nasty/a/planted"},
		{"symlink added", "", func(t *testing.T, dir string) {
			os.Symlink("/etc/passwd", files(dir, "nasty", "sneaky"))
		}, "extra: nasty/sneaky"},
		{"symlink retargeted", "", func(t *testing.T, dir string) {
			os.Remove(files(dir, "nasty", "link-rel"))
			os.Symlink("/etc/passwd", files(dir, "nasty", "link-rel"))
		}, "changed: nasty/link-rel (symlink target differs)"},
		{"file removed", "", func(t *testing.T, dir string) {
			os.Remove(files(dir, "nasty", "with space and\nnewline"))
		}, "missing: nasty/with%20space%20and%0Anewline"},
		{"dir removed", "", func(t *testing.T, dir string) {
			os.RemoveAll(files(dir, "nasty", "a"))
		}, "missing: nasty/a"},
		{"manifest edited", "", func(t *testing.T, dir string) {
			p := filepath.Join(dir, manifest.Name)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(b, []byte("nasty/plain.txt"), []byte("nasty/plain.txX"), 1), 0o644)
		}, "manifest signature invalid"},
		{"signature from another key", "", func(t *testing.T, dir string) {
			mb, _ := os.ReadFile(filepath.Join(dir, manifest.Name))
			sig := other.Sign(manifest.Domain, mb)
			os.WriteFile(filepath.Join(dir, manifest.SigName), []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), 0o644)
		}, "manifest signature invalid"},
		{"re-signed by another key, real key required", v.fingerprint(), func(t *testing.T, dir string) {
			resign(t, dir, swapKey, other)
		}, "not by the required key " + v.fingerprint()},
		{"re-signed, key given without colons", strings.ReplaceAll(v.fingerprint(), ":", ""), func(t *testing.T, dir string) {
			resign(t, dir, swapKey, other)
		}, "not by the required key"},
		{"fingerprint line lies", "", func(t *testing.T, dir string) {
			resign(t, dir, func(m []byte) []byte {
				return []byte(strings.Replace(string(m), base64.StdEncoding.EncodeToString(v.s.Keys().Identity.Public()), base64.StdEncoding.EncodeToString(other.Public()), 1))
			}, other)
		}, "manifest invalid: it names key fingerprint"},
		{"no MANIFEST", "", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, manifest.Name))
		}, "incomplete export: no MANIFEST"},
		{"no MANIFEST.sig", "", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, manifest.SigName))
		}, "incomplete export: no MANIFEST.sig"},
		{"MANIFEST cut short", "", func(t *testing.T, dir string) {
			p := filepath.Join(dir, manifest.Name)
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()/2)
		}, "incomplete export"},
		{"no files dir", "", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, manifest.FilesDir))
		}, "incomplete export: cannot read files"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := mustExport(t, v)
			c.tamper(t, dir)
			res := verify(t, dir, c.key)
			if res.OK() {
				t.Fatalf("a tampered export verifies")
			}
			found := false
			for _, p := range res.Problems {
				found = found || strings.Contains(p, c.want)
			}
			if !found {
				t.Errorf("problems %q do not say %q", res.Problems, c.want)
			}
		})
	}
	t.Run("re-signed by another key, no key required", func(t *testing.T) {
		dir := mustExport(t, v)
		resign(t, dir, swapKey, other)
		res := verify(t, dir, "")
		// Valid as a signed export, but the fingerprint a person compares
		// with the vault's console is not the vault's.
		if !res.OK() || res.Fingerprint == v.fingerprint() {
			t.Errorf("ok %v, fingerprint %s (vault's %s): %q", res.OK(), res.Fingerprint, v.fingerprint(), res.Problems)
		}
	})
}

// TestVerifyOrder: files are hashed several at once, and the problems still
// come in the order of the walk, the same each time.
func TestVerifyOrder(t *testing.T) {
	v := newVault(t, nastyAndRandom)
	dir := mustExport(t, v)
	var changed []string
	filepath.WalkDir(filepath.Join(dir, manifest.FilesDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && len(changed) < 40 {
			if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
				b[0] ^= 1
				os.WriteFile(p, b, 0o644)
				changed = append(changed, p)
			}
		}
		return nil
	})
	first := verify(t, dir, "")
	if len(first.Problems) != len(changed) {
		t.Fatalf("%d files changed, %d problems: %q", len(changed), len(first.Problems), first.Problems)
	}
	for i, p := range changed {
		rel, _ := filepath.Rel(filepath.Join(dir, manifest.FilesDir), p)
		if want := "changed: " + manifest.Escape(filepath.ToSlash(rel)) + " (sha256 differs)"; first.Problems[i] != want {
			t.Fatalf("problem %d: %q, want %q", i, first.Problems[i], want)
		}
	}
	for range 5 {
		if again := verify(t, dir, ""); !slices.Equal(again.Problems, first.Problems) || again.Files != first.Files || again.Bytes != first.Bytes {
			t.Fatalf("a second verify differs: %q", again.Problems)
		}
	}
}

func TestTargetMustBeEmpty(t *testing.T) {
	v := newVault(t, func(dir string) { fixture.Random(dir, 1) })
	target := t.TempDir()
	os.WriteFile(filepath.Join(target, "old"), []byte("x"), 0o644)
	if _, err := v.export(t, target); !errors.Is(err, export.ErrTargetNotEmpty) {
		t.Fatalf("export into a non-empty directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(target, manifest.Dir)); err == nil {
		t.Error("the refused export wrote into the directory")
	}
	// A fresh filesystem's lost+found is no content.
	target = t.TempDir()
	os.Mkdir(filepath.Join(target, "lost+found"), 0o700)
	if _, err := v.export(t, target); err != nil {
		t.Fatalf("export next to lost+found: %v", err)
	}
	// A second export into the same place is refused.
	if _, err := v.export(t, target); !errors.Is(err, export.ErrTargetNotEmpty) {
		t.Fatalf("second export: %v", err)
	}
}

// cancelAfter is a Source that ends the export after n chunks, as a drive
// pulled out would.
type cancelAfter struct {
	export.Source
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Chunk(ctx context.Context, id tree.ID, dst []byte) ([]byte, error) {
	if c.n--; c.n <= 0 {
		c.cancel()
		return nil, context.Canceled
	}
	return c.Source.Chunk(ctx, id, dst)
}

func TestInterruptedExportIsIncomplete(t *testing.T) {
	v := newVault(t, nastyAndRandom)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	target := filepath.Join(t.TempDir(), "usb")
	src := &cancelAfter{Source: v.r, n: 5, cancel: cancel}
	_, err := export.Export(ctx, src, v.root, v.sub, target, export.Snapshot{ID: v.snap.ID}, export.Options{Identity: v.s.Keys().Identity, Workers: 1})
	if err == nil {
		t.Fatal("an interrupted export succeeded")
	}
	res := verify(t, filepath.Join(target, manifest.Dir), "")
	if res.OK() || len(res.Problems) == 0 || !strings.HasPrefix(res.Problems[0], "incomplete export") {
		t.Fatalf("an interrupted export: %q", res.Problems)
	}
}

func TestSubpathAndSingleFile(t *testing.T) {
	v := newVault(t, nastyAndRandom)
	for _, sub := range []string{v.sub + "/nasty/a", v.sub + "/nasty/plain.txt"} {
		target := filepath.Join(t.TempDir(), "usb")
		_, err := export.Export(context.Background(), v.r, v.root, sub, target, export.Snapshot{ID: v.snap.ID}, export.Options{Identity: v.s.Keys().Identity})
		if err != nil {
			t.Fatal(err)
		}
		res := verify(t, filepath.Join(target, manifest.Dir), "")
		if !res.OK() || res.Files == 0 {
			t.Errorf("%s: ok %v, %d files: %q", sub, res.OK(), res.Files, res.Problems)
		}
	}
}

func TestVerifiersCopied(t *testing.T) {
	v := newVault(t, func(dir string) { fixture.Random(dir, 3) })
	bins := t.TempDir()
	for _, n := range export.VerifierNames[:2] {
		os.WriteFile(filepath.Join(bins, n), []byte("binary "+n), 0o755)
	}
	target := filepath.Join(t.TempDir(), "usb")
	rep, err := v.exportCtx(context.Background(), target, bins)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Verifiers) != 2 {
		t.Fatalf("copied %q", rep.Verifiers)
	}
	b, err := os.ReadFile(filepath.Join(rep.Dir, manifest.VerifyDir, export.VerifierNames[1]))
	if err != nil || string(b) != "binary "+export.VerifierNames[1] {
		t.Fatalf("verifier copy: %q %v", b, err)
	}
	readme, _ := os.ReadFile(filepath.Join(rep.Dir, manifest.ReadmeName))
	if !strings.Contains(string(readme), v.fingerprint()) {
		t.Error("README.txt does not give the vault's fingerprint")
	}
}

// dupSource doubles every entry of the trees it serves, as damaged or hostile
// tree data might: the second of each name is refused by the drive, as FAT
// refuses names it cannot hold, and the export must go on without it.
type dupSource struct{ export.Source }

func (d dupSource) Tree(ctx context.Context, id tree.ID) (*tree.Tree, error) {
	t, err := d.Source.Tree(ctx, id)
	if err != nil {
		return nil, err
	}
	out := &tree.Tree{}
	for _, e := range t.Entries {
		out.Entries = append(out.Entries, e, e)
	}
	return out, nil
}

func TestRefusedEntriesAreListedAndSkipped(t *testing.T) {
	v := newVault(t, func(dir string) { fixture.Random(dir, 5) })
	target := filepath.Join(t.TempDir(), "usb")
	rep, err := export.Export(context.Background(), dupSource{v.r}, v.root, v.sub, target, export.Snapshot{ID: v.snap.ID}, export.Options{Identity: v.s.Keys().Identity})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.NotExported) == 0 || rep.Files == 0 {
		t.Fatalf("%d entries, %d not exported, %d files", rep.Entries, len(rep.NotExported), rep.Files)
	}
	for _, p := range rep.NotExported {
		if !strings.Contains(p.Reason, "already has this name") && !strings.Contains(p.Reason, "directory was not exported") {
			t.Errorf("%q: reason %q", p.Path, p.Reason)
		}
	}
	res := verify(t, filepath.Join(target, manifest.Dir), v.fingerprint())
	if !res.OK() || len(res.NotExported) != len(rep.NotExported) || len(res.NotExported) == 0 {
		t.Fatalf("ok %v, %d not exported (exporter: %d): %q", res.OK(), len(res.NotExported), len(rep.NotExported), res.Problems)
	}
}

// TestVFAT exports to a real FAT filesystem on a loop device, mounted as
// the console mounts a stick (the kernel's vfat, or its FUSE driver where
// the kernel has none): names FAT cannot hold and symlinks are listed as
// not exported, the rest verifies.
func TestVFAT(t *testing.T) {
	p := sticktest.New()
	dev := p.Loop(t, 64<<20, "mkfs.vfat")
	drives, err := p.List()
	if len(drives) != 1 || len(drives[0].Partitions) != 1 {
		t.Fatalf("%s listed as %+v (%v)", dev, drives, err)
	}
	m, err := p.Mount(drives[0].Partitions[0], t.TempDir(), false)
	if err != nil {
		if strings.Contains(err.Error(), "FUSE driver") || strings.Contains(err.Error(), "kernel cannot mount") {
			fixture.Need(t, err.Error()+": apt-get install fusefat, or a kernel with vfat")
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount() })
	mnt := m.Root()

	v := newVault(t, func(dir string) {
		nastyAndRandom(dir)
		os.WriteFile(filepath.Join(dir, "colon:name"), []byte("x"), 0o644)
		os.WriteFile(filepath.Join(dir, "Case"), []byte("upper"), 0o644)
		os.WriteFile(filepath.Join(dir, "case"), []byte("lower"), 0o644)
	})
	start := time.Now()
	rep, err := v.export(t, mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("export to vfat: %d files, %d bytes in %v; %d not exported", rep.Files, rep.Bytes, time.Since(start), len(rep.NotExported))
	if rep.ReadBack < rep.Files || len(rep.Mismatches) != 0 {
		t.Errorf("read back %d files of %d; mismatches %v", rep.ReadBack, rep.Files, rep.Mismatches)
	}
	not := map[string]string{}
	for _, p := range rep.NotExported {
		not[p.Path] = p.Reason
	}
	if not["case"] == "" && not["Case"] == "" {
		t.Errorf("neither of \"Case\" and \"case\" is listed as not exported (%d listed: %v)", len(not), not)
	}
	for _, p := range []string{"colon:name", "nasty/link-rel", "nasty/with space and\nnewline"} {
		if not[p] == "" {
			t.Errorf("%q is not listed as not exported (%d listed: %v)", p, len(not), not)
		}
	}
	if r := not["colon:name"]; !strings.Contains(r, "cannot hold this") { // a name (kernel vfat) or, through FUSE, an entry
		t.Errorf("colon:name: reason %q", r)
	}
	res := verify(t, filepath.Join(mnt, manifest.Dir), v.fingerprint())
	if !res.OK() {
		t.Fatalf("the vfat export does not verify: %q", res.Problems)
	}
	if len(res.NotExported) != len(rep.NotExported) {
		t.Errorf("the verifier lists %d entries as not exported, the exporter %d", len(res.NotExported), len(rep.NotExported))
	}
}

func BenchmarkExport(b *testing.B) {
	v := newVault(b, func(dir string) {
		os.MkdirAll(dir, 0o755)
		for i := range 8 {
			fixture.Random(filepath.Join(dir, string(rune('a'+i))), uint64(i))
		}
	})
	var bytes int64
	for b.Loop() {
		rep, err := v.export(b, filepath.Join(b.TempDir(), "usb"))
		if err != nil {
			b.Fatal(err)
		}
		bytes = rep.Bytes
	}
	b.SetBytes(bytes)
}

// TestVerifyLayout: the layout check the console runs after an export
// (whose files were read back while exporting) reads no content: a byte
// changed in place passes it and fails Verify; a file cut short, an extra
// file and a changed MANIFEST fail both.
func TestVerifyLayout(t *testing.T) {
	v := newVault(t, nastyAndRandom)
	for _, c := range []struct {
		name       string
		tamper     func(dir string)
		layoutOK   bool
		wantLayout string
	}{
		{"byte changed", func(dir string) { flipByte(t, filepath.Join(dir, manifest.FilesDir, "nasty", "big.bin")) }, true, ""},
		{"cut short", func(dir string) { os.Truncate(filepath.Join(dir, manifest.FilesDir, "nasty", "big.bin"), 10) }, false, "changed: nasty/big.bin (size 10"},
		{"extra file", func(dir string) { os.WriteFile(filepath.Join(dir, manifest.FilesDir, "added"), nil, 0o644) }, false, "extra: added"},
		{"manifest changed", func(dir string) { flipByte(t, filepath.Join(dir, manifest.Name)) }, false, "manifest"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := mustExport(t, v)
			c.tamper(dir)
			res, err := manifest.VerifyLayout(dir, v.fingerprint())
			if err != nil {
				t.Fatal(err)
			}
			if res.OK() != c.layoutOK || !c.layoutOK && !strings.Contains(strings.Join(res.Problems, "\n"), c.wantLayout) {
				t.Errorf("VerifyLayout: ok %v, problems %q; want ok %v, %q", res.OK(), res.Problems, c.layoutOK, c.wantLayout)
			}
			if res.Bytes != 0 {
				t.Errorf("VerifyLayout hashed %d bytes", res.Bytes)
			}
			if full := verify(t, dir, v.fingerprint()); full.OK() {
				t.Errorf("Verify passes a tampered export")
			}
		})
	}
}

// flipByte changes the middle byte of the file p in place.
func flipByte(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil || len(b) == 0 {
		t.Fatalf("%s: %v (%d bytes)", p, err, len(b))
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
