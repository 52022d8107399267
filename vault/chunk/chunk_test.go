package chunk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// refCut is Cut written as docs/format.md §10 states it, one byte at a time.
func refCut(data []byte, p Params, final bool) int {
	n := len(data)
	if n < p.Min {
		if final {
			return n
		}
		return 0
	}
	maskS, maskL := p.masks()
	var h uint64
	for i := p.Min - Window; i < min(n, p.Max); i++ {
		h = h<<1 + gear[data[i]]
		l := i + 1
		if l < p.Min {
			continue
		}
		mask := maskS
		if l > p.Avg {
			mask = maskL
		}
		if h&mask == 0 {
			return l
		}
	}
	switch {
	case n >= p.Max:
		return p.Max
	case final:
		return n
	}
	return 0
}

// cutAll splits data with Cut.
func cutAll(data []byte, p Params) []int {
	var lens []int
	for len(data) > 0 {
		n := Cut(data, p, len(data) < p.Max)
		if n <= 0 || n > len(data) {
			panic(fmt.Sprintf("Cut returned %d for %d bytes", n, len(data)))
		}
		lens = append(lens, n)
		data = data[n:]
	}
	return lens
}

// nextAll reads r to the end with a Chunker.
func nextAll(r io.Reader, p Params) ([][]byte, error) {
	c := New(r, p)
	var chunks [][]byte
	var buf []byte
	for {
		ch, err := c.Next(buf)
		if err == io.EOF {
			if len(ch) != 0 {
				return chunks, fmt.Errorf("EOF with %d bytes", len(ch))
			}
			return chunks, nil
		}
		if err != nil {
			return chunks, err
		}
		chunks = append(chunks, bytes.Clone(ch))
		buf = ch // reuse the memory as a caller with a pool would
	}
}

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// patternReader returns reads whose sizes cycle through sizes.
type patternReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *patternReader) Read(b []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(b), len(r.data), r.sizes[r.i%len(r.sizes)])
	r.i++
	copy(b, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// checkChunks checks the invariants of chunks cut from data.
func checkChunks(t testing.TB, data []byte, chunks [][]byte, p Params) {
	t.Helper()
	if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
		t.Fatalf("chunks join to %d bytes, want the %d input bytes", len(got), len(data))
	}
	for i, ch := range chunks {
		if len(ch) == 0 || len(ch) > p.Max || (len(ch) < p.Min && i != len(chunks)-1) {
			t.Fatalf("chunk %d of %d has %d bytes, params %+v", i, len(chunks), len(ch), p)
		}
	}
}

func lensOf(chunks [][]byte) []int {
	l := make([]int, len(chunks))
	for i, ch := range chunks {
		l[i] = len(ch)
	}
	return l
}

var small = Params{Min: 256, Avg: 1024, Max: 4096}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		p  Params
		ok bool
	}{
		{Default, true},
		{small, true},
		{Params{64, 128, 129}, true},
		{Params{63, 128, 256}, false},
		{Params{128, 128, 256}, false},
		{Params{64, 256, 256}, false},
		{Params{64, 384, 1024}, false},
		{Params{16 << 10, 64 << 10, MaxSize}, true},
		{Params{16 << 10, 64 << 10, MaxSize + 1}, false},
		{Params{}, false},
		{Params{-1, 128, 256}, false},
	} {
		if err := tc.p.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}

// TestGear pins the table to its documented procedure: SplitMix64 from 0.
func TestGear(t *testing.T) {
	for i, want := range map[int]uint64{
		0:   0xe220a8397b1dcdaf,
		1:   0x6e789e6aa1b965f4,
		2:   0x06c45d188009454f,
		128: 0x9899202fd20f0841,
		255: 0x5a5832bb47bcf19e,
	} {
		if gear[i] != want {
			t.Errorf("gear[%d] = %#016x, want %#016x", i, gear[i], want)
		}
	}
}

// TestVectors pins the boundaries of known data; docs/format.md §10 quotes them.
func TestVectors(t *testing.T) {
	var data []byte
	var s uint64 = 1
	for len(data) < 1<<20 {
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		z ^= z >> 31
		for k := range 8 {
			data = append(data, byte(z>>(8*k)))
		}
	}
	got := fmt.Sprint(cutAll(data, Default))
	want := "[67499 87216 78728 88852 58333 83275 58777 70952 90515 68962 66846 82051 124944 21626]"
	if got != want {
		t.Errorf("Default chunk lengths = %s, want %s", got, want)
	}
	got = fmt.Sprint(cutAll(data[:8192], small))
	want = "[1047 418 930 1072 1244 1429 1122 930]"
	if got != want {
		t.Errorf("small chunk lengths = %s, want %s", got, want)
	}
}

