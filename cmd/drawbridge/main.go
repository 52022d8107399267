package main
import (
 _ "github.com/dgraph-io/badger/v4"
 _ "github.com/klauspost/compress/zstd"
 _ "golang.org/x/crypto/chacha20poly1305"
 _ "golang.org/x/crypto/argon2"
 _ "golang.org/x/crypto/curve25519"
 _ "golang.org/x/crypto/ssh"
 _ "golang.org/x/term"
 _ "golang.org/x/sys/unix"
 _ "github.com/zeebo/blake3"
 _ "filippo.io/age"
)
func main(){}
