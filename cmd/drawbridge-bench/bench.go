package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// results is what one run of the benchmark found; it is also written as JSON.
type results struct {
	Generator int              `json:"generator"`
	Scale     string           `json:"scale"`
	Tools     []string         `json:"tools"`
	Data      map[string]int64 `json:"data_bytes"`
	Changed   int64            `json:"image2_changed_bytes"`
	Steps     []stepResult     `json:"steps"`
	Error     string           `json:"error,omitempty"` // why the run stopped early
}

// stepResult is one row of the table.
type stepResult struct {
	Step  string                 `json:"step"`
	Bytes int64                  `json:"bytes"`
	Tools map[string]*toolResult `json:"tools"`
}

type toolResult struct {
	measure
	MBps        float64 `json:"mb_per_s"`
	StoreBefore int64   `json:"store_before_bytes"`
	StoreAfter  int64   `json:"store_after_bytes"`
	Growth      int64   `json:"store_growth_bytes"`
}

// Step names; the dedup line looks up stepImage2.
const (
	stepImage2 = "image2 (changed)"
)

// stepKind says what a step asks of a tool.
type stepKind int

const (
	doBackup stepKind = iota
	doRestore
)

type step struct {
	name   string
	kind   stepKind
	source string // backup: the source name
	data   string // backup: the data set read; restore: the data set expected back
	stage  bool   // back the data up as group/disk.img, as if one disk had changed
}

// group is a sequence of steps that share one fresh store per tool.
type group struct {
	name  string
	steps []step
}

func plan(ds dataSets) []group {
	return []group{
		{"tree", []step{
			{name: "tree (first)", source: "tree", data: ds.Tree},
			{name: "tree (no change)", source: "tree", data: ds.Tree},
			{name: "tree restore", kind: doRestore, data: ds.Tree},
		}},
		{"images", []step{
			{name: "image1", source: "disk", data: ds.Image1, stage: true},
			{name: stepImage2, source: "disk", data: ds.Image2, stage: true},
		}},
		{"tiny", []step{
			{name: "tiny (first)", source: "tiny", data: ds.Tiny},
			{name: "tiny (no change)", source: "tiny", data: ds.Tiny},
		}},
	}
}

// bench runs every step of every group for each tool in turn, never two
// commands at once, and records the results in res as it goes.
func bench(ctx context.Context, runDir string, ds dataSets, tools []tool, res *results, keep bool, log io.Writer) error {
	for _, g := range plan(ds) {
		first := len(res.Steps)
		for _, st := range g.steps {
			n, _, err := fileBytes(st.data)
			if err != nil {
				return err
			}
			res.Steps = append(res.Steps, stepResult{Step: st.name, Bytes: n, Tools: map[string]*toolResult{}})
		}
		var rows []*stepResult
		for i := first; i < len(res.Steps); i++ {
			rows = append(rows, &res.Steps[i])
		}
		for _, t := range tools {
			if err := benchGroup(ctx, filepath.Join(runDir, t.Name, g.name), g, rows, t, log); err != nil {
				return err
			}
			if !keep {
				if err := removeAll(filepath.Join(runDir, t.Name, g.name)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func benchGroup(ctx context.Context, dir string, g group, rows []*stepResult, t tool, log io.Writer) error {
	if err := removeAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	store := filepath.Join(dir, "store")
	args, env := t.Init(store)
	fmt.Fprintf(log, "%s: %s: init\n", t.Name, g.name)
	if _, err := t.run(ctx, args, env); err != nil {
		return err
	}
	for i, st := range g.steps {
		before, err := diskUsage(store)
		if err != nil {
			return err
		}
		path := st.data
		switch st.kind {
		case doBackup:
			if st.stage {
				if path, err = stage(dir, st.data); err != nil {
					return err
				}
			}
			if err := warm(path); err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			args, env = t.Backup(store, st.source, path)
		case doRestore:
			target := filepath.Join(dir, "restore")
			args, env = t.Restore(store, target)
		}
		fmt.Fprintf(log, "%s: %s ...", t.Name, st.name)
		m, err := t.run(ctx, args, env)
		if err != nil {
			fmt.Fprintln(log, " failed")
			return err
		}
		if st.kind == doRestore {
			got, files, err := fileBytes(filepath.Join(dir, "restore"))
			if err != nil {
				return fmt.Errorf("%s restore: count restored bytes: %w", t.Name, err)
			}
			if got != rows[i].Bytes {
				return fmt.Errorf("%s restore: restored %d bytes in %d files, want %d bytes", t.Name, got, files, rows[i].Bytes)
			}
			if err := removeAll(filepath.Join(dir, "restore")); err != nil {
				return err
			}
		}
		after, err := diskUsage(store)
		if err != nil {
			return err
		}
		r := &toolResult{measure: m, StoreBefore: before, StoreAfter: after, Growth: after - before}
		if m.Seconds > 0 {
			r.MBps = float64(rows[i].Bytes) / 1e6 / m.Seconds
		}
		rows[i].Tools[t.Name] = r
		fmt.Fprintf(log, " %.2fs, %.1f MB/s, peak RSS %.0f MiB, store %+.1f MB\n",
			m.Seconds, r.MBps, float64(m.MaxRSS)/(1<<20), float64(r.Growth)/1e6)
	}
	return nil
}

// stage hard-links an image as dir/disk/disk.img, so that each tool sees one
// file at one path whose contents changed between backups, as a disk image
// does. Where a link cannot be made the image is backed up where it lies.
func stage(dir, image string) (string, error) {
	p := filepath.Join(dir, "disk", "disk.img")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return "", err
	}
	if err := os.Link(image, p); err != nil {
		return image, nil
	}
	return p, nil
}
