package restore

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"drawbridge/vault/tree"
)

// Below the checks on names: even if a tree got two entries of one name past
// accept, the second is never written through the symlink the first left,
// whether that points out of the target or at a file inside it.
func TestNothingFollowsASnapshotSymlink(t *testing.T) {
	parent := t.TempDir()
	canary := filepath.Join(parent, "canary")
	if err := os.Mkdir(canary, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(parent, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "victim"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(target)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	r := &restorer{ctx: ctx, cancel: cancel, root: root, copies: map[string]string{}, jobs: make(chan fileJob, 1)}
	top := &frame{dir: root, rel: "."}
	r.stack = []*frame{top}
	defer top.close()

	for name, to := range map[string]string{"abs": canary, "rel": "../canary", "root": "/", "up": "../..", "inside": "victim"} {
		if err := r.entry(top, &tree.Entry{Name: name, Kind: tree.Symlink, Mode: 0o777, Target: to}); err != nil {
			t.Fatal(err)
		}
		for _, e := range []tree.Entry{
			{Name: name, Kind: tree.Dir, Mode: 0o755},
			{Name: name, Kind: tree.File, Mode: 0o644},
			{Name: name, Kind: tree.FIFO, Mode: 0o644},
			{Name: name, Kind: tree.Symlink, Mode: 0o777, Target: "x"},
		} {
			if err := r.entry(top, &e); err == nil {
				t.Errorf("%v %q over a symlink to %q: no error", e.Kind, name, to)
			}
		}
		if to != "victim" {
			// os.Root refuses a path through a symlink out of the target.
			if f, err := root.OpenFile(name+"/pwned", os.O_WRONLY|os.O_CREATE, 0o644); err == nil {
				f.Close()
				t.Errorf("os.Root wrote through %q -> %q", name, to)
			}
		}
	}
	close(r.jobs)
	for job := range r.jobs {
		job.f.Close()
		t.Errorf("a file job was queued for %q", job.rel)
	}
	if des, err := os.ReadDir(canary); err != nil || len(des) != 0 {
		t.Errorf("canary: %v %v", des, err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "victim")); err != nil || string(b) != "keep" {
		t.Errorf("victim: %q %v", b, err)
	}
	if len(r.damaged) != 0 {
		t.Errorf("damage: %v", r.damaged)
	}
}
