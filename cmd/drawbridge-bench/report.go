package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// formatTable renders the results as an aligned plain-text table, one row per
// step, followed by the dedup line. A tool that did not run shows "-".
func formatTable(res results) string {
	const a, b = "drawbridge", "restic"
	spans := []span{{"", 2}, {a, 2}, {b, 2}, {"", 1}, {"peak RSS MiB", 2}, {"store growth MB", 2}}
	head := []string{"step", "data MB", "s", "MB/s", "s", "MB/s", "ratio", a, b, a, b}
	rows := [][]string{head}
	for _, s := range res.Steps {
		ta, tb := s.Tools[a], s.Tools[b]
		ratio := "-"
		if ta != nil && tb != nil && ta.Seconds > 0 {
			ratio = fmt.Sprintf("%.2fx", tb.Seconds/ta.Seconds)
		}
		rows = append(rows, []string{
			s.Step, fmt.Sprintf("%.1f", float64(s.Bytes)/1e6),
			cell(ta, "%.2f", func(r *toolResult) float64 { return r.Seconds }),
			cell(ta, "%.1f", func(r *toolResult) float64 { return r.MBps }),
			cell(tb, "%.2f", func(r *toolResult) float64 { return r.Seconds }),
			cell(tb, "%.1f", func(r *toolResult) float64 { return r.MBps }),
			ratio,
			cell(ta, "%.0f", func(r *toolResult) float64 { return float64(r.MaxRSS) / (1 << 20) }),
			cell(tb, "%.0f", func(r *toolResult) float64 { return float64(r.MaxRSS) / (1 << 20) }),
			cell(ta, "%+.1f", func(r *toolResult) float64 { return float64(r.Growth) / 1e6 }),
			cell(tb, "%+.1f", func(r *toolResult) float64 { return float64(r.Growth) / 1e6 }),
		})
	}

	width := make([]int, len(head))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	// Widen the last column of a span whose label is wider than the span.
	col := 0
	for _, s := range spans {
		w := spanWidth(width[col : col+s.cols])
		if len(s.label) > w {
			width[col+s.cols-1] += len(s.label) - w
		}
		col += s.cols
	}

	var out strings.Builder
	var line strings.Builder
	col = 0
	for i, s := range spans {
		if i > 0 {
			line.WriteString(gap)
		}
		w := spanWidth(width[col : col+s.cols])
		pad := w - len(s.label)
		line.WriteString(strings.Repeat(" ", pad/2) + s.label + strings.Repeat(" ", pad-pad/2))
		col += s.cols
	}
	out.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	for ri, r := range rows {
		line.Reset()
		for i, c := range r {
			if i > 0 {
				line.WriteString(gap)
			}
			if i == 0 {
				line.WriteString(c + strings.Repeat(" ", width[i]-len(c)))
			} else {
				line.WriteString(strings.Repeat(" ", width[i]-len(c)) + c)
			}
		}
		out.WriteString(strings.TrimRight(line.String(), " ") + "\n")
		if ri == 0 {
			out.WriteString(strings.Repeat("-", spanWidth(width)) + "\n")
		}
	}
	out.WriteString("ratio: restic time / drawbridge time (above 1: drawbridge is faster)\n")
	out.WriteString(dedupLine(res) + "\n")
	return out.String()
}

const gap = "  "

type span struct {
	label string
	cols  int
}

func spanWidth(widths []int) int {
	w := len(gap) * (len(widths) - 1)
	for _, x := range widths {
		w += x
	}
	return w
}

func cell(r *toolResult, format string, f func(*toolResult) float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf(format, f(r))
}

// dedupLine says how much image2's backup added to each store, against the
// bytes that actually changed.
func dedupLine(res results) string {
	var parts []string
	for _, s := range res.Steps {
		if s.Step != stepImage2 {
			continue
		}
		for _, name := range res.Tools {
			if r := s.Tools[name]; r != nil && res.Changed > 0 {
				parts = append(parts, fmt.Sprintf("%s %.1f MB (%.2fx)", name, float64(r.Growth)/1e6, float64(r.Growth)/float64(res.Changed)))
			}
		}
	}
	if len(parts) == 0 {
		return "dedup: image2 was not backed up"
	}
	return fmt.Sprintf("dedup: image2's backup added %s; %.1f MB of image2 changed", strings.Join(parts, ", "), float64(res.Changed)/1e6)
}

// writeJSON writes the results to name, replacing it whole.
func writeJSON(name string, res results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".results-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
