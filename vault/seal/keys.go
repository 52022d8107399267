package seal

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/ssh"
)

// ErrPassphrase is returned when the restore passphrase does not open the
// recipient key.
var ErrPassphrase = errors.New("wrong restore passphrase")

// ErrKeyFile wraps every problem found while parsing a key file.
var ErrKeyFile = errors.New("invalid key file")

// MaxKeyFile caps the size of a key file a reader accepts.
const MaxKeyFile = 1 << 20

const recipientAD = "drawbridge recipient v1"

// KDFParams are the argon2id parameters that protect the recipient key.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDF costs about a quarter second on the appliance.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 2}

// Caps on what a key file may ask of argon2id, so a doctored file cannot
// exhaust memory.
const (
	maxKDFMemoryKiB = 1 << 20
	maxKDFTime      = 64
)

type sealedKey struct {
	KDF       string `json:"kdf"`
	KDFParams        // inline
	Salt      []byte `json:"salt"`
	Nonce     []byte `json:"nonce"`
	Box       []byte `json:"box"`
}

type keyFileJSON struct {
	Version         int       `json:"version"`
	IdentityPublic  []byte    `json:"identity_public"`
	IdentityPrivate []byte    `json:"identity_private,omitempty"`
	IDKey           []byte    `json:"id_key"`
	Recipient       string    `json:"recipient"`
	RecipientSealed sealedKey `json:"recipient_sealed"`
	SSHPrivate      string    `json:"ssh_private,omitempty"`
}

// Keys are the plain keys an unattended vault works with.
type Keys struct {
	Identity  *Identity
	IDKey     *IDKey
	Recipient *Recipient
	SSH       ed25519.PrivateKey

	sealed sealedKey
}

// NewKeys makes every key of a new store and seals the recipient's private
// half under passphrase.
func NewKeys(passphrase []byte, kdf KDFParams) (*Keys, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("the restore passphrase must not be empty")
	}
	id, err := NewIdentity()
	if err != nil {
		return nil, err
	}
	idk := make([]byte, 32)
	if _, err := rand.Read(idk); err != nil {
		return nil, fmt.Errorf("generate id key: %w", err)
	}
	ageID, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("generate recipient key: %w", err)
	}
	_, sshKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ssh key: %w", err)
	}
	sk, err := sealRecipient([]byte(ageID.String()), passphrase, kdf)
	if err != nil {
		return nil, err
	}
	idKey, _ := NewIDKey(idk)
	return &Keys{
		Identity:  id,
		IDKey:     idKey,
		Recipient: &Recipient{r: ageID.Recipient()},
		SSH:       sshKey,
		sealed:    sk,
	}, nil
}

func sealRecipient(secret, passphrase []byte, kdf KDFParams) (sealedKey, error) {
	sk := sealedKey{KDF: "argon2id", KDFParams: kdf, Salt: make([]byte, 16), Nonce: make([]byte, chacha20poly1305.NonceSizeX)}
	if _, err := rand.Read(sk.Salt); err != nil {
		return sk, err
	}
	if _, err := rand.Read(sk.Nonce); err != nil {
		return sk, err
	}
	aead, err := chacha20poly1305.NewX(kdfKey(passphrase, sk))
	if err != nil {
		return sk, err
	}
	sk.Box = aead.Seal(nil, sk.Nonce, secret, []byte(recipientAD))
	return sk, nil
}

func kdfKey(passphrase []byte, sk sealedKey) []byte {
	return argon2.IDKey(passphrase, sk.Salt, sk.Time, sk.MemoryKiB, sk.Threads, 32)
}

// Marshal encodes the key file (format.md §4).
func (k *Keys) Marshal() ([]byte, error) {
	if !k.Identity.CanSign() || k.SSH == nil {
		return nil, errors.New("encode key file: the keys are public-only (a sealed export's)")
	}
	block, err := ssh.MarshalPrivateKey(k.SSH, "drawbridge vault")
	if err != nil {
		return nil, fmt.Errorf("encode ssh key: %w", err)
	}
	return json.MarshalIndent(keyFileJSON{
		Version:         1,
		IdentityPublic:  k.Identity.Public(),
		IdentityPrivate: k.Identity.Seed(),
		IDKey:           k.IDKey.key[:],
		Recipient:       k.Recipient.String(),
		RecipientSealed: k.sealed,
		SSHPrivate:      string(pem.EncodeToMemory(block)),
	}, "", "  ")
}

