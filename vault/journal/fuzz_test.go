package journal

import (
	"bytes"
	"testing"

	"drawbridge/vault/seal"
)

// FuzzDecode feeds arbitrary bytes to every parser a record file or the head
// goes through. None may panic; a record Decode accepts must re-encode to
// the same bytes.
//
// The committed corpus (testdata/fuzz/FuzzDecode) holds records signed by
// the identity with seed 32×0x01, so the seeds reach the body checks.
func FuzzDecode(f *testing.F) {
	id, err := seal.IdentityFromSeed(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		f.Fatal(err)
	}
	pub := id.Public()
	f.Add([]byte(magic + "\x02\x00\x00\x00{}" + string(make([]byte, 64))))
	f.Add([]byte("3 " + string(bytes.Repeat([]byte("ab"), 32)) + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		body, sig, err := Decode(b)
		if err == nil {
			if len(body) > MaxBody || len(sig) != sigSize {
				t.Fatalf("Decode accepted a %d-byte body and a %d-byte signature", len(body), len(sig))
			}
			if !bytes.Equal(Encode(body, sig), b) {
				t.Fatal("Encode(Decode(b)) != b")
			}
			parseBody(body)
		} else {
			parseBody(b)
		}
		if rec, err := parseRecord(b, pub, 1, nil); err == nil && rec.Hash != seal.Hash(b) {
			t.Fatal("record hash is not H(file)")
		}
		parseHead(b)
	})
}
