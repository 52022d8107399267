// Command drawbridge-bench measures drawbridge against restic, side by side,
// on the same generated data: a mixed file tree, a disk image and a changed
// copy of it, and many tiny files. It reports time, throughput, peak memory
// and store growth per step, and how much the changed image added to each
// store against the bytes that changed.
//
// The data is generated from fixed seeds, so every run reads the same bytes;
// it is kept under the work directory and reused while the generator is
// unchanged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type config struct {
	dir        string
	quick      bool
	only       string
	drawbridge string
	restic     string
	keep       bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	tmp := os.Getenv("TMPDIR")
	if tmp == "" {
		tmp = "/var/tmp"
	}
	var cfg config
	fs := flag.NewFlagSet("drawbridge-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.dir, "dir", filepath.Join(tmp, "drawbridge-bench"), "work `directory`: generated data, stores, binaries, results.json")
	fs.BoolVar(&cfg.quick, "quick", false, "use data about 10x smaller, for a smoke test")
	fs.StringVar(&cfg.only, "only", "both", "tools to run: drawbridge, restic or both")
	fs.StringVar(&cfg.drawbridge, "drawbridge", "", "drawbridge `binary` (default: build ./cmd/drawbridge into the work directory)")
	fs.StringVar(&cfg.restic, "restic", "restic", "restic `binary`")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the stores after the run")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || (cfg.only != "both" && cfg.only != "drawbridge" && cfg.only != "restic") {
		fmt.Fprintln(stderr, "usage: drawbridge-bench [-dir DIR] [-quick] [-only drawbridge|restic|both] [-drawbridge BIN] [-restic BIN] [-keep]")
		return 2
	}
	if err := benchMain(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "drawbridge-bench:", err)
		return 1
	}
	return 0
}

func benchMain(ctx context.Context, cfg config, stdout, log io.Writer) error {
	dir, err := filepath.Abs(cfg.dir)
	if err != nil {
		return err
	}
	sc, dataDir := fullScale, filepath.Join(dir, "data")
	if cfg.quick {
		sc, dataDir = quickScale, filepath.Join(dir, "data-quick")
	}

	var tools []tool
	if cfg.only != "restic" {
		bin := cfg.drawbridge
		if bin == "" {
			if bin, err = buildDrawbridge(ctx, filepath.Join(dir, "bin"), log); err != nil {
				return err
			}
		}
		pass := filepath.Join(dir, "passphrase")
		if err := os.WriteFile(pass, []byte("drawbridge bench passphrase\n"), 0o600); err != nil {
			return err
		}
		tools = append(tools, drawbridgeTool(bin, pass))
	}
	if cfg.only != "drawbridge" {
		if _, err := exec.LookPath(cfg.restic); err != nil {
			return fmt.Errorf("restic: %w (install restic, or pass -only drawbridge)", err)
		}
		tools = append(tools, resticTool(cfg.restic, "drawbridge bench password"))
	}

	ds, err := prepare(dataDir, sc, log)
	if err != nil {
		return err
	}
	res := results{Generator: genVersion, Scale: sc.Name, Changed: ds.Changed, Data: map[string]int64{}}
	for _, t := range tools {
		res.Tools = append(res.Tools, t.Name)
	}
	for name, p := range map[string]string{"tree": ds.Tree, "image1": ds.Image1, "image2": ds.Image2, "tiny": ds.Tiny} {
		if res.Data[name], _, err = fileBytes(p); err != nil {
			return err
		}
	}
	fmt.Fprintf(log, "data: tree %.1f MB, image1 %.1f MB, tiny %.1f MB; image2 changes %d bytes (%.1f MB) of image1\n",
		float64(res.Data["tree"])/1e6, float64(res.Data["image1"])/1e6, float64(res.Data["tiny"])/1e6,
		ds.Changed, float64(ds.Changed)/1e6)

	runErr := bench(ctx, filepath.Join(dir, "run"), ds, tools, &res, cfg.keep, log)
	if runErr != nil {
		res.Error = runErr.Error()
	}
	fmt.Fprint(stdout, formatTable(res))
	if err := writeJSON(filepath.Join(dir, "results.json"), res); err != nil {
		return errors.Join(runErr, err)
	}
	fmt.Fprintf(log, "results: %s\n", filepath.Join(dir, "results.json"))
	return runErr
}

// buildDrawbridge builds ./cmd/drawbridge of the enclosing module into dir.
func buildDrawbridge(ctx context.Context, dir string, log io.Writer) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module: go env GOMOD: %w (pass -drawbridge BIN)", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", errors.New("not inside the drawbridge module: run from the repository or pass -drawbridge BIN")
	}
	bin := filepath.Join(dir, "drawbridge")
	fmt.Fprintf(log, "build: go build -o %s ./cmd/drawbridge\n", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/drawbridge")
	cmd.Dir = root
	var stderr tail
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build drawbridge: %w\n%s", err, stderr.lines(20))
	}
	return bin, nil
}
