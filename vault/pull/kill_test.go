package pull

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"drawbridge/vault/config"
	"drawbridge/vault/internal/sshtest"
	"drawbridge/vault/store"
)

// killedPullEnv, in the environment of this test binary started by
// pullKilled, makes TestKilledPullChild pull: its value is the store's
// directory and the source, as JSON.
const killedPullEnv = "DRAWBRIDGE_TEST_KILLED_PULL"

type killedPull struct {
	Store  string
	Source config.Source
}

// TestKilledPullChild is the pull that pullKilled kills: a process of its
// own, so that nothing of it (Abort, Commit, deferred calls) runs.
func TestKilledPullChild(t *testing.T) {
	v := os.Getenv(killedPullEnv)
	if v == "" {
		t.Skip("run by TestAgentPullKilled and TestSFTPPullKilled")
	}
	var kp killedPull
	if err := json.Unmarshal([]byte(v), &kp); err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(kp.Source.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	kp.Source.HostKeyParsed = pub
	s, err := store.Open(kp.Store, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Path: "test.toml", Sources: []config.Source{kp.Source}}
	res := Run(context.Background(), s, cfg, "", Options{Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	t.Fatalf("the pull was not killed: it ended with %v", res[0].Err)
}

// pullKilled pulls src into the store at dir in a process of its own,
// killed with SIGKILL once sealed packs hold a share of total bytes; the
// store is closed meanwhile. It returns the bytes in sealed packs then.
func pullKilled(t *testing.T, dir string, src config.Source, total int64) int64 {
	t.Helper()
	src.HostKeyParsed = nil
	v, err := json.Marshal(killedPull{Store: dir, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "^TestKilledPullChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), killedPullEnv+"="+string(v))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	packs := filepath.Join(dir, "packs")
	deadline := time.After(2 * time.Minute)
	for dirBytes(t, packs) < total*2/5 {
		select {
		case err := <-exited:
			t.Fatalf("the pull ended before it was killed: %v\n%s", err, out.String())
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			t.Fatalf("no packs sealed in 2 minutes\n%s", out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = <-exited
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the pull ended with %v, not killed\n%s", err, out.String())
	}
	return dirBytes(t, packs)
}

// pullKilledThenAgain pulls src in a process killed half-way, then again,
// and checks that the second pull moved about what the first had not
// stored, and that the store verifies and restores the tree.
func pullKilledThenAgain(t *testing.T, s *store.Store, dir string, h *sshtest.Host, src config.Source, total int64) {
	t.Helper()
	s.Close() // the killed process opens the store
	tx := h.SourceTxBytes()
	kept := pullKilled(t, dir, src, total)
	sent1 := h.SourceTxBytes() - tx

	s, err := store.Open(dir, store.Options{Log: testLog(t)})
	if err != nil {
		t.Fatalf("open the store after the kill: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if n := len(snapshots(t, s)); n != 0 {
		t.Fatalf("%d snapshots after a pull that was killed", n)
	}
	t.Logf("killed: the source had sent %d bytes, %d bytes are in sealed packs", sent1, kept)

	tx = h.SourceTxBytes()
	sn := mustPull(t, s, src, h)
	sent2 := h.SourceTxBytes() - tx
	rest := total - kept
	t.Logf("the next pull: the source sent %d bytes of a %d-byte tree; %d were not stored yet", sent2, total, rest)
	if sent2 > uint64(rest+rest/5) {
		t.Errorf("the next pull moved %d bytes; %d were not stored yet", sent2, rest)
	}
	target := restoreSnap(t, s, sn, src.Paths[0])
	if d := compareTree(t, src.Paths[0], target); len(d) > 0 {
		t.Fatalf("restored tree differs from the source:\n%s", strings.Join(d, "\n"))
	}
	verifyClean(t, s)
}

// A pull killed with SIGKILL after some packs are sealed keeps them and
// what its source sent of them: the next pull transfers about the rest.
func TestAgentPullKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MB tree")
	}
	s, dir := newStoreAt(t, 1<<20)
	h := agentHost(t, s, buildAgent(t))
	src := filepath.Join(t.TempDir(), "src")
	var sizes []int
	for range 15 {
		sizes = append(sizes, 4<<20)
	}
	randomTree(t, src, 6, sizes...)
	pullKilledThenAgain(t, s, dir, h, agentSource(t, h, "killed", src), sum(sizes))
}

// The same for an SFTP source, which resumes a file read half-way.
func TestSFTPPullKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MB tree")
	}
	s, dir := newStoreAt(t, 1<<20)
	src := filepath.Join(t.TempDir(), "src")
	sizes := []int{44 << 20, 8 << 20, 8 << 20}
	randomTree(t, src, 7, sizes...)
	truncateTimes(t, src) // SFTP gives whole seconds
	h := sshtest.Start(t, sshtest.Options{AuthorizedKeys: []string{keyLine(s, "restrict")}, SFTPReadOnly: true})
	cfg := sourceFor(t, h, "killed", config.KindSFTP)
	cfg.Paths = []string{src}
	pullKilledThenAgain(t, s, dir, h, cfg, sum(sizes))
}
