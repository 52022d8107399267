package export

import "strings"

// readme is README.txt: what the export is and how to check it, for a
// person at any computer.
func readme(fingerprint string) string {
	return strings.ReplaceAll(`Drawbridge export
=================

This drive holds a copy of one backup snapshot made by a Drawbridge vault,
as plain files that any computer can read:

  files/          the snapshot's files
  MANIFEST        one line per file: type, mode, size, SHA-256, time, path
  MANIFEST.sig    the vault's signature over MANIFEST
  verify/         the verifier for Linux, Windows and macOS

Check the copy before you trust it. Run the verifier for your computer from
the verify/ folder; it finds this export by itself:

  Linux (x86-64):   verify/drawbridge-verify-linux-amd64
  Linux (ARM):      verify/drawbridge-verify-linux-arm64
  Windows:          verify\drawbridge-verify-windows-amd64.exe
  macOS (Intel):    verify/drawbridge-verify-darwin-amd64
  macOS (Apple):    verify/drawbridge-verify-darwin-arm64

(on macOS and Linux you may first need: chmod +x verify/*). Or give it the
folder: drawbridge-verify /path/to/drawbridge-export

It checks the signature, prints the signing key's fingerprint, and then
checks every file's size and SHA-256, and that nothing was added or removed.
Compare the fingerprint it prints with the one the vault's console shows.
The vault that wrote this export has the identity key

  @FP@

To require that key: drawbridge-verify --key @FP@

"valid" means every file is exactly what the vault exported. Anything else
names each problem: "changed", "missing", "extra", "manifest signature
invalid", or "incomplete export" (the export was interrupted: MANIFEST is
written last, so a drive pulled out early has none).

A drive that was tampered with could also carry a tampered verifier. When
that matters, run a drawbridge-verify you got another way (a copy kept from
an earlier export you checked, or one built from the Drawbridge source) and
give it this folder.

If verify/ is empty, build the verifier from the Drawbridge source
(go build ./cmd/drawbridge-verify) or copy it from the vault's bin/verify/.
Without it, the file sizes and SHA-256 sums in MANIFEST can be checked with
any SHA-256 tool (paths are percent-escaped: %20 is a space); the signature
is Ed25519 over the bytes "drawbridge export manifest v1", a zero byte, and
the MANIFEST, with the public key given in its header.
`, "@FP@", fingerprint)
}
