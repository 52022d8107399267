package seal

import (
	"bytes"
	"errors"
	"testing"
)

var testKDF = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func TestKeysRoundTrip(t *testing.T) {
	k, err := NewKeys([]byte("correct horse"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseKeys(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.Identity.Public(), k2.Identity.Public()) || k.IDKey.Sum([]byte("x")) != k2.IDKey.Sum([]byte("x")) {
		t.Fatal("keys changed in round trip")
	}
	if k2.SSHAuthorizedKey() == "" || k2.SSHAuthorizedKey() != k.SSHAuthorizedKey() {
		t.Fatal("ssh key lost")
	}
	// Write without read: wrap with the plain recipient, unwrap needs the passphrase.
	dk, _ := NewDataKey()
	wrapped, err := k2.Recipient.Wrap(dk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Unlock([]byte("wrong")); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("wrong passphrase: got %v", err)
	}
	o, err := k2.Unlock([]byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	dk2, err := o.Unwrap(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, NonceSize)
	sealed, _ := dk.Seal(nil, nonce, []byte("secret"), []byte("ad"))
	plain, err := dk2.Open(nil, nonce, sealed, []byte("ad"))
	if err != nil || string(plain) != "secret" {
		t.Fatalf("open: %q %v", plain, err)
	}
	if _, err := dk2.Open(nil, nonce, sealed, []byte("other ad")); err == nil {
		t.Fatal("ad not bound")
	}
}

func TestSignDomains(t *testing.T) {
	id, _ := NewIdentity()
	sig := id.Sign("a", []byte("msg"))
	if !Verify(id.Public(), "a", []byte("msg"), sig) {
		t.Fatal("valid signature refused")
	}
	if Verify(id.Public(), "b", []byte("msg"), sig) || Verify(id.Public(), "a", []byte("msh"), sig) {
		t.Fatal("signature accepted across domain or message")
	}
	if Verify(id.Public()[:5], "a", []byte("msg"), sig) || Verify(id.Public(), "a", []byte("msg"), sig[:10]) {
		t.Fatal("short key or signature accepted")
	}
}

func TestParseKeysRejects(t *testing.T) {
	k, _ := NewKeys([]byte("p"), testKDF)
	good, _ := k.Marshal()
	for name, b := range map[string][]byte{
		"empty":   nil,
		"garbage": []byte("{{{"),
		"unknown": bytes.Replace(good, []byte(`"version"`), []byte(`"versio"`), 1),
		"version": bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 2`), 1),
		"huge":    make([]byte, MaxKeyFile+1),
		"kdf":     bytes.Replace(good, []byte(`"memory_kib": 64`), []byte(`"memory_kib": 99999999`), 1),
	} {
		if _, err := ParseKeys(b); !errors.Is(err, ErrKeyFile) {
			t.Errorf("%s: got %v, want ErrKeyFile", name, err)
		}
	}
}

func FuzzParseKeys(f *testing.F) {
	k, _ := NewKeys([]byte("p"), testKDF)
	good, _ := k.Marshal()
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseKeys(b)
		if err == nil && k.Identity == nil {
			t.Fatal("nil identity without error")
		}
	})
}
