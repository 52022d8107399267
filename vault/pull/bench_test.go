package pull

import (
	"context"
	"fmt"
	"path/filepath"
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
