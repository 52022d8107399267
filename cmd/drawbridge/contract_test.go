//go:build linux

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"drawbridge/vault/fixture"
	"drawbridge/vault/store"
)

// TestInit: init creates a store in a missing or empty directory, prints
// the SSH key on a line of its own, and refuses anything else.
func TestInit(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	pass := filepath.Join(tmp, "passphrase")
	if err := os.WriteFile(pass, []byte(passphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(tmp, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fixture.Unseal(empty) })
	r := runEnv(t, []string{"DRAWBRIDGE_PASSPHRASE_FILE=" + pass}, "init", "--store", empty, "--min-retention", "30d")
	if r.code != 0 {
		t.Fatalf("init in an empty directory:\n%s", r)
	}
	ssh := 0
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, "ssh-ed25519 ") && len(strings.Fields(line)) >= 2 {
			ssh++
		}
	}
	if ssh != 1 {
		t.Errorf("init prints %d lines starting with 'ssh-ed25519 ', want 1:\n%s", ssh, r)
	}
	v := &vault{t: t, dir: empty, pass: pass}
	if s := v.snapshots(); len(s) != 0 {
		t.Errorf("new store lists snapshots %v", s)
	}
	journal := func() []string {
		ents, err := os.ReadDir(filepath.Join(empty, "journal"))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	// The store works, the restore passphrase at init's (default) cost.
	tree := filepath.Join(tmp, "tree")
	fixture.Random(tree, 100)
	v.backup("first", tree)
	v.restoreCompare("first/latest", tree)
	before := journal()

	// Init again on the store, and on a directory holding anything.
	if r := v.run("init"); r.code != 1 || r.stdout != "" {
		t.Errorf("init on an existing store: want exit 1 and nothing on stdout:\n%s", r)
	}
	if after := journal(); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("init on an existing store changed the journal: %v -> %v", before, after)
	}
	v.verifyOK()
	full := filepath.Join(tmp, "full")
	if err := os.MkdirAll(filepath.Join(full, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fixture.Unseal(full) })
	r = runEnv(t, []string{"DRAWBRIDGE_STORE=" + full, "DRAWBRIDGE_PASSPHRASE_FILE=" + pass}, "init")
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("init on a non-empty directory: want exit 1, nothing on stdout and 'not empty':\n%s", r)
	}
	ents, err := os.ReadDir(full)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		t.Errorf("init on a non-empty directory left %d entries in it, want the 2 it had", len(ents))
	}
	if b, err := os.ReadFile(filepath.Join(full, "keep")); err != nil || string(b) != "mine" {
		t.Errorf("init changed a file it found: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(full, "sub")); len(ents) != 0 {
		t.Errorf("init wrote into a subdirectory of a non-empty directory")
	}

	// Init needs a passphrase; without one (stdin is not a terminal) it
	// creates nothing.
	none := filepath.Join(tmp, "none")
	r = runEnv(t, []string{"DRAWBRIDGE_STORE=" + none}, "init")
	if r.code != 1 || !strings.Contains(r.stderr, "passphrase") {
		t.Errorf("init without a passphrase: want exit 1 and a message about the passphrase:\n%s", r)
	}
	if ents, err := os.ReadDir(none); err == nil && len(ents) > 0 {
		t.Errorf("init without a passphrase wrote %d entries", len(ents))
	}
}

