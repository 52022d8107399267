// Command drawbridge is the vault: its daemon and its operator command line.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"drawbridge/vault/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
