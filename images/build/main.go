// Command build makes the appliance's artifacts in images/out (make image):
// the kernel, the initramfs and the UEFI disk image. See package images.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"time"

	"drawbridge/images"
)

func main() {
	var cfg images.Config
	flag.StringVar(&cfg.Repo, "repo", ".", "repository root")
	flag.StringVar(&cfg.Out, "out", "images/out", "output directory")
	flag.BoolVar(&cfg.Debug, "debug", false, "debug image: u-root's gosh shell on the console")
	flag.StringVar(&cfg.Kernel, "kernel", "", "kernel (default: the newest /boot/vmlinuz-*)")
	flag.StringVar(&cfg.Cmdline, "cmdline", images.DefaultCmdline, "kernel command line of the unified kernel image")
	flag.BoolVar(&cfg.SkipDisk, "no-disk", false, "build only the kernel and the initramfs")
	flag.Parse()
	cfg.Log = os.Stdout
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "build: SOURCE_DATE_EPOCH=%q: not a number of seconds\n", s)
			os.Exit(2)
		}
		cfg.Epoch = time.Unix(n, 0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	a, err := images.Build(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n", err)
		os.Exit(1)
	}
	for _, f := range []string{a.Kernel, a.Initramfs, a.Disk} {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err == nil {
			fmt.Printf("%-40s %6.1f MiB\n", filepath.Clean(f), float64(st.Size())/(1<<20))
		}
	}
	fmt.Printf("built in %.1fs\n", time.Since(start).Seconds())
}