func TestCutMatchesReference(t *testing.T) {
	data := randBytes(1, 4<<20)
	for _, p := range []Params{Default, small, {64, 128, 129}, {100, 4096, 1 << 20}} {
		for off := 0; off < len(data); {
			rest := data[off:]
			for _, final := range []bool{true, false} {
				for _, cut := range []int{len(rest), p.Min - 1, p.Min, p.Avg, p.Avg + 1, p.Max - 1} {
					if cut < 0 || cut > len(rest) {
						continue
					}
					if got, want := Cut(rest[:cut], p, final), refCut(rest[:cut], p, final); got != want {
						t.Fatalf("%+v at %d, %d bytes, final %v: Cut = %d, reference %d", p, off, cut, final, got, want)
					}
				}
			}
			off += Cut(rest, p, len(rest) < p.Max)
		}
	}
}

func TestCutShortNotFinal(t *testing.T) {
	data := randBytes(2, 1<<20)
	full := Cut(data, Default, false)
	for _, n := range []int{0, 1, Default.Min - 1, Default.Min, full - 1, full, full + 1, Default.Max - 1} {
		want := 0
		if n >= full {
			want = full
		}
		if got := Cut(data[:n], Default, false); got != want {
			t.Errorf("Cut of %d bytes, not final = %d, want %d (boundary at %d)", n, got, want, full)
		}
	}
}

func TestSmallInputs(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want []int
	}{
		{"empty", nil, nil},
		{"one byte", []byte{7}, []int{1}},
		{"below min", randBytes(3, Default.Min-1), []int{Default.Min - 1}},
		{"exactly min", randBytes(3, Default.Min), []int{Default.Min}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cutAll(tc.data, Default); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Cut lengths %v, want %v", got, tc.want)
			}
			chunks, err := nextAll(bytes.NewReader(tc.data), Default)
			if err != nil {
				t.Fatal(err)
			}
			if got := lensOf(chunks); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Next lengths %v, want %v", got, tc.want)
			}
			checkChunks(t, tc.data, chunks, Default)
		})
	}
}

// TestZeros: a run of one byte value has a constant hash, so its chunks all
// have the same length, Max for the gear table in use.
func TestZeros(t *testing.T) {
	data := make([]byte, 10*Default.Max+12345)
	chunks, err := nextAll(bytes.NewReader(data), Default)
	if err != nil {
		t.Fatal(err)
	}
	checkChunks(t, data, chunks, Default)
	for i, ch := range chunks[:len(chunks)-1] {
		if len(ch) != Default.Max {
			t.Fatalf("chunk %d of zeros has %d bytes, want %d", i, len(ch), Default.Max)
		}
	}
	if last := len(chunks[len(chunks)-1]); last != 12345 {
		t.Errorf("last chunk of zeros has %d bytes, want 12345", last)
	}
}

func TestReadPatterns(t *testing.T) {
	for _, p := range []Params{Default, small} {
		for _, size := range []int{0, 1, p.Min, p.Max, p.Max + 1, 2*p.Max + 7, 3 << 20} {
			data := randBytes(uint64(size), size)
			want := cutAll(data, p)
			for _, sizes := range [][]int{{1}, {1, 2, 3, 5, 8, 13}, {p.Max - 1}, {p.Max}, {3 * p.Max}, {4096, 0, 1}} {
				chunks, err := nextAll(&patternReader{data: data, sizes: sizes}, p)
				if err != nil {
					t.Fatal(err)
				}
				checkChunks(t, data, chunks, p)
				if got := lensOf(chunks); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("%+v, %d bytes, reads %v: lengths %v, want %v", p, size, sizes, got, want)
				}
			}
		}
	}
}

// errReader returns err after n bytes, and a byte with it when withData.
type errReader struct {
	r        io.Reader
	n        int
	err      error
	withData bool
}

func (r *errReader) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	if len(b) > r.n {
		b = b[:r.n]
	}
	n, err := r.r.Read(b)
	r.n -= n
	if r.n == 0 && r.withData && err == nil {
		err = r.err
	}
	return n, err
}

func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	data := randBytes(4, 2<<20)
	want := cutAll(data, Default)
	for _, at := range []int{0, 1, Default.Min, Default.Max, 3 * Default.Max, len(data) - 1} {
		for _, withData := range []bool{false, true} {
			c := New(&errReader{r: bytes.NewReader(data), n: at, err: boom, withData: withData}, Default)
			var got []int
			var err error
			for {
				var ch []byte
				if ch, err = c.Next(nil); err != nil {
					break
				}
				got = append(got, len(ch))
			}
			if !errors.Is(err, boom) {
				t.Fatalf("error at %d: Next returned %v, want it to wrap %v", at, err, boom)
			}
			if _, err2 := c.Next(nil); !errors.Is(err2, boom) {
				t.Fatalf("error at %d: Next after error returned %v", at, err2)
			}
			if len(got) > len(want) || fmt.Sprint(got) != fmt.Sprint(want[:len(got)]) {
				t.Fatalf("error at %d: lengths before error %v are not a prefix of %v", at, got, want)
			}
			total := 0
			for _, l := range got {
				total += l
			}
			if total > at {
				t.Fatalf("error at %d: returned %d bytes", at, total)
			}
		}
	}
}

