package pull

import (
	"path/filepath"
	"testing"

	"drawbridge/vault/config"
	"drawbridge/vault/internal/sshtest"
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
