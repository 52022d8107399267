package seal

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/zeebo/blake3"
)

// HashSize is the size of every hash and id in a store.
const HashSize = 32

// Hash is H(x): unkeyed BLAKE3-256, used for journal chaining and snapshot ids.
func Hash(parts ...[]byte) [HashSize]byte {
	h := blake3.New()
	for _, p := range parts {
		h.Write(p)
	}
	var out [HashSize]byte
	h.Sum(out[:0])
	return out
}

// Identity is the vault's Ed25519 signing key. The vault signs unattended, so
// its private half is stored in plain in the key file.
type Identity struct {
	priv ed25519.PrivateKey
}

// NewIdentity makes a fresh identity key.
func NewIdentity() (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	return &Identity{priv: priv}, nil
}

// IdentityFromSeed rebuilds an identity from its 32-byte seed.
func IdentityFromSeed(seed []byte) (*Identity, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("identity seed must be 32 bytes")
	}
	return &Identity{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// Seed returns the 32-byte seed the key file stores.
func (id *Identity) Seed() []byte { return id.priv.Seed() }

// Public returns the 32-byte public key.
func (id *Identity) Public() []byte { return []byte(id.priv.Public().(ed25519.PublicKey)) }

// Sign signs msg under a domain label, so a signature made for one purpose
// never verifies for another.
func (id *Identity) Sign(domain string, msg []byte) []byte {
	return ed25519.Sign(id.priv, domainMessage(domain, msg))
}

// Verify checks a signature made by Sign with the given public key.
func Verify(pub []byte, domain string, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(pub), domainMessage(domain, msg), sig)
}

// Fingerprint is a short human form of a public key: the first 16 bytes of
// H(pub), hex, in groups of four.
func Fingerprint(pub []byte) string {
	h := Hash(pub)
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 39)
	for i := 0; i < 16; i++ {
		if i > 0 && i%2 == 0 {
			out = append(out, ':')
		}
		out = append(out, hexd[h[i]>>4], hexd[h[i]&15])
	}
	return string(out)
}

func domainMessage(domain string, msg []byte) []byte {
	b := make([]byte, 0, len(domain)+1+len(msg))
	b = append(b, domain...)
	b = append(b, 0)
	return append(b, msg...)
}