// MarshalPublic encodes the key file of a sealed export (format.md §4): the
// same file without the identity's private half and without the SSH key, so
// a lost export drive can neither sign as the vault nor log in to a source.
// What it holds reads nothing without the restore passphrase.
func (k *Keys) MarshalPublic() ([]byte, error) {
	return json.MarshalIndent(keyFileJSON{
		Version:         1,
		IdentityPublic:  k.Identity.Public(),
		IDKey:           k.IDKey.key[:],
		Recipient:       k.Recipient.String(),
		RecipientSealed: k.sealed,
	}, "", "  ")
}

// ParseKeys decodes a key file. It never needs the passphrase.
func ParseKeys(b []byte) (*Keys, error) {
	if len(b) > MaxKeyFile {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrKeyFile, MaxKeyFile)
	}
	var kf keyFileJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&kf); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	if kf.Version != 1 {
		return nil, fmt.Errorf("%w: version %d is not supported", ErrKeyFile, kf.Version)
	}
	var id *Identity
	var err error
	if kf.IdentityPrivate == nil {
		// A sealed export's key file: it verifies, it does not sign.
		id, err = PublicIdentity(kf.IdentityPublic)
	} else {
		id, err = IdentityFromSeed(kf.IdentityPrivate)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	if !bytes.Equal(id.Public(), kf.IdentityPublic) {
		return nil, fmt.Errorf("%w: identity public key does not match its private key", ErrKeyFile)
	}
	idk, err := NewIDKey(kf.IDKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	r, err := age.ParseX25519Recipient(kf.Recipient)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient: %v", ErrKeyFile, err)
	}
	sk := kf.RecipientSealed
	if sk.KDF != "argon2id" || len(sk.Salt) < 16 || len(sk.Nonce) != chacha20poly1305.NonceSizeX ||
		sk.Time == 0 || sk.Time > maxKDFTime || sk.MemoryKiB < 8 || sk.MemoryKiB > maxKDFMemoryKiB ||
		sk.Threads == 0 || len(sk.Box) == 0 || len(sk.Box) > 4096 {
		return nil, fmt.Errorf("%w: recipient_sealed has bad parameters", ErrKeyFile)
	}
	k := &Keys{Identity: id, IDKey: idk, Recipient: &Recipient{r: r}, sealed: sk}
	if kf.SSHPrivate != "" {
		raw, err := ssh.ParseRawPrivateKey([]byte(kf.SSHPrivate))
		if err != nil {
			return nil, fmt.Errorf("%w: ssh key: %v", ErrKeyFile, err)
		}
		p, ok := raw.(*ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: ssh key is not ed25519", ErrKeyFile)
		}
		k.SSH = *p
	}
	return k, nil
}

// SSHAuthorizedKey is the vault's SSH client public key as one
// authorized_keys line without options ("ssh-ed25519 AAAA… drawbridge").
func (k *Keys) SSHAuthorizedKey() string {
	if k.SSH == nil {
		return ""
	}
	pub, err := ssh.NewPublicKey(k.SSH.Public())
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(pub))) + " drawbridge"
}

// Unlock opens the recipient key with the restore passphrase.
func (k *Keys) Unlock(passphrase []byte) (*Opener, error) {
	aead, err := chacha20poly1305.NewX(kdfKey(passphrase, k.sealed))
	if err != nil {
		return nil, err
	}
	secret, err := aead.Open(nil, k.sealed.Nonce, k.sealed.Box, []byte(recipientAD))
	if err != nil {
		return nil, ErrPassphrase
	}
	id, err := age.ParseX25519Identity(string(secret))
	if err != nil {
		return nil, fmt.Errorf("%w: sealed recipient key: %v", ErrKeyFile, err)
	}
	if id.Recipient().String() != k.Recipient.String() {
		return nil, fmt.Errorf("%w: sealed recipient key does not match the recipient", ErrKeyFile)
	}
	return &Opener{id: id}, nil
}

