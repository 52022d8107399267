// Command drawbridge is the vault: its daemon and its operator command line.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"drawbridge/vault/cli"
)

func main() {
	// DRAWBRIDGE_CPUPROFILE=FILE writes a CPU profile, for measuring.
	if p := os.Getenv("DRAWBRIDGE_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	// DRAWBRIDGE_MEMPROFILE=FILE rewrites a heap profile every second.
	if p := os.Getenv("DRAWBRIDGE_MEMPROFILE"); p != "" {
		go func() {
			for range time.Tick(time.Second) {
				if f, err := os.Create(p); err == nil {
					pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	if code != 0 {
		pprof.StopCPUProfile()
		os.Exit(code)
	}
}
