package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
)

// scale sizes the data sets.
type scale struct {
	Name       string
	TreeBytes  int64 // total size of tree/
	TreeMax    int64 // largest file in tree/
	ImageBytes int64 // size of image1.img
	TinyFiles  int
	TinyDirs   int
	Edit       imageEdit // how image2.img differs from image1.img
}

var (
	fullScale = scale{
		Name: "full", TreeBytes: 600 << 20, TreeMax: 50 << 20, ImageBytes: 1 << 30,
		TinyFiles: 70000, TinyDirs: 700, Edit: defaultEdit,
	}
	quickScale = scale{
		Name: "quick", TreeBytes: 60 << 20, TreeMax: 5 << 20, ImageBytes: 100 << 20,
		TinyFiles: 7000, TinyDirs: 70, Edit: defaultEdit,
	}
	defaultEdit = imageEdit{InsertAt: 4 << 20, InsertLen: 1 << 20, Spot: 64 << 10, Fraction: 0.02}
)

// ioBuf is the size of the buffers data is generated into and written from.
const ioBuf = 1 << 20

// Kinds of tree file content.
const (
	kindText = iota
	kindSource
	kindRandom
	kindDup    // an exact copy of an earlier file
	kindShared // made of blocks that other files share
)

// treeFile is one file of the planned tree.
type treeFile struct {
	Path  string // slash-separated, relative to the tree's root
	Size  int64
	Kind  int
	DupOf int // index of the file copied, for kindDup
}

// planTree lays out the mixed tree: nested directories and files whose sizes
// are log-normal (median 8 KiB) up to maxFile, drawn until the sizes add up to
// budget. By bytes, about half the content is compressible text or source,
// a third random, and the rest repetitive: duplicates and shared blocks.
func planTree(budget, maxFile int64) (dirs []string, files []treeFile) {
	r := rand.New(newRand("tree-plan", 0))
	v := newVocab()

	dirs = []string{"."}
	var grow func(parent string, depth int)
	grow = func(parent string, depth int) {
		n := 8
		if depth > 0 {
			n = r.IntN(7 - depth)
		}
		for range n {
			d := path.Join(parent, fmt.Sprintf("%s-%d", v.word(r.Uint64()), len(dirs)))
			dirs = append(dirs, d)
			if depth < 3 {
				grow(d, depth+1)
			}
		}
	}
	grow(".", 0)

	ext := [...]string{kindText: ".txt", kindSource: ".go", kindRandom: ".bin", kindDup: ".dat", kindShared: ".dat"}
	m := newMix(0.50, 0.33, 0.17) // compressible, random, repetitive
	var total int64
	for i := 0; total < budget; i++ {
		var size int64
		switch {
		case i == 0:
			size = maxFile // the top of the range is always there
		case r.IntN(100) == 0:
			size = 0
		default:
			size = int64(math.Exp(math.Log(8<<10) + 2.5*r.NormFloat64()))
		}
		size = min(size, maxFile, budget-total)

		f := treeFile{Size: size, DupOf: -1}
		switch m.pick(r, size) {
		case 0:
			f.Kind = kindText
			if r.IntN(5) < 2 {
				f.Kind = kindSource
			}
		case 1:
			f.Kind = kindRandom
		case 2:
			f.Kind = kindShared
			if i > 0 && r.IntN(2) == 0 {
				j := r.IntN(i)
				if o := files[j]; o.Size > 0 && o.Size <= budget-total {
					f.Kind, f.DupOf = kindDup, j
					m.add(2, o.Size-f.Size)
					f.Size = o.Size
				}
			}
		}
		dir := dirs[r.IntN(len(dirs))]
		f.Path = path.Join(dir, fmt.Sprintf("%s-%d%s", v.word(r.Uint64()), i, ext[f.Kind]))
		files = append(files, f)
		total += f.Size
	}
	return dirs, files
}

// sharedPool is the set of blocks that kindShared files are made from.
func sharedPool() [][]byte {
	v := newVocab()
	pool := make([][]byte, 16)
	for i := range pool {
		pool[i] = make([]byte, 1<<20)
		r := newRand("pool", uint64(i))
		if i%2 == 0 {
			randomFill{r}.fill(pool[i])
		} else {
			textFill(v, r).fill(pool[i])
		}
	}
	return pool
}

// sharedFill writes pool blocks, whole or in part, between stretches of
// fresh random data.
type sharedFill struct {
	r    *rand.Rand
	rnd  randomFill
	pool [][]byte
	cur  []byte // rest of the current segment, for pool segments
	left int    // rest of the current segment, for random segments
}

