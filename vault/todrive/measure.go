package todrive

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"strings"

	"drawbridge/vault/tree"
)

// Size is what a restore will write, as far as the snapshot's trees tell.
type Size struct {
	Files int64 // regular files
	Dirs  int64
	Other int64 // symlinks, hardlinks, devices, fifos
	Bytes int64 // file content
	// Largest is the size of the largest file and LargestPath its slash
	// path under what is restored: FAT32 holds no file of 4 GiB or more.
	Largest     int64
	LargestPath string
	sizes       []int64
}

// OnDisk estimates the bytes a filesystem with blocks of bsize bytes needs
// to hold it: each file rounded up to whole blocks, a block for every
// directory and other entry, and a margin of 1% plus 4 MiB for the
// filesystem's own bookkeeping and hardlinks that become copies.
func (s Size) OnDisk(bsize int64) int64 {
	if bsize <= 0 {
		bsize = 4096
	}
	var n int64
	for _, sz := range s.sizes {
		n = satAdd(n, (sz+bsize-1)/bsize*bsize)
	}
	n = satAdd(n, (s.Dirs+s.Other)*bsize)
	return satAdd(satAdd(n, n/100), 4<<20)
}

// satAdd adds two non-negative sizes, stopping at the largest int64: a
// hostile tree's sizes must not wrap around into a small number.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// Measure walks the subtree at subpath of the snapshot tree root and adds
// up what restoring it writes. Trees that cannot be read are left out (the
// restore reports them as damage); only the root and the trees on the way
// to subpath must be readable.
func Measure(ctx context.Context, src interface {
	Tree(ctx context.Context, id tree.ID) (*tree.Tree, error)
}, root tree.ID, subpath string) (Size, error) {
	var s Size
	t, err := src.Tree(ctx, root)
	if err != nil {
		return s, fmt.Errorf("read the snapshot's root tree: %w", err)
	}
	p := strings.Trim(subpath, "/")
	var comps []string
	if p != "" {
		comps = strings.Split(p, "/")
	}
	for i, c := range comps {
		var e *tree.Entry
		for j := range t.Entries {
			if t.Entries[j].Name == c {
				e = &t.Entries[j]
				break
			}
		}
		where := strings.Join(comps[:i+1], "/")
		switch {
		case e == nil || tree.ValidName(c) != nil:
			return s, fmt.Errorf("restore %q: %w", where, fs.ErrNotExist)
		case e.Kind != tree.Dir && i < len(comps)-1:
			return s, fmt.Errorf("restore %q: %q is not a directory", subpath, where)
		case e.Kind != tree.Dir:
			s.add(e, c)
			return s, nil
		}
		if t, err = src.Tree(ctx, e.Subtree); err != nil {
			return s, fmt.Errorf("read the tree of %q: %w", where, err)
		}
	}
	type dir struct {
		t    *tree.Tree
		path string
	}
	queue := []dir{{t, ""}}
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return s, err
		}
		d := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		for i := range d.t.Entries {
			e := &d.t.Entries[i]
			p := e.Name
			if d.path != "" {
				p = d.path + "/" + e.Name
			}
			s.add(e, p)
			if e.Kind != tree.Dir {
				continue
			}
			if sub, err := src.Tree(ctx, e.Subtree); err == nil {
				queue = append(queue, dir{sub, p})
			}
		}
	}
	return s, nil
}

func (s *Size) add(e *tree.Entry, path string) {
	switch e.Kind {
	case tree.File:
		sz := int64(min(e.Size, 1<<62))
		if sz > s.Largest {
			s.Largest, s.LargestPath = sz, path
		}
		s.Files++
		s.Bytes = satAdd(s.Bytes, sz)
		s.sizes = append(s.sizes, sz)
	case tree.Dir:
		s.Dirs++
	default:
		s.Other++
	}
}
