//go:build linux && debugshell

package main

// The debug image (make image DEBUG=1) is built with -tags debugshell and
// carries u-root's gosh.
func init() { debugShell = "/bin/gosh" }
