package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"drawbridge/vault/seal"
)

// Record is one journal entry.
type Record struct {
	Seq     uint64
	Time    time.Time
	Type    string
	Message string
	Prev    string // hex H(record Seq-1), "" for record 1
	Data    json.RawMessage
	Hash    [seal.HashSize]byte // H(the record file's bytes)
}

const (
	magic      = "DBJRNL01"
	headerSize = len(magic) + 4
	sigSize    = 64
	// MaxBody caps a record's JSON body (format.md §8).
	MaxBody   = 1 << 20
	maxRecord = headerSize + MaxBody + sigSize

	// signDomain is the label seal.Sign puts, with a 0x00, before the body.
	signDomain = "drawbridge journal v1"
	// timeLayout is RFC 3339 with nanoseconds, trailing zeros dropped; the
	// time is always UTC. It is what time.Time.MarshalText writes for a UTC
	// time, so the store can hash the same string into a snapshot id.
	timeLayout = time.RFC3339Nano
)

// Encode lays out a record file: magic, body length, body, signature. The
// caller keeps body within MaxBody and sig at 64 bytes; Decode refuses
// anything else.
func Encode(body []byte, sig []byte) []byte {
	b := make([]byte, 0, headerSize+len(body)+len(sig))
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	return append(b, sig...)
}

// Decode splits a record file into body and signature, which alias b. It
// checks the framing only (magic, length cap, exact size); errors wrap
// ErrDamaged.
func Decode(b []byte) (body, sig []byte, err error) {
	if len(b) < headerSize+sigSize {
		return nil, nil, fmt.Errorf("%w: record is %d bytes, shorter than any record", ErrDamaged, len(b))
	}
	if string(b[:len(magic)]) != magic {
		return nil, nil, fmt.Errorf("%w: bad magic %q", ErrDamaged, b[:len(magic)])
	}
	n := binary.LittleEndian.Uint32(b[len(magic):headerSize])
	if n > MaxBody {
		return nil, nil, fmt.Errorf("%w: body length %d over the 1 MiB cap", ErrDamaged, n)
	}
	if want := uint64(headerSize) + uint64(n) + sigSize; uint64(len(b)) != want {
		return nil, nil, fmt.Errorf("%w: record is %d bytes, its header says %d", ErrDamaged, len(b), want)
	}
	end := headerSize + int(n)
	return b[headerSize:end], b[end:], nil
}

// body is the signed JSON, fields in the order format.md §8 lists them.
type body struct {
	Seq     uint64          `json:"seq"`
	Time    string          `json:"time"`
	Type    string          `json:"type"`
	Message string          `json:"message"`
	Prev    string          `json:"prev"`
	Data    json.RawMessage `json:"data"`
}

// parseRecord checks record file b as record seq whose predecessor hashes to
// prev (ignored for seq 1): framing, signature, then the body. The signature
// is checked before the JSON is parsed, so only bytes the vault signed reach
// the JSON decoder. The returned problem is a plain description; callers add
// the record's name and ErrDamaged.
func parseRecord(b []byte, pub []byte, seq uint64, prev *[seal.HashSize]byte) (Record, error) {
	bd, sig, err := Decode(b)
	if err != nil {
		return Record{}, err
	}
	if !seal.Verify(pub, signDomain, bd, sig) {
		return Record{}, errors.New("bad signature")
	}
	rec, err := parseBody(bd)
	if err != nil {
		return Record{}, err
	}
	rec.Hash = seal.Hash(b)
	if rec.Seq != seq {
		return rec, fmt.Errorf("holds seq %d", rec.Seq)
	}
	if prev != nil {
		want := ""
		if seq > 1 {
			want = hex.EncodeToString(prev[:])
		}
		if rec.Prev != want {
			return rec, fmt.Errorf("prev does not match the hash of record %d", seq-1)
		}
	}
	return rec, nil
}

// parseBody decodes a record body strictly: known fields only, nothing after
// the object, a valid time and prev, data an object.
func parseBody(bd []byte) (Record, error) {
	dec := json.NewDecoder(bytes.NewReader(bd))
	dec.DisallowUnknownFields()
	var v body
	if err := dec.Decode(&v); err != nil {
		return Record{}, fmt.Errorf("body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Record{}, errors.New("body: data after the JSON object")
	}
	t, err := time.Parse(time.RFC3339Nano, v.Time)
	if err != nil {
		return Record{}, fmt.Errorf("body: time: %v", err)
	}
	if v.Type == "" {
		return Record{}, errors.New("body: empty type")
	}
	if v.Prev != "" && !isHash(v.Prev) {
		return Record{}, fmt.Errorf("body: prev %q is not a hex hash", v.Prev)
	}
	if len(v.Data) == 0 || v.Data[0] != '{' {
		return Record{}, errors.New("body: data is not a JSON object")
	}
	return Record{Seq: v.Seq, Time: t.UTC(), Type: v.Type, Message: v.Message, Prev: v.Prev, Data: v.Data}, nil
}

func isHash(s string) bool {
	if len(s) != 2*seal.HashSize {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// recordName is record seq's file name under the store root.
func recordName(seq uint64) string { return fmt.Sprintf("%s/%016d", dirName, seq) }

// parseName returns the seq a journal/ entry name stands for: exactly 16
// decimal digits, not zero.
func parseName(name string) (uint64, bool) {
	if len(name) != 16 {
		return 0, false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < '0' || name[i] > '9' {
			return 0, false
		}
	}
	s, err := strconv.ParseUint(name, 10, 64)
	return s, err == nil && s > 0
}

// head is state/journal-head: "seq hex-hash\n".
type head struct {
	seq  uint64
	hash [seal.HashSize]byte
}

func (h head) encode() []byte { return fmt.Appendf(nil, "%d %x\n", h.seq, h.hash) }

func parseHead(b []byte) (head, error) {
	line, ok := bytes.CutSuffix(b, []byte("\n"))
	sq, hx, ok2 := bytes.Cut(line, []byte(" "))
	if !ok || !ok2 || len(sq) == 0 || len(sq) > 20 || !isHash(string(hx)) {
		return head{}, fmt.Errorf("%s: %w: malformed: %q", headName, ErrDamaged, b)
	}
	var h head
	for _, c := range sq {
		if c < '0' || c > '9' {
			return head{}, fmt.Errorf("%s: %w: malformed seq %q", headName, ErrDamaged, sq)
		}
	}
	s, err := strconv.ParseUint(string(sq), 10, 64)
	if err != nil || s == 0 || sq[0] == '0' {
		return head{}, fmt.Errorf("%s: %w: malformed seq %q", headName, ErrDamaged, sq)
	}
	h.seq = s
	hex.Decode(h.hash[:], hx)
	return h, nil
}