// TestJSONOutput: snapshots --json is an array with the documented fields,
// [] on an empty store; journal --json is JSON Lines.
func TestJSONOutput(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	r := v.runNoPass("snapshots", "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("snapshots --json on an empty store: want [] and exit 0:\n%s", r)
	}
	src := t.TempDir()
	fixture.Random(filepath.Join(src, "a"), 101)
	fixture.Random(filepath.Join(src, "b"), 102)
	b1 := v.backup("a", filepath.Join(src, "a"))
	b2 := v.backup("b", filepath.Join(src, "b"))
	b3 := v.backup("a", filepath.Join(src, "a"), filepath.Join(src, "b"))

	r = v.runNoPass("snapshots", "--json")
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil || r.code != 0 {
		t.Fatalf("snapshots --json: %v\n%s", err, r)
	}
	if len(raw) != 3 {
		t.Fatalf("snapshots --json lists %d snapshots, want 3", len(raw))
	}
	for _, el := range raw {
		for _, k := range []string{"id", "source", "time", "files", "bytes"} {
			if _, ok := el[k]; !ok {
				t.Errorf("snapshots --json element lacks %q: %v", k, el)
			}
		}
	}
	snaps := v.snapshots()
	for i, want := range []backupJSON{b1, b2, b3} {
		s := snaps[i]
		if s.ID != want.ID || s.Source != want.Source || s.Files != want.Files || s.Bytes != want.Bytes || s.Time.IsZero() {
			t.Errorf("snapshot %d is %+v; backup said %+v", i, s, want)
		}
		if i > 0 && s.Time.Before(snaps[i-1].Time) {
			t.Errorf("snapshots are not oldest first: %v before %v", snaps[i-1].Time, s.Time)
		}
	}
	r = v.runNoPass("snapshots", "--json", "--source", "b")
	var onlyB []snapJSON
	if err := json.Unmarshal([]byte(r.stdout), &onlyB); err != nil || len(onlyB) != 1 || onlyB[0].ID != b2.ID {
		t.Errorf("snapshots --source b: %v\n%s", err, r)
	}
	r = v.runNoPass("snapshots", "--source", "nobody", "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("snapshots of a source without snapshots: want []:\n%s", r)
	}

	r = v.runNoPass("journal", "--json")
	if r.code != 0 {
		t.Fatalf("journal --json:\n%s", r)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	types := map[string]int{}
	for i, line := range lines {
		var rec struct {
			Seq     *uint64 `json:"seq"`
			Time    *string `json:"time"`
			Type    *string `json:"type"`
			Message *string `json:"message"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("journal --json line %d: %v: %s", i+1, err, line)
		}
		if rec.Seq == nil || rec.Time == nil || rec.Type == nil || rec.Message == nil {
			t.Fatalf("journal --json line %d lacks seq, time, type or message: %s", i+1, line)
		}
		if *rec.Seq != uint64(i+1) {
			t.Errorf("journal --json line %d has seq %d", i+1, *rec.Seq)
		}
		if _, err := time.Parse(time.RFC3339Nano, *rec.Time); err != nil {
			t.Errorf("journal --json line %d: time: %v", i+1, err)
		}
		if *rec.Message == "" {
			t.Errorf("journal --json line %d has an empty message", i+1)
		}
		types[*rec.Type]++
	}
	if types["init"] != 1 || types["snapshot"] != 3 {
		t.Errorf("journal record types %v: want one init and three snapshots", types)
	}
}

// TestUsage: bad command lines exit 2.
func TestUsage(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	src := t.TempDir()
	for _, args := range [][]string{
		{},
		{"no-such-command"},
		{"snapshots", "--no-such-flag"},
		{"backup", "--source", "x", "--no-such-flag", src},
		{"backup", src},
		{"backup", "--source", "x"},
		{"backup", "--source"},
		{"restore", "latest"},
		{"restore", "--target", filepath.Join(src, "t")},
		{"restore", "latest", "--target"},
		{"verify", "--deep=yes"},
		{"index"},
		{"ls"},
		{"--no-such-flag", "snapshots"},
		{"--deep", "snapshots"}, // a flag of another command
		{"--store", v.dir},
	} {
		r := v.run(args...)
		if r.code != 2 {
			t.Errorf("want exit 2:\n%s", r)
		}
	}
	// No store at all.
	if r := runEnv(t, nil, "snapshots"); r.code != 2 {
		t.Errorf("no store given: want exit 2:\n%s", r)
	}
	// Not a store: the work fails.
	if r := runEnv(t, []string{"DRAWBRIDGE_STORE=" + src}, "snapshots"); r.code != 1 {
		t.Errorf("a directory that is no store: want exit 1:\n%s", r)
	}
}

// TestFlagsFirst: flags may come before the command too.
func TestFlagsFirst(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	r := runEnv(t, nil, "--store", v.dir, "--json", "snapshots")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("want [] and exit 0:\n%s", r)
	}
	src := t.TempDir()
	fixture.Random(filepath.Join(src, "f"), 103)
	v.backup("a", src)
	target := filepath.Join(t.TempDir(), "out")
	v.mustRun("--target", target, "restore", "latest")
	if _, err := os.Stat(filepath.Join(target, src, "f")); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotNames: ids by prefix of 8+ hex digits, latest, SOURCE/latest;
// unknown and ambiguous names exit 1.
func TestSnapshotNames(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	src := t.TempDir()
	mk := func(name string) string {
		d := filepath.Join(src, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name+".txt"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	alpha := v.backup("alpha", mk("alpha"))
	beta := v.backup("beta", mk("beta"))
	mk("alpha2")
	alpha2 := v.backup("alpha", filepath.Join(src, "alpha2"))

	lists := func(name, file string) {
		t.Helper()
		r := v.run("ls", name)
		if r.code != 0 || !strings.Contains(r.stdout, file) {
			t.Errorf("ls %s should list %s:\n%s", name, file, r)
		}
		for _, other := range []string{"alpha.txt", "beta.txt", "alpha2.txt"} {
			if other != file && strings.Contains(r.stdout, other) {
				t.Errorf("ls %s lists %s too:\n%s", name, other, r)
			}
		}
	}
	lists("latest", "alpha2.txt")
	lists("alpha/latest", "alpha2.txt")
	lists("beta/latest", "beta.txt")
	lists(alpha.ID[:8], "alpha.txt")
	lists(strings.ToUpper(beta.ID[:10]), "beta.txt")
	lists(alpha2.ID, "alpha2.txt")
	lists(alpha.ID[:8]+":"+filepath.Join(src, "alpha"), "alpha.txt")

	target := filepath.Join(t.TempDir(), "t")
	v.mustRun("restore", beta.ID[:8], "--target", target)
	if b, err := os.ReadFile(filepath.Join(target, src, "beta", "beta.txt")); err != nil || string(b) != "beta" {
		t.Errorf("restore by prefix: %q %v", b, err)
	}

	// Unknown names.
	unknown := "00000000"
	for _, s := range []snapJSON{{ID: alpha.ID}, {ID: beta.ID}, {ID: alpha2.ID}} {
		if strings.HasPrefix(s.ID, unknown) {
			unknown = "ffffffff"
		}
	}
	for _, name := range []string{unknown, "gamma/latest", "zzzzzzzz", alpha.ID + "00"} {
		r := v.run("ls", name)
		if r.code != 1 {
			t.Errorf("ls %s: want exit 1:\n%s", name, r)
		}
		r = v.run("restore", name, "--target", filepath.Join(t.TempDir(), "t"))
		if r.code != 1 {
			t.Errorf("restore %s: want exit 1:\n%s", name, r)
		}
	}

	// An ambiguous prefix needs two ids that share 8 hex digits: a
	// snapshot record, signed with the store's identity as the store would,
	// whose id shares the first 10 digits of alpha's.
	twin := alpha.ID[:10] + strings.Repeat("0", 54)
	if alpha.ID[10] == '0' {
		twin = alpha.ID[:10] + strings.Repeat("1", 54)
	}
	r := v.runNoPass("journal", "--json")
	var rec map[string]any
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var l struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		if l.Type == "snapshot" && l.Data["id"] == alpha.ID {
			rec = l.Data
		}
	}
	if rec == nil {
		t.Fatalf("no journal record for snapshot %s:\n%s", alpha.ID, r)
	}
	rec["id"] = twin
	s, err := store.Open(v.dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Journal().Append(s.Keys().Identity, time.Now(), "snapshot", "twin of "+alpha.ID[:12], rec)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{alpha.ID[:8], alpha.ID[:10]} {
		r := v.run("ls", name)
		if r.code != 1 || !strings.Contains(r.stderr, "ambiguous") {
			t.Errorf("ls %s matches two snapshots: want exit 1 and 'ambiguous':\n%s", name, r)
		}
		r = v.run("restore", name, "--target", filepath.Join(t.TempDir(), "t"))
		if r.code != 1 {
			t.Errorf("restore %s matches two snapshots: want exit 1:\n%s", name, r)
		}
	}
	lists(alpha.ID[:11], "alpha.txt")
}
