package pull

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"drawbridge/vault/config"
	"drawbridge/vault/internal/sshtest"
	"drawbridge/vault/store"
)

const benchSize = 64 << 20

// BenchmarkExecPull pulls a 64 MiB stream of random bytes from a real sshd
// (the same stream each time: after the first pull nothing new is stored,
// but every byte still crosses the link and is chunked and hashed).
func BenchmarkExecPull(b *testing.B) {
	s := newStore(b)
	file, _ := randomFile(b, benchSize)
	src := sourceFor(b, execHost(b, s, "cat "+file), "bench", config.KindExec)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		if res := pullOne(b, s, src); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

// BenchmarkSFTPPull pulls a directory holding one 64 MiB file of random
// bytes over SFTP.
func BenchmarkSFTPPull(b *testing.B) {
	s := newStore(b)
	file, _ := randomFile(b, benchSize)
	h := sshtest.Start(b, sshtest.Options{AuthorizedKeys: []string{keyLine(s, "restrict")}, SFTPReadOnly: true})
	src := sourceFor(b, h, "bench", config.KindSFTP)
	src.Paths = []string{filepath.Dir(file)}
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		if res := pullOne(b, s, src); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

// benchTreeSizes is a 48 MiB tree of random bytes shaped like a home
// directory: many small files, some of a few hundred KiB, two large ones.
func benchTreeSizes() []int {
	var sizes []int
	for i := range 600 {
		sizes = append(sizes, 1<<10+(i*7919)%(63<<10)) // 1..64 KiB
	}
	for i := range 40 {
		sizes = append(sizes, 256<<10+(i*104729)%(512<<10)) // 256..768 KiB
	}
	sizes = append(sizes, 8<<20, 12<<20)
	return sizes
}

func benchTree(b *testing.B) (string, int64) {
	dir := b.TempDir()
	sizes := benchTreeSizes()
	randomTree(b, dir, 7, sizes...)
	return dir, sum(sizes)
}

// BenchmarkAgentPullTree pulls the benchmark tree through drawbridge-agent,
// as a new source each time.
func BenchmarkAgentPullTree(b *testing.B) {
	s := newStore(b)
	dir, n := benchTree(b)
	h := agentHost(b, s, buildAgent(b))
	b.SetBytes(n)
	b.ResetTimer()
	cpu := cpuTime()
	for i := range b.N {
		if res := pullOne(b, s, agentSource(b, h, fmt.Sprintf("bench%d", i), dir)); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkSFTPPullTree pulls the benchmark tree over SFTP.
func BenchmarkSFTPPullTree(b *testing.B) {
	s := newStore(b)
	dir, n := benchTree(b)
	h := sshtest.Start(b, sshtest.Options{AuthorizedKeys: []string{keyLine(s, "restrict")}, SFTPReadOnly: true})
	b.SetBytes(n)
	b.ResetTimer()
	for i := range b.N {
		src := sourceFor(b, h, fmt.Sprintf("bench%d", i), config.KindSFTP)
		src.Paths = []string{dir}
		if res := pullOne(b, s, src); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

// BenchmarkLocalBackupTree backs up the benchmark tree locally, as a new
// source each time: the yardstick for the pulls of the same tree.
func BenchmarkLocalBackupTree(b *testing.B) {
	s := newStore(b)
	dir, n := benchTree(b)
	b.SetBytes(n)
	b.ResetTimer()
	cpu := cpuTime()
	for i := range b.N {
		if _, err := s.Backup(context.Background(), fmt.Sprintf("bench%d", i), []string{dir}, store.BackupOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkAgentInProcess pulls through the agent running in this process
// on pipes, without SSH: the cost of Drawbridge's own code on both sides,
// in one CPU profile.
func BenchmarkAgentInProcess(b *testing.B) {
	for _, c := range []struct {
		name string
		make func(*testing.B) (string, int64)
	}{
		{"file", func(b *testing.B) (string, int64) {
			file, _ := randomFile(b, agentBenchSize)
			return filepath.Dir(file), agentBenchSize
		}},
		{"tree", benchTree},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := newStore(b)
			dir, n := c.make(b)
			b.SetBytes(n)
			b.ResetTimer()
			cpu := cpuTime()
			for i := range b.N {
				if _, err := pullLocal(b, s, fmt.Sprintf("bench%d", i), []string{dir}, localLimits); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
	}
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per operation since start: on a machine
// busy with other work it says more than the time on the clock.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// BenchmarkPullCeilingFile sends the 64 MiB file of BenchmarkExecPull and
// BenchmarkAgentPull through sshd with `cat` as the forced command, and the
// vault, connected by the pulls' own code (same key exchange, ciphers and
// MACs), throws the bytes away. It is the transport alone: no pull of the
// file can be faster than this on the same machine, whatever the vault does
// with the bytes.
func BenchmarkPullCeilingFile(b *testing.B) {
	file, _ := randomFile(b, benchSize)
	benchCeiling(b, "cat "+file, benchSize)
}

// BenchmarkPullCeilingTree sends the bytes of the benchmark tree, every file
// concatenated by `find -exec cat`, the same way: the ceiling of any pull
// of the tree (BenchmarkAgentPullTree, BenchmarkSFTPPullTree) on this
// machine.
func BenchmarkPullCeilingTree(b *testing.B) {
	dir, n := benchTree(b)
	benchCeiling(b, "find "+dir+" -type f -exec cat {} +", n)
}

// benchCeiling runs cmd as the forced command of a source host once per
// operation over a new connection, as a pull would, and discards its n bytes
// of output. Besides this process's CPU time it reports the source side's:
// that of the command (as its shell's `times` counts it) and that of sshd
// (everything else in the host's namespace).
func benchCeiling(b *testing.B, cmd string, n int64) {
	s := newStore(b)
	h := execHost(b, s, cmd+"; times >&2")
	src := sourceFor(b, h, "ceiling", config.KindExec)
	o := Options{Log: testLog(b)}.withDefaults()
	b.SetBytes(n)
	b.ResetTimer()
	cpu, source := cpuTime(), sourceCPU(b, h)
	var command time.Duration
	// io.Discard would read 8 KiB at a time, and x/crypto/ssh sends a
	// window adjustment after nearly every read: large reads, like the
	// chunker's, make fewer of them.
	buf := make([]byte, 1<<20)
	for range b.N {
		c, err := connect(context.Background(), s, &src, o, o.Log)
		if err != nil {
			b.Fatal(err)
		}
		sess, err := c.client.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := sess.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		var stderr bytes.Buffer
		sess.Stderr = &stderr
		if err := sess.Start(""); err != nil {
			b.Fatal(err)
		}
		got, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, stdout, buf)
		if err != nil || got != n {
			b.Fatalf("received %d bytes of %d: %v", got, n, err)
		}
		if err := sess.Wait(); err != nil {
			b.Fatalf("%v: %s", err, stderr.Bytes())
		}
		command += shellTimes(b, stderr.String())
		c.Close()
	}
	reportCPU(b, cpu)
	b.StopTimer()
	sshd := sourceCPU(b, h) - source - command
	b.ReportMetric(float64(sshd)/float64(time.Millisecond)/float64(b.N), "sshd-cpu-ms/op")
	b.ReportMetric(float64(command)/float64(time.Millisecond)/float64(b.N), "cmd-cpu-ms/op")
}

var timesRE = regexp.MustCompile(`(\d+)m([\d.]+)s`)

// shellTimes is the sum of the times a shell's `times` printed: its own and
// its children's, user and system.
func shellTimes(t testing.TB, out string) time.Duration {
	t.Helper()
	var sum time.Duration
	for _, m := range timesRE.FindAllStringSubmatch(out, -1) {
		mins, _ := strconv.Atoi(m[1])
		secs, _ := strconv.ParseFloat(m[2], 64)
		sum += time.Duration(mins)*time.Minute + time.Duration(secs*float64(time.Second))
	}
	if sum == 0 && !strings.Contains(out, "0m0") {
		t.Fatalf("no `times` output in %q", out)
	}
	return sum
}

// sourceCPU is the CPU time of the processes in h's network namespace, and
// of their exited children: sshd, the sessions it forked and their
// commands. It first waits for the sessions to end, leaving sshd alone, so
// that their time has reached sshd's count of its children's.
func sourceCPU(t testing.TB, h *sshtest.Host) time.Duration {
	t.Helper()
	var ns syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", h.NS), &ns); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", ns.Ino)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var ticks, procs int64
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, d := range dirs {
			if l, _ := os.Readlink(filepath.Join(d, "ns/net")); l != want {
				continue
			}
			stat, err := os.ReadFile(filepath.Join(d, "stat"))
			if err != nil {
				continue // gone
			}
			// utime, stime, cutime and cstime are fields 14 to 17; the
			// command name in field 2 may hold spaces.
			f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
			for _, v := range f[11:15] {
				n, _ := strconv.ParseInt(v, 10, 64)
				ticks += n
			}
			procs++
		}
		if procs == 1 || time.Now().After(deadline) {
			return time.Duration(ticks) * time.Second / 100 // USER_HZ
		}
	}
}
