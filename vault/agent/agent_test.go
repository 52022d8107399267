package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/chunk"
	"drawbridge/vault/internal/fixture"
	"drawbridge/vault/tree"
)

// sourceTree builds, under a new base directory:
//
//	src/          the nasty fixture (a root)
//	srv/keep/     a random tree (a root)
//	srv/other/    not pulled
//	zz-other      not pulled
func sourceTree(t *testing.T) string {
	base := t.TempDir()
	fixture.Nasty(filepath.Join(base, "src"))
	fixture.Random(filepath.Join(base, "srv", "keep"), 42)
	must(t, os.MkdirAll(filepath.Join(base, "srv", "other"), 0o755))
	must(t, os.WriteFile(filepath.Join(base, "srv", "other", "secret"), []byte("not pulled"), 0o644))
	must(t, os.WriteFile(filepath.Join(base, "zz-other"), []byte("not pulled"), 0o644))
	// Add a file big enough for several segments with the small test chunker.
	big := make([]byte, 5<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	must(t, os.WriteFile(filepath.Join(base, "src", "big-regular"), big, 0o644))
	return base
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// expectedPaths lists what a pull of roots under base must send: "/", the
// directories on the way, and everything under the roots.
func expectedPaths(t *testing.T, base string, roots ...string) []string {
	seen := map[string]bool{"/": true}
	for _, r := range roots {
		for d := filepath.Dir(r); d != "/"; d = filepath.Dir(d) {
			seen[d] = true
		}
		must(t, filepath.WalkDir(base+r, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			seen[strings.TrimPrefix(p, base)] = true
			return nil
		}))
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// checkEntry compares an ENTRY with what lstat says of the object now.
func checkEntry(t *testing.T, base string, e agentproto.Entry) {
	t.Helper()
	hp := base + e.Path
	if e.Path == "/" {
		hp = base
	}
	var st unix.Stat_t
	if err := unix.Lstat(hp, &st); err != nil {
		t.Errorf("%q: %v", e.Path, err)
		return
	}
	want := agentproto.Entry{
		ID: e.ID, Path: e.Path, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		MtimeSec: st.Mtim.Sec, MtimeNsec: uint32(st.Mtim.Nsec),
		Dev: st.Dev, Ino: st.Ino, Nlink: st.Nlink, CtimeSec: st.Ctim.Sec, CtimeNsec: uint32(st.Ctim.Nsec),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		want.Kind = 1
	case unix.S_IFREG:
		want.Kind, want.Size = 2, uint64(st.Size)
	case unix.S_IFLNK:
		want.Kind = 3
		want.Target, _ = os.Readlink(hp)
	case unix.S_IFIFO:
		want.Kind = 5
	case unix.S_IFCHR:
		want.Kind, want.Major, want.Minor = 6, unix.Major(st.Rdev), unix.Minor(st.Rdev)
	case unix.S_IFBLK:
		want.Kind, want.Major, want.Minor = 7, unix.Major(st.Rdev), unix.Minor(st.Rdev)
	case unix.S_IFSOCK:
		want.Kind = 8
	}
	c, _, err := tree.Capture(hp)
	if err != nil {
		t.Errorf("%q: %v", e.Path, err)
		return
	}
	want.User, want.Group = c.User, c.Group
	for _, x := range c.Xattrs {
		want.Xattrs = append(want.Xattrs, agentproto.Xattr{Name: x.Name, Value: x.Value})
	}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("ENTRY differs from lstat:\n got %+v\nwant %+v", e, want)
	}
}

// readNoAtime reads a file without touching its access time.
func readNoAtime(t *testing.T, p string) []byte {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// state records everything about a tree that reading it could change:
// every stat field (access times included), xattrs, symlink targets and the
// content hash of files. It reads without touching access times, except that
// the kernel updates a symlink's on readlink whatever the caller does:
// symlink access times are left out unless withLinkAtime.
func state(t *testing.T, root string, withLinkAtime bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	var visit func(p string)
	visit = func(p string) {
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		if st.Mode&unix.S_IFMT == unix.S_IFLNK && !withLinkAtime {
			st.Atim = unix.Timespec{}
		}
		rec := fmt.Sprintf("%+v xattrs=%q", st, fixtureXattrs(p))
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			rec += fmt.Sprintf(" sha256=%x", sha256.Sum256(readNoAtime(t, p)))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			must(t, err)
			rec += " target=" + target
		case unix.S_IFDIR:
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
			must(t, err)
			f := os.NewFile(uintptr(fd), p)
			names, err := f.Readdirnames(-1)
			f.Close()
			must(t, err)
			for _, n := range names {
				visit(filepath.Join(p, n))
			}
		}
		out[p] = rec
	}
	visit(root)
	return out
}

func fixtureXattrs(p string) []tree.Xattr {
	e, _, _ := tree.Capture(p)
	return e.Xattrs
}

func compareStates(t *testing.T, before, after map[string]string) {
	t.Helper()
	for p, b := range before {
		if a, ok := after[p]; !ok {
			t.Errorf("%s: gone", p)
		} else if a != b {
			t.Errorf("%s changed:\n before %s\n  after %s", p, b, a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: appeared", p)
		}
	}
}

func TestPull(t *testing.T) {
	base := sourceTree(t)
	roots := []string{"/src", "/srv/keep"}
	before := state(t, base, false)

	v := newVault(base, roots...)
	p := v.mustPull(t)

	compareStates(t, before, state(t, base, false))
	if p.welcome.Agent != Version || p.welcome.Host != "source.test" {
		t.Errorf("WELCOME %+v", p.welcome)
	}
	if got, want := sortedCopy(p.paths()), expectedPaths(t, base, roots...); !slices.Equal(got, want) {
		t.Errorf("entries:\n got %q\nwant %q", got, want)
	}
	for _, e := range p.entries {
		checkEntry(t, base, e)
	}
	if len(p.warns) != 0 || len(p.fileErrs) != 0 {
		t.Errorf("warnings %v, file errors %v", p.warns, p.fileErrs)
	}
	files := 0
	for _, e := range p.entries {
		if e.Kind != 2 {
			continue
		}
		files++
		got, ok := p.files[e.Path]
		if !ok {
			t.Errorf("%q was not read", e.Path)
			continue
		}
		if !bytes.Equal(got, readNoAtime(t, base+e.Path)) {
			t.Errorf("%q: content differs", e.Path)
		}
	}
	if files < 20 || len(p.files) != files {
		t.Errorf("%d files, %d read", files, len(p.files))
	}
	// The big file spans several segments; the sparse one's zero chunks are
	// wanted once.
	if n := len(p.wanted["/src/big-regular"]); n <= 2*segmentChunks {
		t.Errorf("big-regular: %d chunks wanted, want several segments", n)
	}
	for path, sent := range p.sent {
		if !slices.Equal(sent, p.wanted[path]) {
			t.Errorf("%q: sent %d chunks, wanted %d", path, len(sent), len(p.wanted[path]))
		}
	}
	if n := len(p.sent["/src/sparse"]); n > 4 {
		t.Errorf("sparse: %d chunks sent, want the zero chunk once", n)
	}

	// With the default chunker too.
	v = newVault(base, "/src")
	v.params = chunk.Default
	p = v.mustPull(t)
	if !bytes.Equal(p.files["/src/big.bin"], readNoAtime(t, base+"/src/big.bin")) {
		t.Error("big.bin differs with the default chunker")
	}
}

func TestPullWithoutOpenat2(t *testing.T) {
	withoutOpenat2 = true
	defer func() { withoutOpenat2 = false }()
	base := sourceTree(t)
	before := state(t, base, false)
	p := newVault(base, "/src").mustPull(t)
	compareStates(t, before, state(t, base, false))
	if len(p.files) < 10 || len(p.warns) != 0 || len(p.fileErrs) != 0 {
		t.Fatalf("%d files, warnings %v, file errors %v", len(p.files), p.warns, p.fileErrs)
	}
	for path, content := range p.files {
		if !bytes.Equal(content, readNoAtime(t, base+path)) {
			t.Errorf("%q: content differs", path)
		}
	}

	// A directory on the way swapped for a symlink after the listing: the
	// inode opened is not the one listed.
	v := newVault(base, "/src")
	v.read = func(e agentproto.Entry) bool {
		if e.Path == "/src/a/b/c/deep" {
			must(t, os.Rename(base+"/src/a/b", base+"/src/a/b-moved"))
			must(t, os.MkdirAll(base+"/elsewhere/c", 0o755))
			must(t, os.WriteFile(base+"/elsewhere/c/deep", []byte("not the listed file"), 0o644))
			must(t, os.Symlink(base+"/elsewhere", base+"/src/a/b"))
		}
		return true
	}
	p = v.mustPull(t)
	if _, ok := p.fileErrs["/src/a/b/c/deep"]; !ok {
		t.Errorf("a file reached through a swapped-in symlink was read: %q", p.files["/src/a/b/c/deep"])
	}
}

func TestSymlinkSwapped(t *testing.T) {
	// As above, with openat2: the symlink on the way is refused outright.
	base := sourceTree(t)
	v := newVault(base, "/src")
	v.read = func(e agentproto.Entry) bool {
		if e.Path == "/src/a/b/c/deep" {
			must(t, os.Rename(base+"/src/a/b", base+"/src/a/b-moved"))
			must(t, os.Symlink(base+"/src/a/b-moved", base+"/src/a/b"))
		}
		return true
	}
	p := v.mustPull(t)
	if msg, ok := p.fileErrs["/src/a/b/c/deep"]; !ok || !strings.Contains(msg, "symbolic link") {
		t.Errorf("FILEERR %q, %v; want a refusal to follow the symlink", msg, ok)
	}
}

func TestIncremental(t *testing.T) {
	base := sourceTree(t)
	v := newVault(base, "/src")
	first := v.mustPull(t)

	// Change one file; the vault skips files whose size, mtime, inode and
	// ctime are unchanged, and no skipped file may be opened.
	must(t, os.WriteFile(base+"/src/plain.txt", []byte("changed"), 0o644))
	v.read = func(e agentproto.Entry) bool {
		old, ok := first.byPath[e.Path]
		return !ok || old.Size != e.Size || old.MtimeSec != e.MtimeSec || old.MtimeNsec != e.MtimeNsec ||
			old.Ino != e.Ino || old.CtimeSec != e.CtimeSec || old.CtimeNsec != e.CtimeNsec
	}
	opens := watchOpens(t, base)
	second := v.mustPull(t)
	opened := opens.files(t)

	if !slices.Equal(second.read, []string{"/src/plain.txt"}) {
		t.Errorf("read %q, want only the changed file", second.read)
	}
	if !slices.Equal(opened, []string{"/src/plain.txt"}) {
		t.Errorf("files opened: %q, want only the one read", opened)
	}
	if len(second.skipped) < 10 {
		t.Errorf("skipped only %q", second.skipped)
	}
	if !bytes.Equal(second.files["/src/plain.txt"], []byte("changed")) {
		t.Errorf("changed file pulled as %q", second.files["/src/plain.txt"])
	}

	// A READ of an unchanged file whose chunks the vault holds sends no DATA.
	v.read = nil
	third := v.mustPull(t)
	if len(third.sent) != 0 {
		t.Errorf("chunks sent for files the vault holds: %v", third.sent)
	}
	if len(third.files) != len(first.files) {
		t.Errorf("%d files reassembled from held chunks, want %d", len(third.files), len(first.files))
	}
}

func TestWantSome(t *testing.T) {
	base := sourceTree(t)
	v := newVault(base, "/src")
	v.want = func(e agentproto.Entry, h agentproto.Hashes, i int) bool {
		return e.Path != "/src/big-regular" || i%3 == 0
	}
	p := v.mustPull(t)
	var want []uint64
	for seg := uint64(0); seg < 3; seg++ {
		for i := uint64(0); i < segmentChunks; i += 3 {
			want = append(want, seg<<32|i)
		}
	}
	got := p.sent["/src/big-regular"]
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("sent %d chunks, want every third one (%d in the first 3 segments)", len(got), len(want))
	}
	for path, sent := range p.sent {
		if !slices.Equal(sent, p.wanted[path]) {
			t.Errorf("%q: sent chunks differ from the wanted ones", path)
		}
	}
	if !slices.Equal(p.incomplete, []string{"/src/big-regular"}) {
		t.Errorf("incomplete files %q", p.incomplete)
	}
}

func TestFileChangesAfterHashes(t *testing.T) {
	base := sourceTree(t)
	v := newVault(base, "/src")
	target := base + "/src/big-regular"
	v.onHashes = func(e agentproto.Entry, h agentproto.Hashes) {
		if e.Path == "/src/big-regular" && h.Segment == 1 {
			f, err := os.OpenFile(target, os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteAt([]byte("CHANGED"), 1<<20) // inside segment 1
			must(t, err)
			must(t, f.Close())
		}
	}
	p := v.mustPull(t)
	if msg, ok := p.fileErrs["/src/big-regular"]; !ok || !strings.Contains(msg, "changed") {
		t.Errorf("FILEERR for the changed file: %q, %v", msg, ok)
	}
	if _, ok := p.files["/src/big-regular"]; ok {
		t.Error("the changed file was completed")
	}
	// The next files are read.
	if !bytes.Equal(p.files["/src/empty"], nil) || !bytes.Equal(p.files["/src/hard1"], readNoAtime(t, base+"/src/hard1")) {
		t.Error("files after the changed one were not read")
	}
	if len(p.fileErrs) != 1 {
		t.Errorf("file errors: %v", p.fileErrs)
	}
}

func TestFileChangesBeforeRead(t *testing.T) {
	base := sourceTree(t)
	v := newVault(base, "/src")
	v.read = func(e agentproto.Entry) bool {
		switch e.Path {
		case "/src/plain.txt": // same size, new content and times
			must(t, os.WriteFile(base+e.Path, bytes.Repeat([]byte("x"), int(e.Size)), 0o644))
		case "/src/setuid": // replaced by a FIFO: must not block
			must(t, os.Remove(base+e.Path))
			must(t, unix.Mkfifo(base+e.Path, 0o644))
		case "/src/with space and\nnewline": // gone
			must(t, os.Remove(base+e.Path))
		}
		return true
	}
	p := v.mustPull(t)
	for _, path := range []string{"/src/plain.txt", "/src/setuid", "/src/with space and\nnewline"} {
		if _, ok := p.fileErrs[path]; !ok {
			t.Errorf("%q: no FILEERR", path)
		}
	}
	if len(p.fileErrs) != 3 || len(p.files) < 5 {
		t.Errorf("file errors %v, %d files read", p.fileErrs, len(p.files))
	}
}

func TestFileChangesDuringRead(t *testing.T) {
	// A file that grows while it is chunked: the vault wants nothing, so only
	// the size check can catch it.
	base := t.TempDir()
	must(t, os.Mkdir(base+"/d", 0o755))
	big := make([]byte, 6<<20) // 2 segments or more
	for i := range big {
		big[i] = byte(i * i >> 9)
	}
	must(t, os.WriteFile(base+"/d/grows", big, 0o644))
	v := newVault(base, "/d")
	v.want = func(agentproto.Entry, agentproto.Hashes, int) bool { return false }
	v.onHashes = func(e agentproto.Entry, h agentproto.Hashes) {
		if h.Segment == 0 {
			f, err := os.OpenFile(base+"/d/grows", os.O_APPEND|os.O_WRONLY, 0)
			must(t, err)
			_, err = f.Write([]byte("more"))
			must(t, err)
			must(t, f.Close())
		}
	}
	p := v.mustPull(t)
	if msg := p.fileErrs["/d/grows"]; !strings.Contains(msg, "grew") && !strings.Contains(msg, "changed") {
		t.Errorf("FILEERR %q", msg)
	}
}

func TestRoots(t *testing.T) {
	base := t.TempDir()
	must(t, os.MkdirAll(base+"/a/b", 0o755))
	must(t, os.WriteFile(base+"/a/b/file", []byte("x"), 0o644))
	must(t, os.WriteFile(base+"/a/file2", []byte("y"), 0o644))
	must(t, os.MkdirAll(base+"/real/dir", 0o755))
	must(t, os.Symlink("real", base+"/link"))
	must(t, os.WriteFile(base+"/top", []byte("z"), 0o644))

	// A file as root, a missing root, a root under a symlink, a root that is
	// a symlink.
	v := newVault(base, "/a/b/file", "/link/dir", "/missing/x", "/top")
	p := v.mustPull(t)
	want := []string{"/", "/a", "/a/b", "/a/b/file", "/top"}
	if got := sortedCopy(p.paths()); !slices.Equal(got, want) {
		t.Errorf("entries %q, want %q", got, want)
	}
	if !p.warned("/link", "symlink") || !p.warned("/missing", "no such file") || len(p.warns) != 2 {
		t.Errorf("warnings %+v", p.warns)
	}
	if string(p.files["/a/b/file"]) != "x" || string(p.files["/top"]) != "z" {
		t.Errorf("files %q", p.files)
	}

	v = newVault(base, "/link")
	p = v.mustPull(t)
	if e := p.byPath["/link"]; e.Kind != 3 || e.Target != "real" || len(p.entries) != 2 {
		t.Errorf("symlink root: %+v", p.entries)
	}

	v = newVault(base, "/")
	p = v.mustPull(t)
	if got, want := sortedCopy(p.paths()), expectedPaths(t, base, "/"); !slices.Equal(got, want) {
		t.Errorf("root /: entries %q, want %q", got, want)
	}
}

// helperEnv makes the test binary serve the directory it names as the agent,
// on standard input and output.
const helperEnv = "DRAWBRIDGE_AGENT_TEST_BASE"

func TestMain(m *testing.M) {
	if base := os.Getenv(helperEnv); base != "" {
		if err := Serve(context.Background(), os.Stdin, os.Stdout, Options{Base: base}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// asNobody starts this test binary as the agent, as user nobody.
func asNobody(base string) func(t *testing.T, ctx context.Context) (io.WriteCloser, *agentproto.Reader, <-chan error) {
	return func(t *testing.T, ctx context.Context) (io.WriteCloser, *agentproto.Reader, <-chan error) {
		// The build directory is root's alone: run a copy nobody can reach.
		self, err := os.Executable()
		must(t, err)
		bin := filepath.Join(t.TempDir(), "agent.test")
		b, err := os.ReadFile(self)
		must(t, err)
		must(t, os.WriteFile(bin, b, 0o755))
		openUp(t, filepath.Dir(bin))
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = append(os.Environ(), helperEnv+"="+base)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Stderr = os.Stderr
		w, err := cmd.StdinPipe()
		must(t, err)
		// Not StdoutPipe: Wait would close it under the reader.
		out, outW, err := os.Pipe()
		must(t, err)
		t.Cleanup(func() { out.Close() })
		cmd.Stdout = outW
		must(t, cmd.Start())
		outW.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return w, agentproto.NewReader(out), done
	}
}

// openUp lets everyone search dir and its parents up to the temp directory.
func openUp(t *testing.T, dir string) {
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		must(t, os.Chmod(d, 0o755))
	}
}

func TestUnreadable(t *testing.T) {
	base := t.TempDir()
	must(t, os.MkdirAll(base+"/d/closed", 0o755))
	must(t, os.WriteFile(base+"/d/closed/f", []byte("x"), 0o644))
	must(t, os.WriteFile(base+"/d/open", []byte("readable"), 0o644))
	must(t, os.WriteFile(base+"/d/secret", []byte("x"), 0o000))
	must(t, os.Chmod(base+"/d/closed", 0o000))
	t.Cleanup(func() { os.Chmod(base+"/d/closed", 0o755) })
	v := newVault(base, "/d")
	if os.Geteuid() == 0 {
		// Root reads everything: serve as nobody.
		openUp(t, base)
		v.start = asNobody(base)
	}
	p := v.mustPull(t)
	if !p.warned("/d/closed", "permission denied") || len(p.warns) != 1 {
		t.Errorf("warnings %+v", p.warns)
	}
	if _, ok := p.byPath["/d/closed"]; ok {
		t.Error("an unreadable directory was listed")
	}
	if msg, ok := p.fileErrs["/d/secret"]; !ok || !strings.Contains(msg, "permission denied") {
		t.Errorf("file errors %v", p.fileErrs)
	}
	// Not the owner: opened without O_NOATIME.
	if string(p.files["/d/open"]) != "readable" {
		t.Errorf("files %q", p.files)
	}
}

func TestFlowControl(t *testing.T) {
	base := t.TempDir()
	must(t, os.Mkdir(base+"/many", 0o755))
	const n = agentproto.MaxPending + 100
	for i := range n {
		must(t, os.WriteFile(fmt.Sprintf("%s/many/f%05d", base, i), nil, 0o644))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, r, done := serve(t, ctx, Options{Base: base})
	send(t, w, agentproto.Hello{Min: 64, Avg: 128, Max: 256, Roots: []string{"/many"}})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	// Read frames in the background, to see when they stop.
	frames := make(chan agentproto.Message, 4*n)
	go func() {
		defer close(frames)
		for {
			m, err := r.Next()
			if err != nil {
				return
			}
			frames <- m
		}
	}()
	var files []uint64
	next := func(timeout time.Duration) agentproto.Message {
		select {
		case m := <-frames:
			if e, ok := m.(agentproto.Entry); ok && e.Kind == 2 {
				files = append(files, e.ID)
			}
			return m
		case <-time.After(timeout):
			return nil
		}
	}
	for len(files) < agentproto.MaxPending {
		if next(10*time.Second) == nil {
			t.Fatalf("the walk stopped after %d files", len(files))
		}
	}
	if m := next(300 * time.Millisecond); m != nil {
		t.Fatalf("the walk went on with %d files unanswered: %#v", len(files), m)
	}
	// One answer lets one more file through.
	send(t, w, agentproto.Skip{File: files[0]})
	if m := next(10 * time.Second); m == nil || len(files) != agentproto.MaxPending+1 {
		t.Fatalf("after one SKIP: %v, %d files", m, len(files))
	}
	if m := next(300 * time.Millisecond); m != nil {
		t.Fatalf("two files listed after one SKIP: %#v", m)
	}
	// A READ frees its slot only once the file is read.
	send(t, w, agentproto.Read{File: files[1]})
	m := next(10 * time.Second)
	if h, ok := m.(agentproto.Hashes); !ok || h.File != files[1] || !h.Last || len(h.Chunks) != 0 {
		t.Fatalf("after READ of an empty file: %#v", m)
	}
	if m := next(300 * time.Millisecond); m != nil {
		t.Fatalf("a file listed while another is being read: %#v", m)
	}
	send(t, w, agentproto.Want{File: files[1], Segment: 0})
	if m := next(10 * time.Second); m != (agentproto.SegDone{File: files[1]}) {
		t.Fatalf("after WANT: %#v", m)
	}
	if m := next(10 * time.Second); m == nil || len(files) != agentproto.MaxPending+2 {
		t.Fatalf("after the read: %#v, %d files", m, len(files))
	}
	send(t, w, agentproto.Bye{})
	if err := <-done; err != nil {
		t.Fatalf("Serve after BYE: %v", err)
	}
}

func TestProtocolErrors(t *testing.T) {
	base := t.TempDir()
	must(t, os.WriteFile(base+"/f", []byte("content"), 0o644))
	must(t, os.WriteFile(base+"/g", []byte("more"), 0o644))
	hello := agentproto.Hello{Min: 64, Avg: 128, Max: 256, Roots: []string{"/"}}
	// Each case sends HELLO, waits for the ENTRY of /f, then runs.
	for _, c := range []struct {
		name string
		run  func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64)
		want string // "" for success
	}{
		{"BYE mid-walk", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) { send(t, w, agentproto.Bye{}) }, ""},
		{"input closed", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) { w.Close() }, ""},
		{"READ of another file", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) {
			send(t, w, agentproto.Read{File: f + 1})
		}, "is the next waiting"},
		{"SKIP of a directory", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) {
			send(t, w, agentproto.Skip{File: 1})
		}, "waiting"},
		{"two answers", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) {
			send(t, w, agentproto.Skip{File: f})
			send(t, w, agentproto.Skip{File: f})
		}, "waiting"},
		{"WANT unasked", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) {
			send(t, w, agentproto.Want{File: f})
		}, "not waiting"},
		{"WANT beyond the chunks", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) {
			send(t, w, agentproto.Read{File: f})
			for {
				m, err := r.Next()
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := m.(agentproto.Hashes); ok {
					break
				}
			}
			send(t, w, agentproto.Want{File: f, Bitmap: []byte{0x02}})
		}, "has 1 chunks"},
		{"second HELLO", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) { send(t, w, hello) }, "unexpected HELLO"},
		{"agent message", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) { send(t, w, agentproto.End{}) }, "unexpected END"},
		{"garbage", func(t *testing.T, w io.WriteCloser, r *agentproto.Reader, f uint64) {
			w.Write([]byte{1, 0, 0, 0, 0x42})
		}, "unknown message type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			w, r, done := serve(t, ctx, Options{Base: base})
			send(t, w, hello)
			var f uint64
			for f == 0 {
				m, err := r.Next()
				if err != nil {
					t.Fatal(err)
				}
				if e, ok := m.(agentproto.Entry); ok && e.Path == "/f" {
					f = e.ID
				}
			}
			c.run(t, w, r, f)
			// Drain what the agent still sends, so that it never blocks.
			go func() {
				for {
					if _, err := r.Next(); err != nil {
						return
					}
				}
			}()
			err := <-done
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Serve: %v", err)
			case c.want != "" && (!errors.Is(err, agentproto.ErrProtocol) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Serve: %v, want a protocol error with %q", err, c.want)
			}
		})
	}
}