type stuckReader struct{}

func (stuckReader) Read([]byte) (int, error) { return 0, nil }

func TestStuckReader(t *testing.T) {
	if _, err := New(stuckReader{}, Default).Next(nil); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("Next on a reader that never progresses: %v, want io.ErrNoProgress", err)
	}
}

func TestAverage(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB of data")
	}
	data := randBytes(5, 64<<20)
	lens := cutAll(data, Default)
	avg := float64(len(data)) / float64(len(lens))
	t.Logf("%d chunks, average %.0f bytes", len(lens), avg)
	if lo, hi := 0.75*float64(Default.Avg), 1.25*float64(Default.Avg); avg < lo || avg > hi {
		t.Errorf("average chunk %.0f bytes, want within [%.0f, %.0f]", avg, lo, hi)
	}
	for i, l := range lens[:len(lens)-1] {
		if l < Default.Min || l > Default.Max {
			t.Fatalf("chunk %d has %d bytes", i, l)
		}
	}
}

func TestShiftResistance(t *testing.T) {
	data := randBytes(6, 8<<20)
	const at = 1000
	ins := append(append(append([]byte{}, data[:at]...), randBytes(7, 100)...), data[at:]...)
	before := map[string]bool{}
	for _, ch := range splitCut(ins, Default) {
		before[string(ch)] = true
	}
	var after, same int
	off := 0
	for _, ch := range splitCut(data, Default) {
		if off >= at {
			after++
			if before[string(ch)] {
				same++
			}
		}
		off += len(ch)
	}
	t.Logf("%d of %d chunks after the insertion unchanged", same, after)
	if after == 0 || float64(same) < 0.9*float64(after) {
		t.Errorf("%d of %d chunks after the insertion unchanged, want > 90%%", same, after)
	}
}

func splitCut(data []byte, p Params) [][]byte {
	var out [][]byte
	for _, n := range cutAll(data, p) {
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// fuzzParams are small so that short inputs hold many chunks.
var fuzzParams = []Params{
	{64, 128, 256},
	{64, 256, 1024},
	{100, 512, 700},
	{256, 1024, 4096},
	{1000, 2048, 10000},
}

func FuzzChunker(f *testing.F) {
	f.Add([]byte{}, uint8(0), uint8(0), uint16(0))
	f.Add(bytes.Repeat([]byte{0}, 5000), uint8(1), uint8(1), uint16(0))
	f.Add(randBytes(8, 20000), uint8(2), uint8(3), uint16(777))
	f.Fuzz(func(t *testing.T, data []byte, pi, readSize uint8, errAt uint16) {
		p := fuzzParams[int(pi)%len(fuzzParams)]
		want := cutAll(data, p)
		for off, i := 0, 0; i < len(want); i++ {
			if got := refCut(data[off:], p, len(data)-off < p.Max); got != want[i] {
				t.Fatalf("%+v: chunk %d: Cut %d, reference %d", p, i, want[i], got)
			}
			off += want[i]
		}
		sizes := []int{int(readSize) + 1, 1, int(readSize)*7 + 3}
		chunks, err := nextAll(&patternReader{data: data, sizes: sizes}, p)
		if err != nil {
			t.Fatal(err)
		}
		checkChunks(t, data, chunks, p)
		if got := lensOf(chunks); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%+v, reads %v: Next lengths %v, Cut %v", p, sizes, got, want)
		}
		if errAt == 0 || int(errAt) > len(data) {
			return
		}
		boom := errors.New("boom")
		chunks, err = nextAll(&errReader{r: &patternReader{data: data, sizes: sizes}, n: int(errAt), err: boom}, p)
		if !errors.Is(err, boom) {
			t.Fatalf("error after %d bytes: Next returned %v", errAt, err)
		}
		if got := lensOf(chunks); len(got) > len(want) || fmt.Sprint(got) != fmt.Sprint(want[:len(got)]) {
			t.Fatalf("error after %d bytes: lengths %v not a prefix of %v", errAt, got, want)
		}
	})
}

func BenchmarkChunker(b *testing.B) {
	data := randBytes(9, 64<<20)
	b.SetBytes(int64(len(data)))
	var buf []byte
	for b.Loop() {
		c := New(bytes.NewReader(data), Default)
		for {
			ch, err := c.Next(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			buf = ch
		}
	}
}

func BenchmarkCut(b *testing.B) {
	data := randBytes(9, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		cutAll(data, Default)
	}
}