func (f *sharedFill) fill(p []byte) {
	for len(p) > 0 {
		switch {
		case len(f.cur) > 0:
			n := copy(p, f.cur)
			f.cur, p = f.cur[n:], p[n:]
		case f.left > 0:
			n := min(f.left, len(p))
			f.rnd.fill(p[:n])
			f.left, p = f.left-n, p[n:]
		case f.r.IntN(4) < 3:
			b := f.pool[f.r.IntN(len(f.pool))]
			start := 0
			if f.r.IntN(2) == 0 {
				start = f.r.IntN(len(b) - 64<<10)
			}
			f.cur = b[start:]
		default:
			f.left = 16<<10 + f.r.IntN(240<<10)
		}
	}
}

// writeTree generates the mixed tree under dir.
func writeTree(dir string, budget, maxFile int64) error {
	dirs, files := planTree(budget, maxFile)
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(d)), 0o755); err != nil {
			return err
		}
	}
	v := newVocab()
	pool := sharedPool()
	buf := make([]byte, ioBuf)
	for i, f := range files {
		name := filepath.Join(dir, filepath.FromSlash(f.Path))
		var err error
		if f.Kind == kindDup {
			err = copyFile(name, filepath.Join(dir, filepath.FromSlash(files[f.DupOf].Path)))
		} else {
			r := newRand("tree", uint64(i))
			var fl filler
			switch f.Kind {
			case kindText:
				fl = textFill(v, r)
			case kindSource:
				fl = sourceFill(v, r)
			case kindRandom:
				fl = randomFill{r}
			case kindShared:
				fl = &sharedFill{r: rand.New(r), rnd: randomFill{newRand("tree-shared", uint64(i))}, pool: pool}
			}
			err = writeFilled(name, f.Size, fl, buf)
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
	}
	return nil
}

