package pull

import (
	"strings"

	"drawbridge/vault/config"
)

// AgentPath is where sources install drawbridge-agent.
const AgentPath = "/usr/local/bin/drawbridge-agent"

// SFTPCommand is the forced command of an sftp source's key: OpenSSH's
// in-process SFTP server, read-only. sshd runs it for the vault's key
// whatever the source's own Subsystem line names, as long as it has one
// (every stock sshd_config does); any other request (a shell, a command)
// is refused.
const SFTPCommand = "internal-sftp -R"

// AuthorizedKeyOptions returns the authorized_keys options that confine
// the vault's key on src: `restrict` (no forwarding, no pty, no rc files),
// the forced command of its kind, and from="ADDRESS" when the vault's
// address is static.
func AuthorizedKeyOptions(cfg *config.Config, src *config.Source) string {
	opts := []string{"restrict"}
	if cfg.Network.Prefix.IsValid() && !cfg.Network.DHCP {
		opts = append(opts, `from="`+cfg.Network.Prefix.Addr().String()+`"`)
	}
	var cmd string
	switch src.Kind {
	case config.KindAgent:
		cmd = AgentPath
	case config.KindSFTP:
		cmd = SFTPCommand
	case config.KindExec:
		cmd = src.Command
		if cmd == "" {
			cmd = "COMMAND"
		}
	}
	if cmd != "" {
		opts = append(opts, `command="`+quoteCommand(cmd)+`"`)
	}
	return strings.Join(opts, ",")
}

// AuthorizedKey returns the whole authorized_keys line for src, given the
// vault's public key line ("ssh-ed25519 AAAA… comment").
func AuthorizedKey(cfg *config.Config, src *config.Source, vaultKey string) string {
	return AuthorizedKeyOptions(cfg, src) + " " + vaultKey
}

// quoteCommand escapes a command for command="…": sshd takes \" as a
// quote inside the option and every other character as it is.
func quoteCommand(s string) string { return strings.ReplaceAll(s, `"`, `\"`) }
