package seal

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// Verifier checks a passphrase without storing it: argon2id(passphrase,
// salt) kept next to its parameters (format.md, the admin passphrase). It is
// the admin passphrase's record; the restore passphrase needs no verifier,
// its sealed key is one.
type Verifier struct {
	KDF       string `json:"kdf"` // "argon2id"
	KDFParams        // inline
	Salt      []byte `json:"salt"`
	Hash      []byte `json:"hash"`
}

// NewVerifier derives a verifier for passphrase with a fresh salt.
func NewVerifier(passphrase []byte, kdf KDFParams) (Verifier, error) {
	if len(passphrase) == 0 {
		return Verifier{}, errors.New("the passphrase must not be empty")
	}
	v := Verifier{KDF: "argon2id", KDFParams: kdf, Salt: make([]byte, 16)}
	if err := v.check(); err != nil {
		return Verifier{}, err
	}
	if _, err := rand.Read(v.Salt); err != nil {
		return Verifier{}, fmt.Errorf("generate salt: %w", err)
	}
	v.Hash = argon2.IDKey(passphrase, v.Salt, v.Time, v.MemoryKiB, v.Threads, 32)
	return v, nil
}

// Valid checks the fields of a verifier read from a file, so that a doctored
// file cannot ask argon2id for unbounded memory or time.
func (v Verifier) Valid() error { return v.check() }

func (v Verifier) check() error {
	if v.KDF != "argon2id" || v.Time == 0 || v.Time > maxKDFTime || v.MemoryKiB < 8 ||
		v.MemoryKiB > maxKDFMemoryKiB || v.Threads == 0 || len(v.Salt) < 16 || len(v.Salt) > 64 ||
		(v.Hash != nil && len(v.Hash) != 32) {
		return errors.New("passphrase verifier has bad parameters")
	}
	return nil
}

// Matches says whether passphrase is the one the verifier was made from.
func (v Verifier) Matches(passphrase []byte) bool {
	if v.check() != nil || len(v.Hash) != 32 {
		return false
	}
	h := argon2.IDKey(passphrase, v.Salt, v.Time, v.MemoryKiB, v.Threads, 32)
	return subtle.ConstantTimeCompare(h, v.Hash) == 1
}
