//go:build linux

// End-to-end tests of the operator CLI contract (DESIGN.md §9, format.md):
// every test runs the real drawbridge binary, built once by TestMain, on
// stores and trees in temporary directories.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"drawbridge/vault/fixture"
	"drawbridge/vault/seal"
	"drawbridge/vault/store"
)

// bin is the drawbridge binary under test.
var bin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "drawbridge-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin = filepath.Join(dir, "drawbridge")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building drawbridge: %v\n", err)
		return 1
	}
	return m.Run()
}

// result is what one drawbridge invocation did.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int // exit status; -1 when killed by a signal
}

func (r result) String() string {
	return fmt.Sprintf("drawbridge %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// baseEnv is the test's environment without any DRAWBRIDGE_ variable.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DRAWBRIDGE_") {
			env = append(env, kv)
		}
	}
	return env
}

// command prepares drawbridge with env added to the base environment;
// stdin is /dev/null, so never a terminal.
func command(ctx context.Context, env []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(baseEnv(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	return cmd, &out, &errOut
}

func runEnv(t testing.TB, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd, out, errOut := command(ctx, env, args...)
	err := cmd.Run()
	r := result{args: args, stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run drawbridge %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// vault is a store made by init in a test's temporary directory.
type vault struct {
	t    testing.TB
	dir  string // the store
	pass string // the passphrase file
}

const passphrase = "correct horse battery staple"

// cheapKDF makes unlocking fast. Most tests unlock the store dozens of
// times, and at the default argon2id cost (a quarter of a second and 64 MiB
// each) unlocking would take most of their run time. The KDF parameters
// live in keys.json, so only the store's creation differs: newVaultCLI
// stores come from `drawbridge init` with the default cost.
var cheapKDF = seal.KDFParams{Time: 1, MemoryKiB: 1 << 10, Threads: 1}

// newVault creates a store with a cheap KDF. Its sealed files are unsealed
// before the temporary directory is removed.
func newVault(t testing.TB) *vault {
	t.Helper()
	v := prepareVault(t)
	s, err := store.Init(v.dir, []byte(passphrase), store.InitOptions{KDF: cheapKDF})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return v
}

// newVaultCLI creates a store with `drawbridge init`.
func newVaultCLI(t testing.TB) *vault {
	t.Helper()
	v := prepareVault(t)
	r := v.mustRun("init")
	if !strings.Contains(r.stdout, "\nssh-ed25519 ") {
		t.Fatalf("init does not print the SSH key on a line of its own:\n%s", r)
	}
	return v
}

func prepareVault(t testing.TB) *vault {
	t.Helper()
	tmp := t.TempDir()
	v := &vault{t: t, dir: filepath.Join(tmp, "store"), pass: filepath.Join(tmp, "passphrase")}
	if err := os.WriteFile(v.pass, []byte(passphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fixture.Unseal(v.dir) })
	return v
}

// withStore returns a vault with v's passphrase for another store directory
// (a copy), used by t.
func (v *vault) withStore(t testing.TB, dir string) *vault {
	t.Cleanup(func() { fixture.Unseal(dir) })
	return &vault{t: t, dir: dir, pass: v.pass}
}

func (v *vault) env() []string {
	return []string{"DRAWBRIDGE_STORE=" + v.dir, "DRAWBRIDGE_PASSPHRASE_FILE=" + v.pass}
}

// run runs drawbridge on the store with the passphrase file configured.
func (v *vault) run(args ...string) result {
	v.t.Helper()
	return runEnv(v.t, v.env(), args...)
}

// runNoPass runs drawbridge on the store with no passphrase configured.
func (v *vault) runNoPass(args ...string) result {
	v.t.Helper()
	return runEnv(v.t, []string{"DRAWBRIDGE_STORE=" + v.dir}, args...)
}

func (v *vault) mustRun(args ...string) result {
	v.t.Helper()
	r := v.run(args...)
	if r.code != 0 {
		v.t.Fatalf("want exit 0:\n%s", r)
	}
	return r
}

// backupJSON is what `backup --json` prints.
type backupJSON struct {
	ID          string `json:"id"`
	Source      string `json:"source"`
	Files       int64  `json:"files"`
	Bytes       int64  `json:"bytes"`
	NewBytes    int64  `json:"new_bytes"`
	StoredBytes int64  `json:"stored_bytes"`
	Status      string `json:"status"`
}

// backup backs up paths as one snapshot of source, without a passphrase.
func (v *vault) backup(source string, paths ...string) backupJSON {
	v.t.Helper()
	r := v.runNoPass(append([]string{"backup", "--json", "--source", source}, paths...)...)
	if r.code != 0 {
		v.t.Fatalf("backup failed:\n%s", r)
	}
	var b backupJSON
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil {
		v.t.Fatalf("backup --json: %v\n%s", err, r)
	}
	if len(b.ID) != 64 || b.Source != source || b.Status != "ok" {
		v.t.Fatalf("backup --json: unexpected %+v", b)
	}
	return b
}

// snapJSON is one element of `snapshots --json`.
type snapJSON struct {
	ID       string    `json:"id"`
	Source   string    `json:"source"`
	Time     time.Time `json:"time"`
	Files    int64     `json:"files"`
	Bytes    int64     `json:"bytes"`
	NewBytes int64     `json:"new_bytes"`
	Status   string    `json:"status"`
}

func (v *vault) snapshots() []snapJSON {
	v.t.Helper()
	r := v.runNoPass("snapshots", "--json")
	if r.code != 0 {
		v.t.Fatalf("snapshots failed:\n%s", r)
	}
	var list []snapJSON
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		v.t.Fatalf("snapshots --json: %v\n%s", err, r)
	}
	return list
}

// verifyOK runs verify (without a passphrase) and wants exit 0.
func (v *vault) verifyOK() {
	v.t.Helper()
	if r := v.runNoPass("verify"); r.code != 0 {
		v.t.Fatalf("verify wants exit 0:\n%s", r)
	}
}

// restoreCompare restores snap into a fresh directory and compares each
// source path with its copy under the target (backup stores absolute
// paths).
func (v *vault) restoreCompare(snap string, srcs ...string) {
	v.t.Helper()
	target := filepath.Join(v.t.TempDir(), "restore")
	v.mustRun("restore", snap, "--target", target)
	for _, src := range srcs {
		if diffs := fixture.Compare(src, filepath.Join(target, src)); len(diffs) > 0 {
			v.t.Errorf("restore of %s differs from %s:\n%s", snap, src, strings.Join(diffs, "\n"))
		}
	}
}

// compareContents compares the trees under a and b but not the metadata of
// b itself (a restore target keeps its own).
func compareContents(a, b string) []string {
	var out []string
	for _, d := range fixture.Compare(a, b) {
		if !strings.HasPrefix(d, `".": `) {
			out = append(out, d)
		}
	}
	return out
}

// storeSize is the sum of the sizes of the store's files outside index/,
// tmp/ and the lock file.
func storeSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && (rel == "index" || rel == "tmp") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && rel != "lock" {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// packs lists the store's pack files by id.
func packs(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	matches, err := filepath.Glob(filepath.Join(dir, "packs", "*", "*.pack"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range matches {
		out[strings.TrimSuffix(filepath.Base(m), ".pack")] = m
	}
	return out
}

// copyTree copies the regular files and directories under src to dst,
// keeping permission bits (a copy of a store is not sealed).
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, fi.Mode().Perm()|0o700)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, b, 0o600); err != nil {
				return err
			}
			return os.Chmod(target, fi.Mode().Perm())
		}
		return fmt.Errorf("%s: unexpected file type %v", p, d.Type())
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

// Generated data: incompressible random bytes, and text made of words that
// compresses about as well as prose does.

var words = func() [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	const letters = "eeeeeettttaaaooiinnsshrdlucmwfgypbvkjxqz"
	w := make([][]byte, 1024)
	for i := range w {
		b := make([]byte, 2+r.IntN(8))
		for j := range b {
			b[j] = letters[r.IntN(len(letters))]
		}
		w[i] = b
	}
	return w
}()

func fillText(r *rand.ChaCha8, p []byte) {
	for i := 0; i < len(p); {
		x := r.Uint64()
		for k := 0; k < 6 && i < len(p); k++ {
			i += copy(p[i:], words[x&1023])
			x >>= 10
			if i < len(p) {
				p[i] = " \n"[x&1]
				x >>= 1
				i++
			}
		}
	}
}

func seeded(a, b uint64) *rand.ChaCha8 {
	var seed [32]byte
	for i := 0; i < 8; i++ {
		seed[i] = byte(a >> (8 * i))
		seed[8+i] = byte(b >> (8 * i))
	}
	return rand.NewChaCha8(seed)
}

// dataTree writes files of random sizes up to maxFile, about half random
// bytes and half text, until they add up to at least total bytes. It
// returns the number of files and bytes written.
func dataTree(t testing.TB, dir string, seed uint64, total, maxFile int64) (files, size int64) {
	t.Helper()
	r := seeded(seed, 0)
	pick := rand.New(rand.NewPCG(seed, 1))
	for i := 0; size < total; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%7))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		n := 1 + pick.Int64N(maxFile)
		buf := make([]byte, n)
		if pick.IntN(2) == 0 {
			r.Read(buf)
		} else {
			fillText(r, buf)
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
		files++
		size += n
	}
	return files, size
}

// smallFiles writes n files of 1 byte to 8 KiB of random bytes, a thousand
// to a directory: a backup of many small files takes a while even when
// every chunk is already stored.
func smallFiles(t testing.TB, dir string, seed uint64, n int) (size int64) {
	t.Helper()
	r := seeded(seed, 1)
	pick := rand.New(rand.NewPCG(seed, 2))
	buf := make([]byte, 8<<10)
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("s%03d", i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		p := buf[:1+pick.IntN(len(buf))]
		r.Read(p)
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d", i%1000)), p, 0o644); err != nil {
			t.Fatal(err)
		}
		size += int64(len(p))
	}
	return size
}