// IDKey computes chunk and blob ids: BLAKE3 keyed with the store's id key.
type IDKey struct {
	key [32]byte
}

// NewIDKey wraps a 32-byte id key.
func NewIDKey(b []byte) (*IDKey, error) {
	if len(b) != 32 {
		return nil, errors.New("id key must be 32 bytes")
	}
	k := &IDKey{}
	copy(k.key[:], b)
	return k, nil
}

// Sum returns ID(data).
func (k *IDKey) Sum(data []byte) [HashSize]byte {
	h, _ := blake3.NewKeyed(k.key[:])
	h.Write(data)
	var out [HashSize]byte
	h.Sum(out[:0])
	return out
}

// Hasher returns a reusable keyed hasher for one goroutine.
func (k *IDKey) Hasher() *IDHasher {
	h, _ := blake3.NewKeyed(k.key[:])
	return &IDHasher{h: h}
}

// IDHasher computes ids without allocating; not safe for concurrent use.
type IDHasher struct{ h *blake3.Hasher }

// Sum returns ID(data).
func (x *IDHasher) Sum(data []byte) [HashSize]byte {
	x.h.Reset()
	x.h.Write(data)
	var out [HashSize]byte
	x.h.Sum(out[:0])
	return out
}

// Recipient wraps pack data keys; it cannot unwrap them.
type Recipient struct{ r *age.X25519Recipient }

func (r *Recipient) String() string { return r.r.String() }

// Wrap encrypts a data key to the recipient as an age file.
func (r *Recipient) Wrap(dk *DataKey) ([]byte, error) {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r.r)
	if err != nil {
		return nil, fmt.Errorf("wrap data key: %w", err)
	}
	if _, err := w.Write(dk.key[:]); err != nil {
		return nil, fmt.Errorf("wrap data key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("wrap data key: %w", err)
	}
	return buf.Bytes(), nil
}

// Opener unwraps pack data keys; it exists only after the passphrase was
// given.
type Opener struct{ id *age.X25519Identity }

// Unwrap recovers a pack's data key.
func (o *Opener) Unwrap(wrapped []byte) (*DataKey, error) {
	r, err := age.Decrypt(bytes.NewReader(wrapped), o.id)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key: %w", err)
	}
	var key [32]byte
	if _, err := io.ReadFull(r, key[:]); err != nil {
		return nil, fmt.Errorf("unwrap data key: %w", err)
	}
	if n, _ := r.Read(make([]byte, 1)); n != 0 {
		return nil, errors.New("unwrap data key: longer than 32 bytes")
	}
	return newDataKey(key)
}

// DataKey seals and opens the blobs of one pack.
type DataKey struct {
	key  [32]byte
	aead interface {
		Seal(dst, nonce, plaintext, additionalData []byte) []byte
		Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
	}
}

// Nonce and tag sizes of the blob AEAD.
const (
	NonceSize = chacha20poly1305.NonceSizeX
	Overhead  = chacha20poly1305.Overhead
)

// NewDataKey makes a fresh random pack key.
func NewDataKey() (*DataKey, error) {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	return newDataKey(key)
}

func newDataKey(key [32]byte) (*DataKey, error) {
	a, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		return nil, err
	}
	return &DataKey{key: key, aead: a}, nil
}

// Seal appends nonce-sealed plaintext to dst; it fills nonce with fresh
// random bytes.
func (k *DataKey) Seal(dst, nonce, plaintext, ad []byte) ([]byte, error) {
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(dst, nonce, plaintext, ad), nil
}

// Open authenticates and decrypts sealed bytes.
func (k *DataKey) Open(dst, nonce, sealed, ad []byte) ([]byte, error) {
	return k.aead.Open(dst, nonce, sealed, ad)
}
