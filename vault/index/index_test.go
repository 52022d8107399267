package index

import (
	"os"
	"path/filepath"
	"testing"

	"drawbridge/vault/pack"
)

// TestOpenAfterKillLeftEmptyLogs: a process killed right after badger
// created a memtable or value log file leaves it empty; the index must
// still open and keep what it had.
func TestOpenAfterKillLeftEmptyLogs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	x, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pack.NewID()
	if err != nil {
		t.Fatal(err)
	}
	blob := [32]byte{1, 2, 3}
	if err := x.AddPack(id, []pack.Entry{{Pack: id, ID: blob, Offset: 100, Length: 200, Type: pack.Data, Raw: 50}}); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"99999.mem", "999999.vlog"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	x, err = Open(dir)
	if err != nil {
		t.Fatalf("open with empty log files left by a kill: %v", err)
	}
	defer x.Close()
	e, err := x.Lookup(blob)
	if err != nil || e.Pack != id || e.Offset != 100 {
		t.Fatalf("lookup after reopening: %+v, %v", e, err)
	}
}
