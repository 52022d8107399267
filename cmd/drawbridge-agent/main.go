// Command drawbridge-agent runs on a source host as the forced command of the
// vault's SSH key. It takes no arguments and speaks the agent protocol
// (docs/agent-protocol.md) on standard input and output; it only reads.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"drawbridge/vault/agent"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "drawbridge-agent takes no arguments: the vault runs it over SSH and speaks to it on standard input and output")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := agent.Serve(ctx, os.Stdin, os.Stdout, agent.Options{})
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "drawbridge-agent:", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
}
