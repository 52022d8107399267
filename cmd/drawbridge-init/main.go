//go:build linux

// Command drawbridge-init is the appliance's PID 1, /init in its image: the
// boot steps of package boot (first boot included), then reaping children,
// keeping the daemon running, petting the watchdog while the daemon's
// heartbeat is fresh, and waiting for a power-off request (the power
// button, ctrl-alt-del, SIGTERM, SIGUSR2, SIGPWR) or a reboot request
// (SIGUSR1).
package main

import (
	"fmt"
	"os"

	"drawbridge/boot"
)

// debugShell is the shell the debug image starts on the console; empty in
// the production image, which has no shell.
var debugShell string

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "drawbridge-init: this is the appliance's PID 1 (/init in its image) and runs only as PID 1")
		os.Exit(2)
	}
	boot.Main(debugShell)
}
