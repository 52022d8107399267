package pull

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/agent"
	"drawbridge/vault/agentproto"
	"drawbridge/vault/config"
	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/internal/sshtest"
	"drawbridge/vault/store"
	"drawbridge/vault/store/storetest"
	"drawbridge/vault/tree"
)

func buildAgent(t testing.TB) string {
	return fixture.Build(t, "drawbridge/cmd/drawbridge-agent")[0]
}

func buildFakeAgent(t testing.TB) string {
	return fixture.Build(t, "./testdata/fakeagent")[0]
}

// agentHost starts a source host whose forced command for the vault's key
// is cmd.
func agentHost(t testing.TB, s *store.Store, cmd string) *sshtest.Host {
	t.Helper()
	return sshtest.Start(t, sshtest.Options{AuthorizedKeys: []string{keyLine(s, `restrict,command="`+cmd+`"`)}})
}

func agentSource(t testing.TB, h *sshtest.Host, name string, paths ...string) config.Source {
	src := sourceFor(t, h, name, config.KindAgent)
	src.Paths = paths
	return src
}

// randomTree writes files of the given sizes, random content, under dir and
// returns their paths.
func randomTree(t testing.TB, dir string, seed uint64, sizes ...int) []string {
	t.Helper()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	var paths []string
	for i, n := range sizes {
		p := filepath.Join(dir, fmt.Sprintf("d%d", i%7), fmt.Sprintf("f%04d", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		r.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func sum(sizes []int) int64 {
	var n int64
	for _, s := range sizes {
		n += int64(s)
	}
	return n
}

// dirBytes is the size of the files under dir.
func dirBytes(t testing.TB, dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// compareTree returns the differences between the tree at src and its
// restore at target. A restore leaves the target's own metadata alone, so
// its mode is the source's first.
func compareTree(t testing.TB, src, target string) []string {
	t.Helper()
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(target, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	return fixture.Compare(src, target)
}

// subtree returns the tree id of directory p (absolute) in the snapshot.
func subtree(t testing.TB, s *store.Store, sn *store.Snapshot, p string) tree.ID {
	t.Helper()
	r, err := s.Unlock(testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	id := storetest.Root(t, sn)
	for _, name := range strings.Split(strings.Trim(p, "/"), "/") {
		tr, err := r.Tree(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range tr.Entries {
			if e.Name == name && e.Kind == tree.Dir {
				id, found = e.Subtree, true
			}
		}
		if !found {
			t.Fatalf("snapshot %s has no directory %q on the way to %s", sn.ID[:12], name, p)
		}
	}
	return id
}

func mustPull(t testing.TB, s *store.Store, src config.Source, h *sshtest.Host) *store.Snapshot {
	t.Helper()
	res := pullOne(t, s, src)
	if res.Err != nil {
		t.Fatalf("pull %s: %v\n%s", src.Name, res.Err, h.Log())
	}
	return res.Snapshot
}

// A tree with every kind of entry, pulled and restored, is the tree; its
// subtree is the very tree a local backup stores; a second pull of the
// unchanged tree reads no file.
func TestAgentPullRoundTrip(t *testing.T) {
	s := newStore(t)
	h := agentHost(t, s, buildAgent(t))
	src := filepath.Join(t.TempDir(), "src")
	fixture.Nasty(src)

	sn := mustPull(t, s, agentSource(t, h, "nasty", src), h)
	if sn.Kind != config.KindAgent || sn.Status != "ok" || sn.Errors != 0 || len(sn.Paths) != 1 || sn.Paths[0] != src {
		t.Fatalf("snapshot %+v", sn)
	}
	target := restoreSnap(t, s, sn, src)
	if d := compareTree(t, src, target); len(d) > 0 {
		t.Fatalf("restored tree differs from the source:\n%s", strings.Join(d, "\n"))
	}
	local, err := s.Backup(context.Background(), "local", []string{src}, store.BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := subtree(t, s, sn, src), subtree(t, s, local, src); a != b {
		t.Errorf("the pulled tree %x differs from the local backup's %x", a[:6], b[:6])
	}

	tx := h.SourceTxBytes()
	again := mustPull(t, s, agentSource(t, h, "nasty", src), h)
	sent := h.SourceTxBytes() - tx
	if a, b := subtree(t, s, sn, src), subtree(t, s, again, src); a != b {
		t.Errorf("second pull of an unchanged tree: %x, first %x", b[:6], a[:6])
	}
	// Directories on the way changed (the test made directories beside
	// src): their trees are all that is new.
	if again.NewBytes > 4096 || sent > 64<<10 {
		t.Errorf("second pull of an unchanged tree: %d new bytes, %d bytes sent by the source", again.NewBytes, sent)
	}
	verifyClean(t, s)
}

// After 3 files of a 50 MB tree change, the next pull moves less than 1% of
// the tree over the link.
func TestAgentPullIncremental(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB tree")
	}
	s := newStore(t)
	h := agentHost(t, s, buildAgent(t))
	src := filepath.Join(t.TempDir(), "src")
	sizes := []int{8 << 20, 8 << 20, 8 << 20, 8 << 20, 8 << 20}
	for range 200 {
		sizes = append(sizes, 50<<10)
	}
	files := randomTree(t, src, 1, sizes...)
	total := sum(sizes)

	tx := h.SourceTxBytes()
	var first *store.Snapshot
	d := since(func() { first = mustPull(t, s, agentSource(t, h, "tree", src), h) })
	sent := h.SourceTxBytes() - tx
	t.Logf("first pull: %d bytes in %.2f s, %.1f MB/s; the source sent %d bytes", total, d.Seconds(), float64(total)/1e6/d.Seconds(), sent)
	if first.Bytes != total {
		t.Errorf("first pull: snapshot of %d bytes, the tree has %d", first.Bytes, total)
	}

	// The same tree backed up locally into a store of its own, for speed.
	s2 := newStore(t)
	d = since(func() {
		if _, err := s2.Backup(context.Background(), "local", []string{src}, store.BackupOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("local backup of the same tree: %.2f s, %.1f MB/s", d.Seconds(), float64(total)/1e6/d.Seconds())

	// A few bytes in the middle of a big file, a small file rewritten, a
	// small file grown.
	f, err := os.OpenFile(files[2], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("changed in the middle"), 3<<20+12345); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(files[10], []byte(strings.Repeat("rewritten ", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err = os.OpenFile(files[20], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte(strings.Repeat("appended ", 100)))
	f.Close()
	total = dirBytes(t, src)

	tx = h.SourceTxBytes()
	second := mustPull(t, s, agentSource(t, h, "tree", src), h)
	sent = h.SourceTxBytes() - tx
	t.Logf("second pull after 3 changed files: the source sent %d bytes of a %d-byte tree (%.3f%%)", sent, total, 100*float64(sent)/float64(total))
	if sent*100 >= uint64(total) {
		t.Errorf("second pull moved %d bytes, 1%% of the tree is %d", sent, total/100)
	}
	target := restoreSnap(t, s, second, src)
	if d := compareTree(t, src, target); len(d) > 0 {
		t.Fatalf("restored tree differs from the source:\n%s", strings.Join(d, "\n"))
	}
}

// A second source with the same files is asked for every chunk (it learns
// nothing of the first source's), and the store keeps them once.
func TestAgentPullTwoSources(t *testing.T) {
	if testing.Short() {
		t.Skip("20 MB tree, pulled twice")
	}
	s, dir := newStoreAt(t, 4<<20)
	h := agentHost(t, s, buildAgent(t))
	src := filepath.Join(t.TempDir(), "src")
	sizes := []int{6 << 20, 6 << 20, 4 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20}
	randomTree(t, src, 3, sizes...)
	total := sum(sizes)
	packs := filepath.Join(dir, "packs")

	tx := h.SourceTxBytes()
	mustPull(t, s, agentSource(t, h, "a", src), h)
	sentA := h.SourceTxBytes() - tx
	before := dirBytes(t, packs)

	tx = h.SourceTxBytes()
	b := mustPull(t, s, agentSource(t, h, "b", src), h)
	sentB := h.SourceTxBytes() - tx
	grown := dirBytes(t, packs) - before
	t.Logf("tree %d bytes: source a sent %d, source b sent %d; the packs grew by %d bytes for b", total, sentA, sentB, grown)
	if sentB < uint64(total)*9/10 {
		t.Errorf("source b sent %d bytes of a %d-byte tree: it was told what source a stored", sentB, total)
	}
	if grown > total/100+64<<10 {
		t.Errorf("the packs grew by %d bytes for a second copy of a %d-byte tree", grown, total)
	}
	// Only trees on the way may be new (other tests make directories in
	// the temporary directory).
	if b.NewBytes > 4096 {
		t.Errorf("source b's snapshot has %d new bytes", b.NewBytes)
	}
}

// newStoreAt is newStore with packs of packTarget bytes; it also returns
// the store's directory.
func newStoreAt(t testing.TB, packTarget int) (*store.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	return storetest.New(t, dir, string(testPass), store.InitOptions{PackTarget: packTarget}), dir
}

// A pull cut off after some packs are sealed keeps them: the next pull
// transfers about the rest.
func TestAgentPullResume(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MB tree")
	}
	s, dir := newStoreAt(t, 1<<20)
	h := agentHost(t, s, buildAgent(t))
	src := filepath.Join(t.TempDir(), "src")
	var sizes []int
	for range 16 {
		sizes = append(sizes, 4<<20)
	}
	randomTree(t, src, 4, sizes...)
	total := sum(sizes)
	cfg := &config.Config{Path: "test.toml", Sources: []config.Source{agentSource(t, h, "cut", src)}}

	cutThenResume(t, s, dir, cfg, h, src, total)
}

// cutThenResume pulls cfg's one source (the tree src of total bytes, on h)
// into s, whose directory is dir, and cuts the pull off once the sealed
// packs hold two fifths of the tree: no snapshot may be left. It pulls
// again and checks that the source sent about what was not stored yet, and
// that the snapshot restores to src.
func cutThenResume(t *testing.T, s *store.Store, dir string, cfg *config.Config, h *sshtest.Host, src string, total int64) *store.Snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tx := h.SourceTxBytes()
	done := make(chan []Result, 1)
	go func() { done <- Run(ctx, s, cfg, "", Options{Log: testLog(t)}) }()
	packs := filepath.Join(dir, "packs")
	var res []Result
wait:
	for {
		select {
		case res = <-done:
			break wait
		case <-time.After(5 * time.Millisecond):
			if dirBytes(t, packs) >= total*2/5 {
				cancel()
			}
		}
	}
	sent1 := h.SourceTxBytes() - tx
	if res[0].Err == nil {
		t.Fatal("the pull finished before it was cut off")
	}
	kept := dirBytes(t, packs)
	if n := len(snapshots(t, s)); n != 0 {
		t.Fatalf("%d snapshots after a pull that was cut off", n)
	}
	t.Logf("cut off: %v; the source had sent %d bytes, %d bytes are in sealed packs", res[0].Err, sent1, kept)

	tx = h.SourceTxBytes()
	sn := mustPull(t, s, cfg.Sources[0], h)
	sent2 := h.SourceTxBytes() - tx
	t.Logf("the next pull: the source sent %d bytes of a %d-byte tree", sent2, total)
	if rest := total - kept; sent2 > uint64(rest+total/10) {
		t.Errorf("the next pull moved %d bytes; %d were not stored yet", sent2, rest)
	}
	target := restoreSnap(t, s, sn, src)
	if d := compareTree(t, src, target); len(d) > 0 {
		t.Fatalf("restored tree differs from the source:\n%s", strings.Join(d, "\n"))
	}
	verifyClean(t, s)
	return sn
}

// The agent pulls a tree it cannot write to.
func TestAgentPullReadOnly(t *testing.T) {
	sshtest.Require(t)
	src := filepath.Join(t.TempDir(), "src")
	fixture.Nasty(src)
	ro := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--bind", src, ro}, {"-o", "remount,bind,ro", ro}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			exec.Command("umount", ro).Run()
			t.Fatalf("mount %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("umount", ro).Run() })
	if err := os.WriteFile(filepath.Join(ro, "probe"), nil, 0o600); err == nil {
		t.Fatal("the read-only mount is writable")
	}

	// Started after the mount, so that the source's namespace has it.
	s := newStore(t)
	h := agentHost(t, s, buildAgent(t))
	sn := mustPull(t, s, agentSource(t, h, "ro", ro), h)
	target := restoreSnap(t, s, sn, ro)
	if d := compareTree(t, src, target); len(d) > 0 {
		t.Fatalf("restored tree differs from the source:\n%s", strings.Join(d, "\n"))
	}
}

// heapPeak samples the heap until stop is called and returns its peak.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-quit:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	return func() uint64 {
		close(quit)
		wg.Wait()
		return peak.Load()
	}
}

// fakeModes are the ways testdata/fakeagent breaks the protocol, and what
// the vault must say.
var fakeModes = []struct {
	mode string
	want error  // wrapped by the error, when set
	text string // in the error, when set
}{
	{"exit", errAgentGone, "cannot speak this version"},
	{"zeros", agentproto.ErrProtocol, "frame length 0"},
	{"yes", agentproto.ErrProtocol, "frame length"},
	{"garbage", agentproto.ErrProtocol, ""},
	{"frame-4g", agentproto.ErrProtocol, "frame length 4294967295"},
	{"frame-2^40", agentproto.ErrProtocol, "frame length 0"},
	{"field-2^40", agentproto.ErrProtocol, "length 1099511627776"},
	{"noroot", agentproto.ErrProtocol, "outside any directory"},
	{"dotdot", agentproto.ErrProtocol, `".."`},
	{"slash", agentproto.ErrProtocol, "not in"},
	{"order", agentproto.ErrProtocol, "increasing order"},
	{"gap", agentproto.ErrProtocol, "ENTRY id"},
	{"outside", agentproto.ErrProtocol, "neither under a root"},
	{"early-end", agentproto.ErrProtocol, "END while"},
	{"badhash", agentproto.ErrProtocol, "does not match"},
	{"unwanted", agentproto.ErrProtocol, "not wanted"},
	{"dup-data", agentproto.ErrProtocol, "came already"},
	{"oversize", agentproto.ErrProtocol, "more than its 100 bytes"},
	{"files", agentproto.ErrProtocol, "files listed and not finished"},
	{"open-segments", agentproto.ErrProtocol, "segments are open"},
	{"segment-order", agentproto.ErrProtocol, "not the segment being sent"},
	{"entries", errAgentHeld, ""},
	{"stall", errAgentIdle, ""},
}

// Every hostile agent fails the pull within its time, commits nothing,
// leaves the earlier snapshot as it was, and the vault's heap stays small
// even when the agent never stops sending.
func TestAgentPullHostile(t *testing.T) {
	s := newStore(t)
	// An earlier snapshot of the same source, by the real agent.
	good := agentHost(t, s, buildAgent(t))
	data := filepath.Join(t.TempDir(), "data")
	fixture.Random(data, 5)
	victim := agentSource(t, good, "victim", data)
	earlier := mustPull(t, s, victim, good)

	modeFile := filepath.Join(t.TempDir(), "mode")
	h := agentHost(t, s, buildFakeAgent(t)+" "+modeFile)
	src := agentSource(t, h, "victim", "/data")
	src.Timeout = 2 * time.Second
	for _, c := range fakeModes {
		t.Run(c.mode, func(t *testing.T) {
			if testing.Short() && (c.mode == "entries" || c.mode == "stall") {
				t.Skip("long")
			}
			if err := os.WriteFile(modeFile, []byte(c.mode), 0o600); err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			stop := heapPeak()
			var res Result
			d := since(func() { res = pullOne(t, s, src) })
			peak := stop()
			t.Logf("failed in %v, heap peak %d MiB: %v", d.Round(time.Millisecond), peak>>20, res.Err)
			switch {
			case res.Err == nil:
				t.Fatal("the pull succeeded")
			case c.mode == "stall" && !errors.Is(res.Err, errAgentIdle) && !strings.Contains(res.Err.Error(), "idle timeout"):
				t.Errorf("want an idle timeout, got %v", res.Err)
			case c.mode != "stall" && c.want != nil && !errors.Is(res.Err, c.want):
				t.Errorf("error does not wrap %v", c.want)
			case c.text != "" && !strings.Contains(res.Err.Error(), c.text):
				t.Errorf("error does not say %q", c.text)
			}
			if limit := src.Timeout + 20*time.Second; d > limit {
				t.Errorf("the pull took %v to fail", d)
			}
			if peak >= 512<<20 {
				t.Errorf("heap peaked at %d MiB", peak>>20)
			}
		})
	}
	if sn := snapshots(t, s); len(sn) != 1 || sn[0].ID != earlier.ID {
		t.Fatalf("snapshots after the hostile pulls: %+v", sn)
	}
	verifyClean(t, s)
	target := restoreSnap(t, s, earlier, data)
	if d := compareTree(t, data, target); len(d) > 0 {
		t.Fatalf("the earlier snapshot no longer restores its tree:\n%s", strings.Join(d, "\n"))
	}
}

// The same hostile agents without SSH: the agent is a child process on
// pipes.
func TestAgentHostileLocal(t *testing.T) {
	bin := buildFakeAgent(t)
	s := newStore(t)
	for _, c := range fakeModes {
		t.Run(c.mode, func(t *testing.T) {
			conn, _ := startFake(t, bin, c.mode)
			w, err := s.NewWriter(context.Background(), "fake", store.WriterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			lim := agentLimits{idle: time.Second, held: 16 << 20}
			_, err = runAgent(context.Background(), conn, []string{"/data"}, w, nil, lim)
			t.Logf("%v", err)
			switch {
			case err == nil:
				t.Fatal("the pull succeeded")
			case c.want != nil && !errors.Is(err, c.want):
				t.Errorf("%v: does not wrap %v", err, c.want)
			case c.text != "" && c.mode != "exit" && !strings.Contains(err.Error(), c.text):
				t.Errorf("%v: does not say %q", err, c.text)
			}
		})
	}
}

// serveAgent runs the agent in this process on pipes.
func serveAgent(t testing.TB, ctx context.Context) agentConn {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := agent.Serve(ctx, inR, outW, agent.Options{Hostname: "in-process"})
		inR.CloseWithError(fmt.Errorf("agent returned: %v", err))
		outW.CloseWithError(err)
	}()
	t.Cleanup(func() {
		inW.Close()
		outR.Close()
		<-done
	})
	return agentConn{in: outR, out: inW, close: func() { inW.Close(); outR.Close() }}
}

// pullLocal pulls roots with the agent in this process and commits.
func pullLocal(t testing.TB, s *store.Store, source string, roots []string, lim agentLimits) (*store.Snapshot, error) {
	t.Helper()
	ctx := context.Background()
	roots, err := agentRoots(roots)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.NewWriter(ctx, source, store.WriterOptions{Warn: func(p string, err error) { t.Logf("warning: %s: %v", p, err) }})
	if err != nil {
		t.Fatal(err)
	}
	root, err := runAgent(ctx, serveAgent(t, ctx), roots, w, testLog(t), lim)
	if err != nil {
		w.Abort()
		return nil, err
	}
	return w.Commit(root, roots)
}

var localLimits = agentLimits{idle: time.Minute, held: maxAgentHeld}

// The conversation without SSH: a tree with every kind of entry, two roots,
// hard links across directories and a file of more than tree.MaxListRefs
// chunks.
func TestAgentLocal(t *testing.T) {
	s := newStore(t)
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	fixture.Nasty(a)
	fixture.Random(b, 9)
	if err := os.Link(filepath.Join(a, "plain.txt"), filepath.Join(b, "zz-link")); err != nil {
		t.Fatal(err)
	}
	c := filepath.Join(base, "c")
	if err := os.WriteFile(c, []byte("a root that is a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	sn, err := pullLocal(t, s, "local-agent", []string{b, a, a + "/a", c}, localLimits)
	if err != nil {
		t.Fatal(err)
	}
	if len(sn.Paths) != 3 {
		t.Errorf("roots %v", sn.Paths)
	}
	for _, dir := range []string{a, b} {
		target := restoreSnap(t, s, sn, dir)
		if d := compareTree(t, dir, target); len(d) > 0 {
			t.Fatalf("%s restored differs:\n%s", dir, strings.Join(d, "\n"))
		}
	}
	target := restoreSnap(t, s, sn, "")
	for _, dir := range []string{a, b} {
		if d := compareTree(t, dir, filepath.Join(target, dir)); len(d) > 0 {
			t.Fatalf("%s restored with the whole snapshot differs:\n%s", dir, strings.Join(d, "\n"))
		}
	}
	if got, err := os.ReadFile(filepath.Join(target, c)); err != nil || string(got) != "a root that is a file" {
		t.Fatalf("the root that is a file restored: %q, %v", got, err)
	}
	again, err := pullLocal(t, s, "local-agent", []string{a, b, c}, localLimits)
	if err != nil {
		t.Fatal(err)
	}
	// Only the trees on the way changed: restores made directories there.
	for _, dir := range []string{a, b} {
		if x, y := subtree(t, s, sn, dir), subtree(t, s, again, dir); x != y {
			t.Errorf("pull of an unchanged tree: %s is %x, was %x", dir, y[:6], x[:6])
		}
	}
	if again.NewBytes > 4096 {
		t.Errorf("pull of an unchanged tree: %d new bytes", again.NewBytes)
	}
	verifyClean(t, s)
}

// pullFake pulls /data from testdata/fakeagent in the given mode into s,
// as source mode, with warn (nil for none) for what is left out. It returns
// the snapshot, a reader of s and the tree of /data in the snapshot.
func pullFake(t *testing.T, s *store.Store, mode string, warn func(string, error)) (*store.Snapshot, *store.Reader, *tree.Tree) {
	t.Helper()
	conn, wait := startFake(t, buildFakeAgent(t), mode)
	ctx := context.Background()
	w, err := s.NewWriter(ctx, mode, store.WriterOptions{Warn: warn})
	if err != nil {
		t.Fatal(err)
	}
	root, err := runAgent(ctx, conn, []string{"/data"}, w, testLog(t), localLimits)
	if err != nil {
		w.Abort()
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("fake agent: %v", err)
	}
	sn, err := w.Commit(root, []string{"/data"})
	if err != nil {
		t.Fatal(err)
	}
	r := storetest.Unlock(t, s, string(testPass))
	tr, err := r.Tree(ctx, subtree(t, s, sn, "/data"))
	if err != nil {
		t.Fatal(err)
	}
	return sn, r, tr
}

// A file of more than tree.MaxListRefs chunks is stored with list blobs.
// The agent is testdata/fakeagent, which announces a file of 70,000
// copies of one chunk, so that little has to move.
func TestAgentLocalLongFile(t *testing.T) {
	s := newStore(t)
	_, r, tr := pullFake(t, s, "long", nil)
	ctx := context.Background()
	min := s.Info().Chunker.Min
	e := tr.Entries[0]
	if e.Name != "f" || e.Layout != tree.LayoutIndirect || len(e.Lists) != 2 || e.Size != 70000*uint64(min) {
		t.Fatalf("long file entry: %q layout %d, %d lists, size %d", e.Name, e.Layout, len(e.Lists), e.Size)
	}
	var n, size uint64
	for _, id := range e.Lists {
		refs, err := r.List(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range refs {
			n++
			size += c.Length
		}
	}
	if n != 70000 || size != e.Size {
		t.Fatalf("the lists hold %d chunks of %d bytes in all", n, size)
	}
}

// A file that cannot be read is left out, with the names linked to it,
// and the snapshot is partial.
func TestAgentLocalFileErr(t *testing.T) {
	var warned []string
	sn, _, tr := pullFake(t, newStore(t), "fileerr", func(p string, err error) {
		warned = append(warned, p)
		t.Logf("warning: %s: %v", p, err)
	})
	if sn.Status != "partial" || sn.Errors != 3 || strings.Join(warned, " ") != "/data/a /data/b /data/d" {
		t.Errorf("snapshot %s with %d errors; warnings for %q", sn.Status, sn.Errors, warned)
	}
	if len(tr.Entries) != 1 || tr.Entries[0].Name != "c" || tr.Entries[0].Kind != tree.File || tr.Entries[0].Size != 5 {
		t.Fatalf("/data holds %+v", tr.Entries)
	}
}

// A file given up on with FILEERR while segments of it are open: those
// segments are still sent and stored, and the file is left out.
func TestAgentLocalFileErrOpen(t *testing.T) {
	sn, _, tr := pullFake(t, newStore(t), "fileerr-open", func(p string, err error) { t.Logf("warning: %s: %v", p, err) })
	if sn.Status != "partial" || sn.Errors != 1 || sn.Files != 0 {
		t.Errorf("snapshot %s with %d errors and %d files", sn.Status, sn.Errors, sn.Files)
	}
	if len(tr.Entries) != 0 {
		t.Fatalf("/data holds %+v", tr.Entries)
	}
}

// startFake runs testdata/fakeagent in mode on pipes.
func startFake(t testing.TB, bin, mode string) (agentConn, func() error) {
	t.Helper()
	modeFile := filepath.Join(t.TempDir(), "mode")
	if err := os.WriteFile(modeFile, []byte(mode), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, modeFile)
	cmd.Stderr = testWriter{t}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var werr error
	wait := func() error {
		once.Do(func() {
			stdin.Close()
			werr = cmd.Wait()
		})
		return werr
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		wait()
	})
	return agentConn{in: stdout, out: stdin, close: func() { cmd.Process.Kill() }}, wait
}

// A listing beyond the vault's budget fails the pull instead of growing.
func TestAgentLocalHeld(t *testing.T) {
	s := newStore(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := unix.Mkfifo(filepath.Join(src, fmt.Sprintf("fifo%03d", i)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := pullLocal(t, s, "held", []string{src}, agentLimits{idle: time.Minute, held: 32 << 10})
	if !errors.Is(err, errAgentHeld) {
		t.Fatalf("pull with a 32 KiB budget: %v", err)
	}
	if _, err := pullLocal(t, s, "held", []string{src}, localLimits); err != nil {
		t.Fatal(err)
	}
}

func TestAgentRoots(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string // joined by " ", or "error"
	}{
		{[]string{"/srv", "/etc"}, "/etc /srv"},
		{[]string{"/srv/", "/srv/a", "/srv//b/.."}, "/srv"},
		{[]string{"/", "/etc"}, "/"},
		{[]string{"/a/b", "/a", "/ab"}, "/a /ab"},
		{[]string{"relative"}, "error"},
		{nil, "error"},
	} {
		got, err := agentRoots(c.in)
		s := strings.Join(got, " ")
		if err != nil {
			s = "error"
		}
		if s != c.want {
			t.Errorf("agentRoots(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

// agentFrames encodes a conversation as the agent's output.
func agentFrames(t testing.TB, msgs ...agentproto.Message) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = agentproto.AppendFrame(b, m); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// goodConversation is a whole conversation of an agent pulling /data:
// a file (its one chunk wanted, as by a new source), a symlink, a warning.
func goodConversation() []agentproto.Message {
	hello := []byte("hello")
	dir := func(id uint64, p string) agentproto.Entry {
		return agentproto.Entry{ID: id, Path: p, Kind: uint8(tree.Dir), Mode: 0o755, Ino: id, Nlink: 2}
	}
	return []agentproto.Message{
		agentproto.Welcome{Agent: "scripted", Host: "scripted"},
		dir(1, "/"),
		dir(2, "/data"),
		agentproto.Entry{ID: 3, Path: "/data/f", Kind: uint8(tree.File), Mode: 0o644, Size: 5, Ino: 3, Nlink: 1},
		agentproto.Entry{ID: 4, Path: "/data/g", Kind: uint8(tree.Symlink), Mode: 0o777, Target: "f", Ino: 4, Nlink: 1},
		agentproto.Hashes{File: 3, Last: true, Chunks: []agentproto.ChunkHash{{Hash: agentproto.HashChunk(hello), Length: 5}}},
		agentproto.Data{File: 3, Bytes: hello},
		agentproto.SegDone{File: 3},
		agentproto.Warn{Path: "/data/h", Message: "unreadable"},
		agentproto.DirEnd{ID: 2},
		agentproto.DirEnd{ID: 1},
		agentproto.End{},
	}
}

// The agent's side of a conversation can be written down in advance: the
// vault's answers follow from it.
func TestAgentScripted(t *testing.T) {
	s := newStore(t)
	w, err := s.NewWriter(context.Background(), "scripted", store.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var said bytes.Buffer
	conn := agentConn{in: bytes.NewReader(agentFrames(t, goodConversation()...)), out: &said, close: func() {}}
	root, err := runAgent(context.Background(), conn, []string{"/data"}, w, testLog(t), localLimits)
	if err != nil {
		w.Abort()
		t.Fatal(err)
	}
	sn, err := w.Commit(root, []string{"/data"})
	if err != nil {
		t.Fatal(err)
	}
	r := agentproto.NewReader(&said)
	var types []string
	for {
		m, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, agentproto.TypeName(m.Type()))
		if want, ok := m.(agentproto.Want); ok && !want.Has(0) {
			t.Error("the chunk of a new source's file was not wanted")
		}
	}
	if got := strings.Join(types, " "); got != "HELLO READ WANT BYE" {
		t.Errorf("the vault said %s", got)
	}
	if sn.Files != 2 || sn.Bytes != 5 || sn.Errors != 1 {
		t.Errorf("snapshot: %d files, %d bytes, %d errors", sn.Files, sn.Bytes, sn.Errors)
	}
}

// FuzzAgentConversation feeds arbitrary agent output to the vault: it must
// fail or succeed, never panic or hang, whatever the bytes.
func FuzzAgentConversation(f *testing.F) {
	good := goodConversation()
	f.Add(agentFrames(f, good...))
	f.Add(agentFrames(f, good[:7]...))
	f.Add(agentFrames(f, good[0], good[1], good[2], agentproto.FileErr{File: 3, Message: "gone"}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})

	s := newStore(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		w, err := s.NewWriter(context.Background(), "fuzz", store.WriterOptions{Warn: func(string, error) {}})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		conn := agentConn{in: bytes.NewReader(in), out: io.Discard, close: func() {}}
		runAgent(context.Background(), conn, []string{"/data"}, w, nil, agentLimits{idle: time.Minute, held: 1 << 20})
	})
}

const agentBenchSize = 64 << 20

// BenchmarkAgentPull pulls a directory holding one 64 MiB file of random
// bytes through drawbridge-agent, as a new source each time: every chunk
// crosses the link (the store keeps it once).
func BenchmarkAgentPull(b *testing.B) {
	s := newStore(b)
	file, _ := randomFile(b, agentBenchSize)
	h := agentHost(b, s, buildAgent(b))
	b.SetBytes(agentBenchSize)
	b.ResetTimer()
	cpu := cpuTime()
	for i := range b.N {
		src := agentSource(b, h, fmt.Sprintf("bench%d", i), filepath.Dir(file))
		if res := pullOne(b, s, src); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkAgentLocalBackup backs up the same directory locally, to compare.
func BenchmarkAgentLocalBackup(b *testing.B) {
	s := newStore(b)
	file, _ := randomFile(b, agentBenchSize)
	b.SetBytes(agentBenchSize)
	b.ResetTimer()
	cpu := cpuTime()
	for i := range b.N {
		if _, err := s.Backup(context.Background(), fmt.Sprintf("bench%d", i), []string{filepath.Dir(file)}, store.BackupOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// An agent that speaks another protocol version exits without WELCOME: the
// pull fails saying the agent must be updated.
func TestAgentOtherVersion(t *testing.T) {
	s := newStore(t)
	w, err := s.NewWriter(context.Background(), "old", store.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	conn := agentConn{in: strings.NewReader(""), out: io.Discard, close: func() {}}
	_, err = runAgent(context.Background(), conn, []string{"/data"}, w, testLog(t), localLimits)
	if !errors.Is(err, errAgentGone) || !strings.Contains(err.Error(), "update the agent") {
		t.Fatalf("pull from an agent that exits at HELLO: %v", err)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// A chunk repeated across segments announced before the first one's
// SEGDONE (a run of zeros) crosses the link once.
func TestAgentLocalRepeatsOnce(t *testing.T) {
	s := newStore(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 32 << 20
	if err := os.WriteFile(filepath.Join(src, "zeros"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, err := s.NewWriter(ctx, "zeros", store.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conn := serveAgent(t, ctx)
	in := &countingReader{r: conn.in}
	conn.in = in
	root, err := runAgent(ctx, conn, []string{src}, w, testLog(t), localLimits)
	if err != nil {
		w.Abort()
		t.Fatal(err)
	}
	sn, err := w.Commit(root, []string{src})
	if err != nil {
		t.Fatal(err)
	}
	max := int64(s.Info().Chunker.Max)
	if got := in.n.Load(); got > 2*max {
		t.Errorf("%d bytes came from the agent for %d bytes of zeros in chunks of %d", got, size, max)
	}
	target := restoreSnap(t, s, sn, src)
	if d := compareTree(t, src, target); len(d) > 0 {
		t.Fatalf("restored tree differs:\n%s", strings.Join(d, "\n"))
	}
}
