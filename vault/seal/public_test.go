package seal

import (
	"bytes"
	"strings"
	"testing"
)

func TestPublicKeyFile(t *testing.T) {
	k, err := NewKeys([]byte("pass"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.MarshalPublic()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "identity_private") || strings.Contains(string(b), "ssh_private") {
		t.Fatalf("public key file holds a private key:\n%s", b)
	}
	p, err := ParseKeys(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.Identity.CanSign() || p.Identity.Sign("x", []byte("y")) != nil || p.SSH != nil {
		t.Fatal("a public-only key file can sign or log in")
	}
	if !bytes.Equal(p.Identity.Public(), k.Identity.Public()) || p.SSHAuthorizedKey() != "" {
		t.Fatal("public identity differs")
	}
	if _, err := p.Marshal(); err == nil {
		t.Fatal("Marshal of public-only keys succeeded")
	}
	if _, err := p.Unlock([]byte("pass")); err != nil {
		t.Fatalf("the restore passphrase does not open a public key file: %v", err)
	}
	sig := k.Identity.Sign("d", []byte("m"))
	if !Verify(p.Identity.Public(), "d", []byte("m"), sig) {
		t.Fatal("signature does not verify with the public identity")
	}
}

func TestVerifier(t *testing.T) {
	v, err := NewVerifier([]byte("admin"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Matches([]byte("admin")) || v.Matches([]byte("Admin")) || v.Matches(nil) {
		t.Fatal("verifier matches wrongly")
	}
	if _, err := NewVerifier(nil, testKDF); err == nil {
		t.Fatal("empty passphrase accepted")
	}
	bad := v
	bad.MemoryKiB = 1 << 30
	if bad.Valid() == nil || bad.Matches([]byte("admin")) {
		t.Fatal("verifier asking for 1 TiB accepted")
	}
}