func TestBadHello(t *testing.T) {
	for name, first := range map[string][]byte{
		"not HELLO":  frameOf(agentproto.Read{File: 1}),
		"version 1":  rawFrame(agentproto.TypeHello, "DBAGENT1\x01\x40\x80\x01\x80\x02\x01\x01/"),
		"version 3":  rawFrame(agentproto.TypeHello, "DBAGENT1\x03\x40\x80\x01\x80\x02\x01\x01/"),
		"truncated":  {19, 0, 0, 0, 1, 'D'},
		"bad params": rawFrame(agentproto.TypeHello, "DBAGENT1\x02\x40\x80\x01\x80\x01\x01\x01/"),
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			err := Serve(context.Background(), bytes.NewReader(first), &out, Options{Base: t.TempDir()})
			if !errors.Is(err, agentproto.ErrProtocol) {
				t.Errorf("Serve: %v", err)
			}
			if out.Len() != 0 {
				t.Errorf("answered %x", out.Bytes())
			}
		})
	}
	if err := Serve(context.Background(), bytes.NewReader(nil), io.Discard, Options{}); err != nil {
		t.Errorf("closed input before HELLO: %v", err)
	}
}

func rawFrame(typ byte, payload string) []byte {
	n := len(payload) + 1
	return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24), typ}, payload...)
}