// writeFilled writes size bytes from fl to a new file.
func writeFilled(name string, size int64, fl filler, buf []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	for size > 0 {
		p := buf[:min(int64(len(buf)), size)]
		fl.fill(p)
		if _, err := f.Write(p); err != nil {
			f.Close()
			return err
		}
		size -= int64(len(p))
	}
	return f.Close()
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeImage1 writes a disk image of the given size: regions of 64 KiB to
// 32 MiB, by bytes about 25% zeros, 45% random and 30% text or source.
func writeImage1(w io.Writer, size int64) error {
	r := rand.New(newRand("image-plan", 0))
	v := newVocab()
	m := newMix(0.25, 0.45, 0.30)
	buf := make([]byte, ioBuf)
	for off, i := int64(0), uint64(0); off < size; i++ {
		n := int64(math.Exp(math.Log(64<<10)+r.Float64()*math.Log(512))) &^ (4<<10 - 1)
		n = min(n, size-off)
		var fl filler
		switch m.pick(r, n) {
		case 0:
			fl = zeroFill{}
		case 1:
			fl = randomFill{newRand("image", i)}
		default:
			if i%2 == 0 {
				fl = textFill(v, newRand("image", i))
			} else {
				fl = sourceFill(v, newRand("image", i))
			}
		}
		for left := n; left > 0; {
			p := buf[:min(int64(len(buf)), left)]
			fl.fill(p)
			if _, err := w.Write(p); err != nil {
				return err
			}
			left -= int64(len(p))
		}
		off += n
	}
	return nil
}

// imageEdit says how image2 is made from image1: Fraction of image1's bytes
// rewritten with fresh random data in Spot-sized, Spot-aligned pieces at
// random places, and InsertLen new random bytes inserted at InsertAt, which
// shifts everything after it.
type imageEdit struct {
	InsertAt  int64
	InsertLen int64
	Spot      int64
	Fraction  float64
}

// spots returns the Spot-sized slots of an image of the given size that are
// rewritten, in increasing order.
func (e imageEdit) spots(size int64) []int64 {
	slots := int(size / e.Spot)
	n := min(slots, int(math.Ceil(e.Fraction*float64(size)/float64(e.Spot))))
	r := rand.New(newRand("image-edit", 0))
	perm := make([]int64, slots)
	for i := range perm {
		perm[i] = int64(i)
	}
	for i := range n { // partial Fisher-Yates
		j := i + r.IntN(slots-i)
		perm[i], perm[j] = perm[j], perm[i]
	}
	chosen := perm[:n]
	slices.Sort(chosen)
	return chosen
}

// changed is the number of bytes in which image2 differs from image1.
func (e imageEdit) changed(size int64) int64 {
	return int64(len(e.spots(size)))*e.Spot + e.InsertLen
}

// writeImage2 writes image1 (read from base, of the given size) with the
// edit applied.
func writeImage2(w io.Writer, base io.ReaderAt, size int64, e imageEdit) error {
	if e.Spot <= 0 || e.InsertAt%e.Spot != 0 || e.InsertAt > size {
		return fmt.Errorf("bad image edit %+v for size %d", e, size)
	}
	bw := bufio.NewWriterSize(w, 4*ioBuf)
	spots := e.spots(size)
	rnd := randomFill{newRand("image-edit-data", 0)}
	buf := make([]byte, e.Spot)
	for off, slot := int64(0), int64(0); off < size; off, slot = off+e.Spot, slot+1 {
		if off == e.InsertAt {
			ins := make([]byte, e.InsertLen)
			rnd.fill(ins)
			if _, err := bw.Write(ins); err != nil {
				return err
			}
		}
		p := buf[:min(e.Spot, size-off)]
		if len(spots) > 0 && spots[0] == slot {
			rnd.fill(p)
			spots = spots[1:]
		} else if _, err := base.ReadAt(p, off); err != nil && !(errors.Is(err, io.EOF) && off+int64(len(p)) == size) {
			return fmt.Errorf("read image1 at %d: %w", off, err)
		}
		if _, err := bw.Write(p); err != nil {
			return err
		}
	}
	if e.InsertAt == size {
		ins := make([]byte, e.InsertLen)
		rnd.fill(ins)
		if _, err := bw.Write(ins); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// writeTiny generates n small files (10 to 2000 bytes, log-uniform) spread
// over dirs directories, 25 to a parent.
func writeTiny(dir string, n, dirs int) error {
	r := rand.New(newRand("tiny-plan", 0))
	src := newRand("tiny", 0)
	v := newVocab()
	fills := []filler{textFill(v, src), sourceFill(v, src), randomFill{src}}
	exts := []string{".txt", ".go", ".bin"}
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(dir, tinyDir(d)), 0o755); err != nil {
			return err
		}
	}
	buf := make([]byte, 2000)
	for i := range n {
		size := int(math.Exp(math.Log(10) + r.Float64()*math.Log(200)))
		k := 0
		switch x := r.IntN(10); {
		case x >= 8:
			k = 2
		case x >= 4:
			k = 1
		}
		p := buf[:size]
		fills[k].fill(p)
		name := filepath.Join(dir, tinyDir(i%dirs), fmt.Sprintf("%s-%d%s", v.word(r.Uint64()), i, exts[k]))
		if err := os.WriteFile(name, p, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func tinyDir(i int) string {
	return filepath.Join(fmt.Sprintf("p%02d", i/25), fmt.Sprintf("d%03d", i))
}

// dataSets are the generated inputs.
type dataSets struct {
	Dir     string
	Tree    string
	Image1  string
	Image2  string
	Tiny    string
	Changed int64 // bytes in which image2 differs from image1
}

// prepare generates the data sets under dir, reusing each one whose stamp
// says it was made by this generator version at this scale.
func prepare(dir string, sc scale, log io.Writer) (dataSets, error) {
	ds := dataSets{
		Dir:     dir,
		Tree:    filepath.Join(dir, "tree"),
		Image1:  filepath.Join(dir, "image1.img"),
		Image2:  filepath.Join(dir, "image2.img"),
		Tiny:    filepath.Join(dir, "tiny"),
		Changed: sc.Edit.changed(sc.ImageBytes),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ds, err
	}
	stamp := fmt.Sprintf("drawbridge-bench generator v%d %+v\n", genVersion, sc)
	steps := []struct {
		path string
		gen  func(string) error
	}{
		{ds.Tree, func(p string) error { return writeTree(p, sc.TreeBytes, sc.TreeMax) }},
		{ds.Image1, func(p string) error {
			os.Remove(ds.Image2 + ".stamp") // image2 is made from image1
			return writeFileWith(p, func(w io.Writer) error { return writeImage1(w, sc.ImageBytes) })
		}},
		{ds.Image2, func(p string) error {
			base, err := os.Open(ds.Image1)
			if err != nil {
				return err
			}
			defer base.Close()
			return writeFileWith(p, func(w io.Writer) error { return writeImage2(w, base, sc.ImageBytes, sc.Edit) })
		}},
		{ds.Tiny, func(p string) error { return writeTiny(p, sc.TinyFiles, sc.TinyDirs) }},
	}
	for _, s := range steps {
		name := filepath.Base(s.path)
		if b, err := os.ReadFile(s.path + ".stamp"); err == nil && string(b) == stamp {
			fmt.Fprintf(log, "data: %s: reusing\n", name)
			continue
		}
		fmt.Fprintf(log, "data: %s: generating\n", name)
		if err := os.Remove(s.path + ".stamp"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ds, err
		}
		if err := os.RemoveAll(s.path); err != nil {
			return ds, err
		}
		if err := s.gen(s.path); err != nil {
			return ds, fmt.Errorf("generate %s: %w", name, err)
		}
		if err := os.WriteFile(s.path+".stamp", []byte(stamp), 0o644); err != nil {
			return ds, err
		}
	}
	return ds, nil
}

func writeFileWith(name string, write func(io.Writer) error) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
