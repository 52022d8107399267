package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// tool is a backup program under test, as the commands that drive it.
type tool struct {
	Name string
	Bin  string
	// Each returns the arguments and extra environment of one command.
	Init    func(store string) ([]string, []string)
	Backup  func(store, source, path string) ([]string, []string)
	Restore func(store, target string) ([]string, []string)
}

// drawbridgeTool drives the drawbridge CLI as its contract describes it.
func drawbridgeTool(bin, passFile string) tool {
	env := func(store string) []string {
		return []string{"DRAWBRIDGE_STORE=" + store, "DRAWBRIDGE_PASSPHRASE_FILE=" + passFile}
	}
	return tool{
		Name: "drawbridge",
		Bin:  bin,
		Init: func(store string) ([]string, []string) {
			return []string{"init", "--store", store, "--passphrase-file", passFile}, env(store)
		},
		Backup: func(store, source, path string) ([]string, []string) {
			return []string{"backup", "--store", store, "--source", source, path}, env(store)
		},
		Restore: func(store, target string) ([]string, []string) {
			return []string{"restore", "latest", "--store", store, "--passphrase-file", passFile, "--target", target}, env(store)
		},
	}
}

// resticTool drives restic with its defaults (compression auto). Its cache
// lives beside the repository, so it neither counts as repository size nor
// carries over from an earlier run.
func resticTool(bin, password string) tool {
	env := func(store string) []string {
		return []string{
			"RESTIC_REPOSITORY=" + store,
			"RESTIC_PASSWORD=" + password,
			"RESTIC_CACHE_DIR=" + store + "-cache",
		}
	}
	return tool{
		Name: "restic",
		Bin:  bin,
		Init: func(store string) ([]string, []string) { return []string{"init"}, env(store) },
		Backup: func(store, source, path string) ([]string, []string) {
			return []string{"backup", "--host", "bench", "--tag", "bench", "--tag", source, path}, env(store)
		},
		Restore: func(store, target string) ([]string, []string) {
			return []string{"restore", "latest", "--host", "bench", "--target", target}, env(store)
		},
	}
}

// measure is what one command cost.
type measure struct {
	Seconds float64 `json:"seconds"`
	MaxRSS  int64   `json:"max_rss_bytes"`
}

// run runs one command of t and measures its wall-clock time and peak RSS.
func (t tool) run(ctx context.Context, args, env []string) (measure, error) {
	cmd := exec.CommandContext(ctx, t.Bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = nil // no terminal: a passphrase prompt must fail, not hang
	var stdout, stderr tail
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	m := measure{Seconds: time.Since(start).Seconds()}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			m.MaxRSS = ru.Maxrss * 1024 // KiB on Linux
		}
	}
	if err != nil {
		return m, &toolError{cmd: t.Name + " " + strings.Join(args, " "), err: err, stderr: stderr.lines(20), stdout: stdout.lines(5)}
	}
	return m, nil
}

// toolError is a failed command with the end of what it printed.
type toolError struct {
	cmd            string
	err            error
	stderr, stdout string
}

func (e *toolError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v", e.cmd, e.err)
	if e.stderr != "" {
		fmt.Fprintf(&b, "\n--- stderr (tail) ---\n%s", e.stderr)
	}
	if e.stdout != "" {
		fmt.Fprintf(&b, "\n--- stdout (tail) ---\n%s", e.stdout)
	}
	return b.String()
}

func (e *toolError) Unwrap() error { return e.err }

// tail keeps the last 64 KiB written to it.
type tail struct{ b []byte }

const tailMax = 64 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2*tailMax {
		t.b = append(t.b[:0], t.b[len(t.b)-tailMax:]...)
	}
	return len(p), nil
}

// lines returns the last n lines.
func (t *tail) lines(n int) string {
	s := bytes.TrimRight(t.b, "\n")
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			if n--; n == 0 {
				return string(s[i+1:])
			}
		}
	}
	return string(s)
}

// diskUsage is the space the files under dir take on disk, as du counts it:
// allocated blocks, so preallocated or sparse files count for what they use.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}

// fileBytes is the total size of the regular files under p (or of p).
func fileBytes(p string) (bytes int64, files int, err error) {
	err = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		bytes += info.Size()
		files++
		return nil
	})
	return bytes, files, err
}

// warm reads every regular file under p once, so that each tool then reads
// the data from the page cache alike.
func warm(p string) error {
	buf := make([]byte, ioBuf)
	return filepath.WalkDir(p, func(name string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		for {
			_, err := f.Read(buf)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
}

// removeAll removes p and everything under it, including a store's sealed
// (immutable) files.
func removeAll(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	unseal(p)
	return os.RemoveAll(p)
}
