package export

import (
	"drawbridge/vault/export/manifest"
	"os"
	"testing"
)

// TestRecheckListsRenamed simulates a filesystem that stores a name other
// than the one asked for, as FAT does with trailing dots.
func TestRecheckListsRenamed(t *testing.T) {
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	x := &exporter{files: root}
	add := func(typ, p string) {
		x.entries = append(x.entries, &manifestEntry{Type: typ, Path: p, Size: -1})
	}
	add("dir", "d.")
	add("file", "d./f")
	add("file", "ok")
	add("fifo", "pipe")
	root.Mkdir("d", 0o755) // what FAT made of "d."
	root.WriteFile("d/f", nil, 0o644)
	root.WriteFile("ok", nil, 0o644)
	if err := x.recheck(); err != nil {
		t.Fatal(err)
	}
	for _, e := range x.entries {
		notExp := e.NotExported != ""
		if want := e.Path == "d." || e.Path == "d./f"; notExp != want {
			t.Errorf("%q: not exported %v (%q)", e.Path, notExp, e.NotExported)
		}
	}
	if _, err := root.Stat("d"); err == nil {
		t.Error("the renamed directory was left on the drive")
	}
	if _, err := root.Stat("ok"); err != nil {
		t.Errorf("a good file was removed: %v", err)
	}
}

type manifestEntry = manifest.Entry
