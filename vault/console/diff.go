package console

import (
	"context"
	"path"
	"slices"
	"sync/atomic"

	"drawbridge/vault/tree"
)

// MaxDiffChanges caps the changes a diff keeps; the rest are counted.
const MaxDiffChanges = 100_000

// Change is one path that differs between two snapshots.
type Change struct {
	Op      byte // '+' added, '-' removed, '~' changed
	Path    string
	Kind    tree.Kind // of the newer entry; of the older one when removed
	OldSize uint64
	NewSize uint64
}

// DiffResult is what Diff found.
type DiffResult struct {
	Changes                 []Change // in path order
	Added, Removed, Changed int
	Over                    int // changes found past MaxDiffChanges, not kept
	Dirs                    int // directories compared
}

// Diff compares the trees old and new: an added or removed directory is one
// change, not one per file under it; a subtree with the same id is the same
// and is not read. dirs counts the directories compared, for progress.
func Diff(ctx context.Context, r Reader, old, new tree.ID, dirs *atomic.Int64) (*DiffResult, error) {
	res := &DiffResult{}
	err := diffDir(ctx, r, "/", old, new, res, dirs)
	return res, err
}

func (res *DiffResult) add(c Change) {
	switch c.Op {
	case '+':
		res.Added++
	case '-':
		res.Removed++
	default:
		res.Changed++
	}
	if len(res.Changes) >= MaxDiffChanges {
		res.Over++
		return
	}
	res.Changes = append(res.Changes, c)
}

func diffDir(ctx context.Context, r Reader, dir string, old, new tree.ID, res *DiffResult, dirs *atomic.Int64) error {
	if old == new {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	a, err := r.Tree(ctx, old)
	if err != nil {
		return err
	}
	b, err := r.Tree(ctx, new)
	if err != nil {
		return err
	}
	res.Dirs++
	if dirs != nil {
		dirs.Add(1)
	}
	// Entries are sorted bytewise by name, so one merge pass pairs them.
	i, j := 0, 0
	for i < len(a.Entries) || j < len(b.Entries) {
		switch {
		case j == len(b.Entries) || (i < len(a.Entries) && a.Entries[i].Name < b.Entries[j].Name):
			e := &a.Entries[i]
			res.add(Change{Op: '-', Path: path.Join(dir, e.Name), Kind: e.Kind, OldSize: e.Size})
			i++
		case i == len(a.Entries) || b.Entries[j].Name < a.Entries[i].Name:
			e := &b.Entries[j]
			res.add(Change{Op: '+', Path: path.Join(dir, e.Name), Kind: e.Kind, NewSize: e.Size})
			j++
		default:
			ea, eb := &a.Entries[i], &b.Entries[j]
			p := path.Join(dir, ea.Name)
			i++
			j++
			if ea.Kind == tree.Dir && eb.Kind == tree.Dir {
				if err := diffDir(ctx, r, p, ea.Subtree, eb.Subtree, res, dirs); err != nil {
					return err
				}
				continue
			}
			if !sameEntry(ea, eb) {
				res.add(Change{Op: '~', Path: p, Kind: eb.Kind, OldSize: ea.Size, NewSize: eb.Size})
			}
		}
	}
	return nil
}

// sameEntry compares two entries of the same name, not looking into
// directories: content, kind, mode, owner, time, target, device numbers.
func sameEntry(a, b *tree.Entry) bool {
	if a.Kind != b.Kind || a.Mode != b.Mode || a.UID != b.UID || a.GID != b.GID ||
		a.MtimeSec != b.MtimeSec || a.MtimeNsec != b.MtimeNsec || a.Size != b.Size ||
		a.Target != b.Target || a.Major != b.Major || a.Minor != b.Minor || a.Layout != b.Layout {
		return false
	}
	return slices.Equal(a.Chunks, b.Chunks) && slices.Equal(a.Lists, b.Lists)
}