func frameOf(m agentproto.Message) []byte {
	b, err := agentproto.AppendFrame(nil, m)
	if err != nil {
		panic(err)
	}
	return b
}

// TestReadOnlyMount serves a read-only bind mount of a tree and checks that
// the agent works and that nothing changed, access times included.
func TestReadOnlyMount(t *testing.T) {
	if os.Geteuid() != 0 {
		fixture.Need(t, "needs root (to bind-mount a tree read-only): run go test as root")
	}
	base := sourceTree(t)
	mnt := t.TempDir()
	if err := unix.Mount(base, mnt, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		fixture.Need(t, fmt.Sprintf("bind mount: %v (run as root with CAP_SYS_ADMIN, outside a restricted container)", err))
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	must(t, unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""))
	if err := os.WriteFile(mnt+"/probe", nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("the mount is writable: %v", err)
	}

	// Through the read-only mount even a symlink's access time stays; the
	// writable view's own readlinks move them, so it is read first and last.
	before := state(t, base, false)
	beforeRO := state(t, mnt, true)
	p := newVault(mnt, "/src", "/srv").mustPull(t)
	compareStates(t, beforeRO, state(t, mnt, true))
	compareStates(t, before, state(t, base, false))

	if len(p.warns) != 0 || len(p.fileErrs) != 0 {
		t.Errorf("warnings %v, file errors %v", p.warns, p.fileErrs)
	}
	for _, e := range p.entries {
		if e.Kind == 2 && !bytes.Equal(p.files[e.Path], readNoAtime(t, mnt+e.Path)) {
			t.Errorf("%q: content differs", e.Path)
		}
	}
	if got, want := sortedCopy(p.paths()), expectedPaths(t, mnt, "/src", "/srv"); !slices.Equal(got, want) {
		t.Errorf("entries:\n got %q\nwant %q", got, want)
	}
}
