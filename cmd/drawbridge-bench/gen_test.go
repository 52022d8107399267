package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hashDir hashes the names, sizes and contents of every file under dir.
func hashDir(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		io.WriteString(h, rel+"\x00")
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestTreeDeterministic(t *testing.T) {
	const budget, maxFile = 4 << 20, 1 << 20
	var hashes []string
	for range 2 {
		dir := t.TempDir()
		if err := writeTree(dir, budget, maxFile); err != nil {
			t.Fatal(err)
		}
		n, files, err := fileBytes(dir)
		if err != nil {
			t.Fatal(err)
		}
		if n != budget {
			t.Errorf("tree holds %d bytes, want %d", n, budget)
		}
		if files < 20 {
			t.Errorf("tree holds %d files, want a spread of sizes", files)
		}
		hashes = append(hashes, hashDir(t, dir))
	}
	if hashes[0] != hashes[1] {
		t.Errorf("two generations of the tree differ: %s, %s", hashes[0], hashes[1])
	}
}

func TestTreePlanMix(t *testing.T) {
	_, files := planTree(fullScale.TreeBytes, fullScale.TreeMax)
	if len(files) < 1000 || len(files) > 10000 {
		t.Errorf("full tree has %d files, want a few thousand", len(files))
	}
	var byKind [5]int64
	var largest int64
	var total int64
	for _, f := range files {
		byKind[f.Kind] += f.Size
		total += f.Size
		largest = max(largest, f.Size)
	}
	if total != fullScale.TreeBytes || largest != fullScale.TreeMax {
		t.Errorf("total %d, largest %d; want %d, %d", total, largest, fullScale.TreeBytes, fullScale.TreeMax)
	}
	share := func(b int64) float64 { return float64(b) / float64(total) }
	if s := share(byKind[kindText] + byKind[kindSource]); s < 0.4 || s > 0.6 {
		t.Errorf("compressible share %.2f, want about 0.5", s)
	}
	if s := share(byKind[kindRandom]); s < 0.25 || s > 0.4 {
		t.Errorf("random share %.2f, want about 0.33", s)
	}
	if s := share(byKind[kindDup] + byKind[kindShared]); s < 0.1 || s > 0.25 {
		t.Errorf("repetitive share %.2f, want about 0.17", s)
	}
	if byKind[kindDup] == 0 {
		t.Error("no duplicated files")
	}
}

func TestTinyDeterministic(t *testing.T) {
	var hashes []string
	for range 2 {
		dir := t.TempDir()
		if err := writeTiny(dir, 300, 12); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, hashDir(t, dir))
	}
	if hashes[0] != hashes[1] {
		t.Errorf("two generations of tiny/ differ")
	}
}

func TestImages(t *testing.T) {
	const size = 16 << 20
	e := defaultEdit
	var img1 []byte
	for i := range 2 {
		var b bytes.Buffer
		if err := writeImage1(&b, size); err != nil {
			t.Fatal(err)
		}
		if b.Len() != size {
			t.Fatalf("image1 is %d bytes, want %d", b.Len(), size)
		}
		if i == 1 && !bytes.Equal(b.Bytes(), img1) {
			t.Fatal("two generations of image1 differ")
		}
		img1 = b.Bytes()
	}

	var b bytes.Buffer
	if err := writeImage2(&b, bytes.NewReader(img1), size, e); err != nil {
		t.Fatal(err)
	}
	img2 := b.Bytes()
	if len(img2) != size+int(e.InsertLen) {
		t.Fatalf("image2 is %d bytes, want %d", len(img2), size+e.InsertLen)
	}
	// Without the inserted bytes, image2 lines up with image1 again.
	aligned := append(append([]byte{}, img2[:e.InsertAt]...), img2[e.InsertAt+e.InsertLen:]...)
	var diff int64
	for i := range aligned {
		if aligned[i] != img1[i] {
			diff++
		}
	}
	rewritten := e.changed(size) - e.InsertLen
	want := int64(e.Fraction * size)
	if rewritten < want || rewritten > want+e.Spot {
		t.Errorf("edit rewrites %d bytes, want 2%% of %d = %d", rewritten, size, want)
	}
	// Fresh random bytes over old ones differ in all but about 1 in 256.
	if diff < rewritten*98/100 || diff > rewritten {
		t.Errorf("image2 differs from image1 in %d bytes (besides the insertion), want about %d", diff, rewritten)
	}
}

func TestImageContentMix(t *testing.T) {
	var b bytes.Buffer
	if err := writeImage1(&b, 64<<20); err != nil {
		t.Fatal(err)
	}
	var zeroPages, textPages int
	page := 4 << 10
	img := b.Bytes()
	for off := 0; off < len(img); off += page {
		p := img[off : off+page]
		switch {
		case bytes.Count(p, []byte{0}) == page:
			zeroPages++
		case bytes.Count(p, []byte(" "))+bytes.Count(p, []byte("\t")) > page/20:
			textPages++
		}
	}
	pages := len(img) / page
	if z := float64(zeroPages) / float64(pages); z < 0.1 || z > 0.4 {
		t.Errorf("zero share %.2f, want about 0.25", z)
	}
	if x := float64(textPages) / float64(pages); x < 0.15 || x > 0.45 {
		t.Errorf("text share %.2f, want about 0.30", x)
	}
}

func TestFormatTable(t *testing.T) {
	res := results{
		Tools:   []string{"drawbridge", "restic"},
		Changed: 22_020_096,
		Steps: []stepResult{
			{Step: "tree (first)", Bytes: 600_000_000, Tools: map[string]*toolResult{
				"drawbridge": {measure: measure{Seconds: 2, MaxRSS: 100 << 20}, MBps: 300, Growth: 400_000_000},
				"restic":     {measure: measure{Seconds: 5, MaxRSS: 250 << 20}, MBps: 120, Growth: 420_000_000},
			}},
			{Step: stepImage2, Bytes: 1_074_790_400, Tools: map[string]*toolResult{
				"restic": {measure: measure{Seconds: 3.5, MaxRSS: 300 << 20}, MBps: 307.1, Growth: 30_000_000},
			}},
		},
	}
	got := formatTable(res)
	lines := strings.Split(strings.TrimRight(got, "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("table has %d lines, want 7:\n%s", len(lines), got)
	}
	for _, want := range []string{"drawbridge", "restic", "peak RSS MiB", "store growth MB"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("first header line lacks %q:\n%s", want, got)
		}
	}
	row := strings.Fields(lines[3])
	wantRow := []string{"tree", "(first)", "600.0", "2.00", "300.0", "5.00", "120.0", "2.50x", "100", "250", "+400.0", "+420.0"}
	if strings.Join(row, " ") != strings.Join(wantRow, " ") {
		t.Errorf("row 1 = %q, want %q", row, wantRow)
	}
	row = strings.Fields(lines[4])
	wantRow = []string{"image2", "(changed)", "1074.8", "-", "-", "3.50", "307.1", "-", "-", "300", "-", "+30.0"}
	if strings.Join(row, " ") != strings.Join(wantRow, " ") {
		t.Errorf("row 2 = %q, want %q", row, wantRow)
	}
	// Columns line up: every row and the rule are as wide as the header.
	w := len(lines[1])
	for _, l := range lines[1:5] {
		if len(l) != w {
			t.Errorf("line %q is %d wide, want %d", l, len(l), w)
		}
	}
	if !strings.Contains(lines[6], "restic 30.0 MB (1.36x)") {
		t.Errorf("dedup line = %q", lines[6])
	}
}
