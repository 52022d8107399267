// Package seal holds every cryptographic operation of a Drawbridge store and
// nowhere else uses a primitive directly: hashing (H and the keyed chunk id),
// the Ed25519 identity, the key file with its passphrase-sealed recipient
// key, per-pack data keys wrapped with age to the X25519 recipient, and the
// XChaCha20-Poly1305 blob AEAD.
//
// Invariant: everything an unattended vault needs to ingest (id key,
// identity, recipient) is usable without the restore passphrase, and nothing
// that decrypts stored content is.
package seal
