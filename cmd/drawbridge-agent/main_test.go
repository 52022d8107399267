package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/fixture"
)

// build builds the agent as it ships: static, without cgo.
func build(t *testing.T) string {
	t.Helper()
	return fixture.Build(t, ".")[0]
}

// The agent runs on every source host: it carries no storage, crypto or SSH
// code, only the protocol, the chunker and metadata capture.
func TestDependencies(t *testing.T) {
	out, err := exec.Command(fixture.Go(t), "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{
		"drawbridge/cmd/drawbridge-agent",
		"drawbridge/vault/agent",
		"drawbridge/vault/agentproto",
		"drawbridge/vault/chunk",
		"drawbridge/vault/tree",
		"github.com/zeebo/blake3",
		"github.com/klauspost/cpuid/v2", // blake3's CPU feature detection
		"golang.org/x/sys/",
	}
	for _, dep := range strings.Fields(string(out)) {
		ok := false
		for _, a := range allowed {
			ok = ok || dep == a || strings.HasSuffix(a, "/") && strings.HasPrefix(dep, a) || strings.HasPrefix(dep, a+"/internal/")
		}
		if !ok {
			t.Errorf("the agent depends on %s", dep)
		}
	}
}

func TestBinary(t *testing.T) {
	bin := build(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the agent is dynamically linked")
		}
	}
	f.Close()
	if st, err := os.Stat(bin); err == nil {
		t.Logf("drawbridge-agent: %d bytes", st.Size())
	}

	t.Run("argument", func(t *testing.T) {
		for _, arg := range []string{"--version", "-h", "x"} {
			cmd := exec.Command(bin, arg)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(stderr.String(), "no arguments") {
				t.Errorf("%s: %v, stderr %q", arg, err, stderr.String())
			}
		}
	})

	t.Run("bad HELLO", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Stdin = bytes.NewReader([]byte{2, 0, 0, 0, 0x02, 0x01}) // a READ
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Errorf("exit: %v", err)
		}
		if msg := stderr.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "HELLO") {
			t.Errorf("stderr %q, want one line about HELLO", msg)
		}
		if stdout.Len() != 0 {
			t.Errorf("stdout %q", stdout.String())
		}
	})

	t.Run("input closed", func(t *testing.T) {
		if out, err := exec.Command(bin).CombinedOutput(); err != nil || len(out) != 0 {
			t.Errorf("%v, output %q", err, out)
		}
	})

	t.Run("pull", func(t *testing.T) {
		dir := t.TempDir()
		files := map[string]string{"/a": "alpha", "/sub/b": strings.Repeat("beta ", 100000), "/sub/empty": ""}
		for name, content := range files {
			if err := os.MkdirAll(filepath.Dir(dir+name), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir+name, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(bin)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, outW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = outW, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		outW.Close()
		defer cmd.Process.Kill()

		got := pull(t, in, out, dir)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("exit: %v, stderr %q", err, stderr.String())
		}
		for name, content := range files {
			if c, ok := got[dir+name]; !ok || c != content {
				t.Errorf("%s: pulled %d bytes (%v), want %d", name, len(c), ok, len(content))
			}
		}
	})
}

// pull reads everything under root and wants every chunk; it returns the
// files' contents by path and leaves after BYE.
func pull(t *testing.T, in io.WriteCloser, out io.Reader, root string) map[string]string {
	t.Helper()
	write := func(m agentproto.Message) {
		if err := agentproto.Write(in, m); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	r := agentproto.NewReader(out)
	write(agentproto.Hello{Min: 256, Avg: 1024, Max: 4096, Roots: []string{root}})
	m, err := r.Next()
	if w, ok := m.(agentproto.Welcome); err != nil || !ok || w.Agent == "" {
		t.Fatalf("want WELCOME: %#v, %v", m, err)
	}
	paths := map[uint64]string{}
	var reading []uint64
	content := map[uint64][]byte{}
	hashes := map[uint64][]agentproto.ChunkHash{}
	last := map[uint64]bool{}
	got := map[string]string{}
	ended := false
	for !ended || len(reading) > 0 {
		m, err := r.Next()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		switch m := m.(type) {
		case agentproto.Entry:
			paths[m.ID] = m.Path
			if m.Kind == 2 {
				write(agentproto.Read{File: m.ID})
				reading = append(reading, m.ID)
			}
		case agentproto.Hashes:
			hashes[m.File], last[m.File] = m.Chunks, m.Last
			bitmap := bytes.Repeat([]byte{0xff}, (len(m.Chunks)+7)/8)
			if n := len(m.Chunks) % 8; n != 0 {
				bitmap[len(bitmap)-1] = 1<<n - 1
			}
			write(agentproto.Want{File: m.File, Segment: m.Segment, Bitmap: bitmap})
		case agentproto.Data:
			if c := hashes[m.File][m.Index]; agentproto.HashChunk(m.Bytes) != c.Hash {
				t.Fatalf("DATA does not match its hash")
			}
			content[m.File] = append(content[m.File], m.Bytes...)
		case agentproto.SegDone:
			if last[m.File] {
				got[paths[m.File]] = string(content[m.File])
				reading = reading[1:]
			}
		case agentproto.FileErr:
			t.Fatalf("FILEERR %s: %s", paths[m.File], m.Message)
		case agentproto.Warn:
			t.Errorf("WARN %s: %s", m.Path, m.Message)
		case agentproto.End:
			ended = true
		}
	}
	write(agentproto.Bye{})
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("after BYE: %v", err)
	}
	return got
}
