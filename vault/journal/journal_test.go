package journal_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"drawbridge/vault/journal"
	"drawbridge/vault/seal"
	"drawbridge/vault/vfs"
	"drawbridge/vault/vfs/vfstest"
)

func identity(t testing.TB, b byte) *seal.Identity {
	t.Helper()
	id, err := seal.IdentityFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// clock hands out distinct times with nanoseconds, in a non-UTC zone so the
// conversion to UTC is exercised.
type clock struct{ t time.Time }

func newClock() *clock {
	return &clock{time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))}
}

func (c *clock) now() time.Time {
	c.t = c.t.Add(1500 * time.Millisecond)
	return c.t
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func open(t testing.TB, fsys vfs.FS, id *seal.Identity) *journal.Journal {
	t.Helper()
	j, err := journal.Open(fsys, id.Public())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return j
}

func appendN(t testing.TB, j *journal.Journal, id *seal.Identity, c *clock, n int) []journal.Record {
	t.Helper()
	var recs []journal.Record
	for i := 0; i < n; i++ {
		r, err := j.Append(id, c.now(), "verify", fmt.Sprintf("check %d", i), map[string]int{"n": i})
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

func scanAll(j *journal.Journal) ([]journal.Record, error) {
	var out []journal.Record
	err := j.Scan(func(r journal.Record) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

func readFile(t testing.TB, fsys vfs.FS, name string) []byte {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// overwrite replaces a file's content in place, as tampering would.
func overwrite(t testing.TB, fsys vfs.FS, name string, data []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	must(t, f.Close())
}

func rname(seq uint64) string { return fmt.Sprintf("journal/%016d", seq) }

func sameRecord(a, b journal.Record) bool {
	return a.Seq == b.Seq && a.Time.Equal(b.Time) && a.Type == b.Type && a.Message == b.Message &&
		a.Prev == b.Prev && bytes.Equal(a.Data, b.Data) && a.Hash == b.Hash
}

func TestRoundTrip(t *testing.T) {
	vfstest.Run(t, func(t *testing.T, b *vfstest.Backend) {
		id, c := identity(t, 1), newClock()
		j := open(t, b.FS, id)
		if seq, tm := j.Last(); seq != 0 || !tm.IsZero() {
			t.Fatalf("empty journal Last = %d %v", seq, tm)
		}
		if recs, err := scanAll(j); err != nil || len(recs) != 0 {
			t.Fatalf("scan empty: %v %v", recs, err)
		}
		if errs := journal.Verify(b.FS, id.Public()); errs != nil {
			t.Fatalf("verify empty store: %v", errs)
		}

		type snap struct {
			ID    string   `json:"id"`
			Paths []string `json:"paths"`
			Files int      `json:"files"`
		}
		inputs := []struct {
			typ, msg string
			data     any
			want     string
		}{
			{"init", "store created", map[string]string{"vault_id": "ab"}, `{"vault_id":"ab"}`},
			{"snapshot", "db1 backed up", snap{"cd", []string{"/srv"}, 3}, `{"id":"cd","paths":["/srv"],"files":3}`},
			{"verify", "", nil, `{}`},
			{"index-rebuild", "über", json.RawMessage(`{ "packs" : 2 }`), `{"packs":2}`},
		}
		var written []journal.Record
		for i, in := range inputs {
			now := c.now()
			r, err := j.Append(id, now, in.typ, in.msg, in.data)
			must(t, err)
			if r.Seq != uint64(i+1) || r.Type != in.typ || r.Message != in.msg || string(r.Data) != in.want {
				t.Fatalf("record %d: %+v", i+1, r)
			}
			if !r.Time.Equal(now) || r.Time.Location() != time.UTC {
				t.Fatalf("record time %v, want %v in UTC", r.Time, now)
			}
			file := readFile(t, b.FS, rname(r.Seq))
			if r.Hash != seal.Hash(file) {
				t.Fatal("Hash is not H(record file)")
			}
			wantPrev := ""
			if i > 0 {
				wantPrev = hex.EncodeToString(written[i-1].Hash[:])
			}
			if r.Prev != wantPrev {
				t.Fatalf("record %d prev %q, want %q", r.Seq, r.Prev, wantPrev)
			}
			if imm, _ := vfs.IsImmutable(b.FS, rname(r.Seq)); b.Mem != nil && !imm {
				t.Fatalf("record %d not sealed", r.Seq)
			}
			if fi, _ := b.FS.Stat(rname(r.Seq)); fi.Mode().Perm() != 0o444 {
				t.Fatalf("record %d mode %v", r.Seq, fi.Mode())
			}
			written = append(written, r)
		}

		// The body as format.md §8 shows it.
		body, sig, err := journal.Decode(readFile(t, b.FS, rname(1)))
		must(t, err)
		wantBody := `{"seq":1,"time":"2026-11-27T09:00:01.623456789Z","type":"init","message":"store created","prev":"","data":{"vault_id":"ab"}}`
		if string(body) != wantBody {
			t.Fatalf("record 1 body\n%s\nwant\n%s", body, wantBody)
		}
		if !seal.Verify(id.Public(), "drawbridge journal v1", body, sig) {
			t.Fatal("signature does not verify under the documented domain")
		}
		if got, want := string(readFile(t, b.FS, "state/journal-head")), fmt.Sprintf("4 %x\n", written[3].Hash); got != want {
			t.Fatalf("head %q, want %q", got, want)
		}

		if seq, tm := j.Last(); seq != 4 || !tm.Equal(written[3].Time) {
			t.Fatalf("Last = %d %v", seq, tm)
		}
		recs, err := scanAll(j)
		must(t, err)
		if len(recs) != 4 {
			t.Fatalf("scan returned %d records", len(recs))
		}
		for i := range recs {
			if !sameRecord(recs[i], written[i]) {
				t.Fatalf("scanned %+v\nwritten %+v", recs[i], written[i])
			}
		}

		// Reopen: the chain continues.
		j2 := open(t, b.FS, id)
		if seq, tm := j2.Last(); seq != 4 || !tm.Equal(written[3].Time) {
			t.Fatalf("reopened Last = %d %v", seq, tm)
		}
		r5, err := j2.Append(id, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), "verify", "ok", nil)
		must(t, err)
		if r5.Seq != 5 || r5.Prev != hex.EncodeToString(written[3].Hash[:]) {
			t.Fatalf("record after reopen: %+v", r5)
		}
		body, _, _ = journal.Decode(readFile(t, b.FS, rname(5)))
		if !bytes.Contains(body, []byte(`"time":"2027-01-01T00:00:00Z"`)) {
			t.Fatalf("time not written as RFC 3339 in UTC: %s", body)
		}
		if errs := journal.Verify(b.FS, id.Public()); errs != nil {
			t.Fatalf("verify: %v", errs)
		}
		if recs, err := scanAll(j2); err != nil || len(recs) != 5 {
			t.Fatalf("scan after reopen: %d records, %v", len(recs), err)
		}
	})
}

func TestAppendRefuses(t *testing.T) {
	m := vfs.NewMem()
	id, c := identity(t, 1), newClock()
	j := open(t, m, id)
	appendN(t, j, id, c, 1)
	for name, call := range map[string]func() error{
		"other identity": func() error { _, err := j.Append(identity(t, 2), c.now(), "verify", "", nil); return err },
		"empty type":     func() error { _, err := j.Append(id, c.now(), "", "", nil); return err },
		"array data":     func() error { _, err := j.Append(id, c.now(), "verify", "", []int{1}); return err },
		"null data":      func() error { _, err := j.Append(id, c.now(), "verify", "", (*struct{})(nil)); return err },
		"bad data": func() error {
			_, err := j.Append(id, c.now(), "verify", "", map[string]any{"c": make(chan int)})
			return err
		},
		"body too big": func() error {
			_, err := j.Append(id, c.now(), "verify", strings.Repeat("x", journal.MaxBody), nil)
			return err
		},
	} {
		if err := call(); err == nil {
			t.Errorf("%s: Append succeeded", name)
		}
	}
	if seq, _ := j.Last(); seq != 1 {
		t.Fatalf("Last = %d after refused appends", seq)
	}
	if errs := journal.Verify(m, id.Public()); errs != nil {
		t.Fatal(errs)
	}
	if _, err := journal.Open(m, []byte("short")); err == nil {
		t.Fatal("Open with a bad public key succeeded")
	}
}

func TestScanStopsOnCallbackError(t *testing.T) {
	m := vfs.NewMem()
	id := identity(t, 1)
	j := open(t, m, id)
	appendN(t, j, id, newClock(), 3)
	stop := errors.New("stop")
	n := 0
	err := j.Scan(func(r journal.Record) error {
		n++
		if r.Seq == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || errors.Is(err, journal.ErrDamaged) || n != 2 {
		t.Fatalf("Scan = %v after %d records, want the callback's error after 2", err, n)
	}
}

// ScanFrom reads only what came after what was read, and refuses a journal
// that changed under the reader.
func TestScanFrom(t *testing.T) {
	m := vfs.NewMem()
	id := identity(t, 1)
	c := newClock()
	j := open(t, m, id)
	recs := appendN(t, j, id, c, 5)
	from := func(j *journal.Journal, after uint64, h [seal.HashSize]byte) ([]uint64, error) {
		var seqs []uint64
		err := j.ScanFrom(after, h, func(r journal.Record) error {
			seqs = append(seqs, r.Seq)
			return nil
		})
		return seqs, err
	}
	if seqs, err := from(j, 0, [seal.HashSize]byte{}); err != nil || fmt.Sprint(seqs) != "[1 2 3 4 5]" {
		t.Errorf("from the start: %v %v", seqs, err)
	}
	if seqs, err := from(j, 3, recs[2].Hash); err != nil || fmt.Sprint(seqs) != "[4 5]" {
		t.Errorf("after 3: %v %v", seqs, err)
	}
	if seqs, err := from(j, 5, recs[4].Hash); err != nil || len(seqs) != 0 {
		t.Errorf("after the last: %v %v", seqs, err)
	}
	// Another reader's view grows: it reads only the new ones.
	appendN(t, j, id, c, 2)
	if seqs, err := from(open(t, m, id), 5, recs[4].Hash); err != nil || fmt.Sprint(seqs) != "[6 7]" {
		t.Errorf("after more appends: %v %v", seqs, err)
	}
	if _, err := from(j, 3, recs[1].Hash); !errors.Is(err, journal.ErrDamaged) {
		t.Errorf("a hash that record 4 does not link to: %v", err)
	}
	if _, err := from(j, 9, recs[4].Hash); !errors.Is(err, journal.ErrDamaged) {
		t.Errorf("after a record past the end: %v", err)
	}
}

// foreign builds another journal in its own MemFS and returns its record
// files, 1-based.
func foreign(t *testing.T, id *seal.Identity, c *clock, n int) [][]byte {
	m := vfs.NewMem()
	j := open(t, m, id)
	out := [][]byte{nil}
	for i := 0; i < n; i++ {
		_, err := j.Append(id, c.now(), "snapshot", fmt.Sprintf("other %d", i), nil)
		must(t, err)
		out = append(out, readFile(t, m, rname(uint64(i+1))))
	}
	return out
}

func TestDamage(t *testing.T) {
	type env struct {
		b    *vfstest.Backend
		recs [][]byte // the journal's own record files, 1-based
	}
	flip := func(seq uint64, off func(n int) int) func(*testing.T, env) {
		return func(t *testing.T, e env) {
			b := bytes.Clone(e.recs[seq])
			b[off(len(b))] ^= 0x01
			e.b.Unseal(t, rname(seq))
			overwrite(t, e.b.FS, rname(seq), b)
		}
	}
	remove := func(seqs ...uint64) func(*testing.T, env) {
		return func(t *testing.T, e env) {
			for _, s := range seqs {
				e.b.Unseal(t, rname(s))
				must(t, e.b.FS.Remove(rname(s)))
			}
		}
	}
	put := func(name string, data func(env) []byte) func(*testing.T, env) {
		return func(t *testing.T, e env) {
			if _, err := e.b.FS.Stat(name); err == nil {
				e.b.Unseal(t, name)
			}
			overwrite(t, e.b.FS, name, data(e))
		}
	}
	cases := []struct {
		name   string
		tamper func(*testing.T, env)
		want   []string // substrings some problem must contain, each
		// openFails: Open (which checks only the last record and the head)
		// notices; scanPasses: the damage is outside what Scan reads.
		openFails, scanPasses bool
	}{
		{name: "body byte flipped", tamper: flip(3, func(int) int { return 12 + 10 }), want: []string{"record 3 ", "bad signature"}},
		{name: "signature byte flipped", tamper: flip(3, func(n int) int { return n - 1 }), want: []string{"record 3 ", "bad signature"}},
		{name: "magic flipped", tamper: flip(2, func(int) int { return 0 }), want: []string{"record 2 ", "bad magic"}},
		{name: "length flipped", tamper: flip(4, func(int) int { return 9 }), want: []string{"record 4 ", "header says"}},
		{name: "last record edited", tamper: flip(5, func(int) int { return 40 }), want: []string{"record 5 "}, openFails: true},
		{name: "truncated", tamper: func(t *testing.T, e env) {
			e.b.Unseal(t, rname(4))
			overwrite(t, e.b.FS, rname(4), e.recs[4][:len(e.recs[4])-1])
		}, want: []string{"record 4 "}},
		{name: "first deleted", tamper: remove(1), want: []string{"record 1 ", "missing"}},
		{name: "middle deleted", tamper: remove(3), want: []string{"record 3 ", "missing"}},
		{name: "last deleted", tamper: remove(5), want: []string{"journal-head", "names record 5", "ends at record 4"}, openFails: true},
		{name: "two last deleted", tamper: remove(4, 5), want: []string{"names record 5", "ends at record 3"}, openFails: true},
		{name: "swapped", tamper: func(t *testing.T, e env) {
			put(rname(2), func(e env) []byte { return e.recs[3] })(t, e)
			put(rname(3), func(e env) []byte { return e.recs[2] })(t, e)
		}, want: []string{"record 2 ", "holds seq 3", "record 3 ", "holds seq 2"}},
		{name: "record from another vault", tamper: func(t *testing.T, e env) {
			other := foreign(t, identity(t, 9), newClock(), 3)
			put(rname(3), func(env) []byte { return other[3] })(t, e)
		}, want: []string{"record 3 ", "bad signature"}},
		{name: "re-signed record breaks the chain", tamper: func(t *testing.T, e env) {
			// Same key, different history: a valid signature and seq, a
			// different predecessor.
			c := newClock()
			c.now()
			other := foreign(t, identity(t, 1), c, 3)
			put(rname(3), func(env) []byte { return other[3] })(t, e)
		}, want: []string{"record 3 ", "does not match the hash of record 2", "record 4 ", "does not match the hash of record 3"}},
		{name: "stray file", tamper: put("journal/notes.txt", func(env) []byte { return []byte("hi") }), want: []string{"journal/notes.txt", "not a journal record"}},
		{name: "temporary file left in journal", tamper: put("journal/00000000000000006", func(e env) []byte { return e.recs[5] }), want: []string{"journal/00000000000000006"}},
		{name: "record after a gap", tamper: put(rname(7), func(e env) []byte { return e.recs[5] }), want: []string{"record 6 ", "missing", "record 7 ", "holds seq 5"}, openFails: true, scanPasses: true},
		{name: "directory in journal", tamper: func(t *testing.T, e env) { must(t, e.b.FS.MkdirAll(rname(6), 0o755)) }, want: []string{rname(6), "not a regular file"}, openFails: true},
		{name: "head with another hash", tamper: put("state/journal-head", func(e env) []byte { return fmt.Appendf(nil, "5 %x\n", seal.Hash(e.recs[4])) }), want: []string{"journal-head", "different hash"}, openFails: true, scanPasses: true},
		{name: "head past the end", tamper: put("state/journal-head", func(e env) []byte { return fmt.Appendf(nil, "9 %x\n", seal.Hash(e.recs[5])) }), want: []string{"names record 9"}, openFails: true, scanPasses: true},
		{name: "head garbage", tamper: put("state/journal-head", func(env) []byte { return []byte("5\n") }), want: []string{"journal-head", "malformed"}, openFails: true, scanPasses: true},
		{name: "two records edited", tamper: func(t *testing.T, e env) {
			flip(2, func(int) int { return 20 })(t, e)
			flip(4, func(int) int { return 20 })(t, e)
		}, want: []string{"record 2 ", "record 4 "}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vfstest.Run(t, func(t *testing.T, b *vfstest.Backend) {
				id := identity(t, 1)
				j := open(t, b.FS, id)
				appendN(t, j, id, newClock(), 5)
				e := env{b: b, recs: [][]byte{nil}}
				for s := uint64(1); s <= 5; s++ {
					e.recs = append(e.recs, readFile(t, b.FS, rname(s)))
				}
				tc.tamper(t, e)

				errs := journal.Verify(b.FS, id.Public())
				if len(errs) == 0 {
					t.Fatal("Verify found nothing")
				}
				var all []string
				for _, err := range errs {
					if !errors.Is(err, journal.ErrDamaged) {
						t.Errorf("problem does not wrap ErrDamaged: %v", err)
					}
					all = append(all, err.Error())
				}
				text := strings.Join(all, "\n")
				t.Logf("Verify:\n%s", text)
				for _, w := range tc.want {
					if !strings.Contains(text, w) {
						t.Errorf("no problem mentions %q; Verify said:\n%s", w, text)
					}
				}

				// Scan on the journal opened before the damage.
				_, err := scanAll(j)
				switch {
				case tc.scanPasses && err != nil:
					t.Errorf("Scan: %v", err)
				case !tc.scanPasses && !errors.Is(err, journal.ErrDamaged):
					t.Errorf("Scan = %v, want ErrDamaged", err)
				}

				j2, err := journal.Open(b.FS, id.Public())
				if tc.openFails {
					if !errors.Is(err, journal.ErrDamaged) {
						t.Fatalf("Open = %v, want ErrDamaged", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if _, err := scanAll(j2); !tc.scanPasses && !errors.Is(err, journal.ErrDamaged) {
					t.Errorf("Scan after reopening = %v, want ErrDamaged", err)
				}
			})
		})
	}
}

// hookFS calls a hook just before the head is renamed into place, that is
// after the record is durable and before the head says so.
type hookFS struct {
	vfs.FS
	beforeHead func()
}

func (h *hookFS) Rename(oldname, newname string) error {
	if newname == "state/journal-head" && h.beforeHead != nil {
		h.beforeHead()
	}
	return h.FS.Rename(oldname, newname)
}

func TestCrashBetweenRecordAndHead(t *testing.T) {
	for _, before := range []int{0, 3} {
		t.Run(fmt.Sprint(before, " records before"), func(t *testing.T) {
			id, c := identity(t, 1), newClock()
			m := vfs.NewMem()
			h := &hookFS{FS: m}
			j := open(t, h, id)
			appendN(t, j, id, c, before)
			var crashed *vfs.MemFS
			h.beforeHead = func() { crashed = m.Crash() }
			last := appendN(t, j, id, c, 1)[0]

			// The record is there, the head lags behind.
			j2 := open(t, crashed, id)
			if seq, _ := j2.Last(); seq != uint64(before+1) {
				t.Fatalf("after the crash Last = %d, want %d", seq, before+1)
			}
			if errs := journal.Verify(crashed, id.Public()); errs != nil {
				t.Fatalf("verify after the crash: %v", errs)
			}
			next := appendN(t, j2, id, c, 1)[0]
			if next.Seq != last.Seq+1 || next.Prev != hex.EncodeToString(last.Hash[:]) {
				t.Fatalf("chain not continued: %+v after %+v", next, last)
			}
			if errs := journal.Verify(crashed, id.Public()); errs != nil {
				t.Fatalf("verify: %v", errs)
			}
			if recs, err := scanAll(j2); err != nil || len(recs) != before+2 {
				t.Fatalf("scan: %d records, %v", len(recs), err)
			}
		})
	}
}

// TestFaultSweep fails every N-th filesystem operation while appending,
// then checks both the running journal (it recovers once faults stop) and
// the store after a crash (it opens, verifies, and keeps every record whose
// Append succeeded).
func TestFaultSweep(t *testing.T) {
	const before, appends = 2, 5
	id := identity(t, 1)
	setup := func() (*vfs.MemFS, *journal.Journal, *clock) {
		m := vfs.NewMem()
		c := newClock()
		j := open(t, m, id)
		appendN(t, j, id, c, before)
		return m, j, c
	}
	m, j, c := setup()
	start := m.Ops()
	appendN(t, j, id, c, appends)
	total := m.Ops() - start

	for every := 1; every <= total+1; every++ {
		m, j, c := setup()
		m.InjectErrors(every)
		var ok []journal.Record
		for i := 0; i < appends; i++ {
			if r, err := j.Append(id, c.now(), "verify", fmt.Sprint(i), nil); err == nil {
				ok = append(ok, r)
			}
		}

		// After a crash.
		crashed := m.Crash()
		if errs := journal.Verify(crashed, id.Public()); errs != nil {
			t.Fatalf("every=%d: verify after crash: %v", every, errs)
		}
		jc, err := journal.Open(crashed, id.Public())
		if err != nil {
			t.Fatalf("every=%d: open after crash: %v", every, err)
		}
		recs, err := scanAll(jc)
		if err != nil {
			t.Fatalf("every=%d: scan after crash: %v", every, err)
		}
		for i, r := range recs {
			if r.Seq != uint64(i+1) {
				t.Fatalf("every=%d: record %d has seq %d", every, i+1, r.Seq)
			}
		}
		for _, r := range ok {
			if r.Seq > uint64(len(recs)) || !sameRecord(recs[r.Seq-1], r) {
				t.Fatalf("every=%d: record %d reported appended but not found intact after the crash", every, r.Seq)
			}
		}
		r, err := jc.Append(id, c.now(), "verify", "after crash", nil)
		if err != nil || r.Seq != uint64(len(recs)+1) {
			t.Fatalf("every=%d: append after crash: seq %d, %v", every, r.Seq, err)
		}
		if errs := journal.Verify(crashed, id.Public()); errs != nil {
			t.Fatalf("every=%d: verify after crash and append: %v", every, errs)
		}

		// Without a crash: once faults stop, the same journal carries on.
		m.InjectErrors(0)
		r, err = j.Append(id, c.now(), "verify", "recovered", nil)
		if err != nil {
			t.Fatalf("every=%d: append once faults stop: %v", every, err)
		}
		if errs := journal.Verify(m, id.Public()); errs != nil {
			t.Fatalf("every=%d: verify once faults stop: %v", every, errs)
		}
		if recs, err := scanAll(j); err != nil || uint64(len(recs)) != r.Seq {
			t.Fatalf("every=%d: scan once faults stop: %d records, last seq %d, %v", every, len(recs), r.Seq, err)
		}
	}
}

func TestConcurrentAppend(t *testing.T) {
	vfstest.Run(t, func(t *testing.T, b *vfstest.Backend) {
		id := identity(t, 1)
		j := open(t, b.FS, id)
		const writers, each = 6, 5
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[uint64]bool{}
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					r, err := j.Append(id, time.Unix(int64(w*100+i), 0), "verify", "", nil)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					seen[r.Seq] = true
					mu.Unlock()
					j.Last()
				}
			}()
		}
		wg.Wait()
		if len(seen) != writers*each {
			t.Fatalf("%d distinct seqs, want %d", len(seen), writers*each)
		}
		if errs := journal.Verify(b.FS, id.Public()); errs != nil {
			t.Fatal(errs)
		}
	})
}

func TestDecode(t *testing.T) {
	sig := bytes.Repeat([]byte{7}, 64)
	good := journal.Encode([]byte(`{"seq":1}`), sig)
	body, s, err := journal.Decode(good)
	if err != nil || string(body) != `{"seq":1}` || !bytes.Equal(s, sig) {
		t.Fatalf("Decode(Encode) = %q %x %v", body, s, err)
	}
	huge := append([]byte("DBJRNL01"), 0x01, 0x00, 0x10, 0x00) // n = 1 MiB + 1
	huge = append(huge, make([]byte, 64)...)
	for name, b := range map[string][]byte{
		"empty":        nil,
		"short":        good[:20],
		"bad magic":    append([]byte("DBJRNL02"), good[8:]...),
		"n over cap":   huge,
		"one byte off": good[:len(good)-1],
		"trailing":     append(bytes.Clone(good), 0),
	} {
		if _, _, err := journal.Decode(b); !errors.Is(err, journal.ErrDamaged) {
			t.Errorf("%s: Decode = %v, want ErrDamaged", name, err)
		}
	}
}
