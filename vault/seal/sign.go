package seal

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"hash"

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

// NewHash returns a streaming H, for files too large to hold at once.
func NewHash() hash.Hash { return blake3.New() }

// Identity is the vault's Ed25519 signing key. The vault signs unattended, so
// its private half is stored in plain in the key file. A sealed export's key
// file holds only the public half: such an Identity verifies, it cannot sign.
type Identity struct {
	priv ed25519.PrivateKey // nil for a public-only identity
	pub  ed25519.PublicKey
}

// NewIdentity makes a fresh identity key.
func NewIdentity() (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	return &Identity{priv: priv, pub: priv.Public().(ed25519.PublicKey)}, nil
}

// IdentityFromSeed rebuilds an identity from its 32-byte seed.
func IdentityFromSeed(seed []byte) (*Identity, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("identity seed must be 32 bytes")
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return &Identity{priv: priv, pub: priv.Public().(ed25519.PublicKey)}, nil
}

// PublicIdentity is an identity that can verify but not sign.
func PublicIdentity(pub []byte) (*Identity, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("identity public key must be 32 bytes")
	}
	return &Identity{pub: bytes.Clone(pub)}, nil
}

// CanSign says whether the identity holds its private half.
func (id *Identity) CanSign() bool { return id.priv != nil }

// Seed returns the 32-byte seed the key file stores; nil when the identity
// cannot sign.
func (id *Identity) Seed() []byte {
	if id.priv == nil {
		return nil
	}
	return id.priv.Seed()
}

// Public returns the 32-byte public key.
func (id *Identity) Public() []byte { return []byte(id.pub) }

// Sign signs msg under a domain label, so a signature made for one purpose
// never verifies for another. An identity that cannot sign returns nil;
// callers check CanSign first.
func (id *Identity) Sign(domain string, msg []byte) []byte {
	if id.priv == nil {
		return nil
	}
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
