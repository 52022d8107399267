package store

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkBackup measures first-backup throughput of a mixed file (random,
// text-like and zero regions) into a fresh store.
func BenchmarkBackup(b *testing.B) {
	src := filepath.Join(b.TempDir(), "data")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 1<<20)
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog 0123456789\n"), 1<<20/55+1)[:1<<20]
	const size = 256 << 20
	for i := 0; i < size>>20; i++ {
		switch i % 4 {
		case 0, 1:
			for j := 0; j < len(buf); j += 8 {
				v := r.Uint64()
				for k := 0; k < 8; k++ {
					buf[j+k] = byte(v >> (8 * k))
				}
			}
			f.Write(buf)
		case 2:
			f.Write(text)
		case 3:
			f.Write(make([]byte, 1<<20))
		}
	}
	f.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, _ := newStore(b)
		b.StartTimer()
		if _, err := s.Backup(context.Background(), "bench", []string{src}, BackupOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
