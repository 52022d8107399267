package agent

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"drawbridge/vault/chunk"
)

// The cutter finds exactly the chunks chunk.Chunker finds, whether the next
// slot starts where the bytes read past the last cut are (the ring did not
// wrap) or elsewhere (it did), and whatever sizes the reads return.
func TestCutterMatchesChunker(t *testing.T) {
	p := chunk.Params{Min: 256, Avg: 1024, Max: 4096}
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	copy(data[300<<10:], make([]byte, 100<<10)) // a run of zeros: chunks of Max
	for _, size := range []int{0, 1, 255, 4096, 4097, len(data)} {
		var want [][]byte
		c := chunk.New(bytes.NewReader(data[:size]), p)
		for {
			b, err := c.Next(nil)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, b)
		}
		for _, wrap := range []bool{false, true} {
			ring := make([]byte, 64*p.Max)
			other := make([]byte, p.Max)
			head := 0
			cu := &cutter{r: iotest.HalfReader(bytes.NewReader(data[:size])), params: p}
			for i := 0; ; i++ {
				slot := ring[head : head : head+p.Max]
				if wrap && i%2 == 1 {
					slot = other[:0:p.Max]
				}
				b, err := cu.next(slot)
				if err == io.EOF {
					if i != len(want) {
						t.Fatalf("size %d wrap %v: %d chunks, want %d", size, wrap, i, len(want))
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if i >= len(want) || !bytes.Equal(b, want[i]) {
					t.Fatalf("size %d wrap %v: chunk %d differs", size, wrap, i)
				}
				if wrap && i%2 == 1 {
					// What was read past the cut moves back into the ring.
					head = 0
				} else {
					head += len(b)
				}
				if head+2*p.Max > len(ring) {
					head = 0
				}
			}
		}
	}
}
