package console

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/gdamore/tcell/v2"

	"drawbridge/vault/config"
	"drawbridge/vault/todrive"

	"drawbridge/vault/units"
)

// driveBoxW is the inner width of the drive screens' dialog.
const driveBoxW = 76

// drawDrives draws the open drive screen over the rest.
func drawDrives(c canvas, m *Model, d *driveScreens) {
	if !d.open() {
		return
	}
	var title string
	var lines []styled
	switch d.stage {
	case dsList:
		title, lines = d.listView(m)
	case dsExportKind:
		title = "Export " + short(d.snap.ID, 12) + " of " + d.snap.Source + " to a USB drive"
		lines = []styled{
			{styleNormal, fmt.Sprintf("Snapshot %s of %s, %s, %s, %s", short(d.snap.ID, 12), d.snap.Source,
				d.snap.Time.UTC().Format(shortFmt), units.Count(d.snap.Files, "file"), units.Bytes(d.snap.Bytes))},
			{},
			{styleNormal, "p  plain files, a MANIFEST signed by the vault and the offline"},
			{styleNormal, "   verifier: any computer reads it (needs the restore passphrase)"},
			{styleNormal, "s  sealed copy, still encrypted: drawbridge reads it with the"},
			{styleNormal, "   restore passphrase (no passphrase needed to write it)"},
			{},
			{styleDim, "Esc  cancel"},
		}
	case dsFSType:
		title = "Format " + d.fmtDrive.String()
		lines = []styled{{styleNormal, "Which filesystem?"}, {}}
		for _, t := range fsTypes {
			lines = append(lines, styled{styleNormal, fmt.Sprintf("%c  %-6s %s", t.key, t.name, t.why)})
		}
		lines = append(lines, styled{}, styled{styleDim, "Esc  back"})
	case dsConfirm:
		title = "Format " + d.fmtDrive.String()
		lines = []styled{
			{styleErr, "Formatting ERASES EVERYTHING on this drive:"},
			{styleTitle, "  " + d.fmtDrive.String()},
			{styleNormal, fmt.Sprintf("It becomes one %s filesystem labelled %s.", d.fstype, FormatLabel)},
			{},
			{styleNormal, "To go on, type exactly:"},
			{styleTitle, "  " + d.fmtDrive.Confirmation()},
			{},
			{styleNormal, "> " + d.typed},
		}
	case dsWork:
		title, lines = d.workView(m)
	case dsScan:
		title = "Import a configuration"
		lines = []styled{{styleNormal, spinner[m.spin%len(spinner)] + " looking for " + config.DriveFile + " at the top of each drive"},
			{styleDim, "(each partition is mounted read-only, only while it is read; nothing on it runs)"}}
	case dsConfigs:
		title, lines = d.configsView(m)
	case dsPlan:
		title, lines = d.planView(m)
	case dsAdminPass:
		title = "Import a configuration"
		lines = []styled{
			{styleNormal, "Applying the import needs the admin passphrase."},
			{styleDim, "(it is not shown as you type)"},
			{},
		}
		if d.passBusy {
			lines = append(lines, styled{styleNormal, spinner[m.spin%len(spinner)] + " checking the passphrase…"})
		} else {
			lines = append(lines, styled{styleNormal, "Admin passphrase: "})
		}
	case dsImported:
		title = "Configuration imported"
		for _, l := range d.imported {
			lines = append(lines, styled{styleNormal, l})
		}
		lines = append(lines, styled{}, styled{styleDim, "press any key"})
	}
	if d.msg != "" {
		st := styleNormal
		if d.bad {
			st = styleErr
		}
		lines = append(lines, styled{})
		for _, l := range wrap(d.msg, driveBoxW-2) {
			lines = append(lines, styled{st, l})
		}
	}
	n := min(len(lines), max(c.h-4, 1))
	x, y := box(c, fit(title, driveBoxW-4), driveBoxW, n)
	for i, l := range lines[:n] {
		c.put(x, y+i, l.st, fit(l.text, driveBoxW-1))
	}
	switch {
	case d.stage == dsConfirm && n == len(lines):
		c.s.ShowCursor(x+2+len([]rune(d.typed)), y+7)
	case d.stage == dsAdminPass && !d.passBusy:
		c.s.ShowCursor(x+18, y+3)
	}
}

// styled is a line of a dialog.
type styled struct {
	st   tcell.Style
	text string
}

func (d *driveScreens) listView(m *Model) (string, []styled) {
	title := "USB drives"
	var lines []styled
	switch d.purpose {
	case forRestore:
		what, _, _ := m.restoreWhat()
		title = "Restore to a USB drive"
		lines = append(lines, styled{styleTitle, fitLeft(what, driveBoxW-2)}, styled{})
	case forExport:
		kind := "plain"
		if d.sealed {
			kind = "sealed"
		}
		title = fmt.Sprintf("Export %s (%s) to a USB drive", short(d.snap.ID, 12), kind)
	case forKeys:
		title = "Write the authorized_keys lines to a USB drive"
		lines = append(lines, styled{styleNormal, fit("Each source's line, in a new file "+KeysFile+".", driveBoxW-2)}, styled{})
	}
	rows := d.rows()
	switch {
	case !d.listed:
		lines = append(lines, styled{styleNormal, spinner[m.spin%len(spinner)] + " looking for drives…"})
	case len(rows) == 0:
		lines = append(lines, styled{styleNormal, "No USB drive is plugged in: plug one in, it shows here within a second."})
	}
	// Only the rows that fit, the selected one among them.
	shown := driveRows(m)
	top := window(min(d.sel, len(rows)-1), len(rows), shown)
	if top > 0 {
		lines = append(lines, styled{styleDim, fmt.Sprintf("  ↑ %d more", top)})
	}
	for i, r := range rows {
		if i < top || i >= top+shown {
			continue
		}
		st := styleNormal
		if i == d.sel {
			st = styleSel
		}
		var text string
		if r.part < 0 {
			text = "  " + r.d.String()
			if len(r.d.Partitions) == 0 {
				text += "   (no filesystem: f formats it)"
			}
		} else {
			p := r.d.Partitions[r.part]
			fsName := p.FSType
			if fsName == "" {
				fsName = "?"
			}
			text = fmt.Sprintf("      %-10s %-6s %-12s %10s", p.Name, fsName, p.Label, units.Bytes(p.Size))
			if !usable(p) {
				text += "   (not usable here)"
			}
		}
		lines = append(lines, styled{st, mark(text, i == d.sel)})
	}
	if n := len(rows) - top - shown; n > 0 {
		lines = append(lines, styled{styleDim, fmt.Sprintf("  ↓ %d more", n)})
	}
	if d.purpose == forRestore {
		st := styleNormal
		if d.sel == len(rows) {
			st = styleSel
		}
		lines = append(lines, styled{}, styled{st, mark("  to a directory typed by hand (t)", d.sel == len(rows))})
	}
	if d.listErr != "" {
		lines = append(lines, styled{styleDim, fit("(some drives could not be read: "+d.listErr+")", driveBoxW-2)})
	}
	lines = append(lines, styled{})
	switch d.purpose {
	case forLook:
		lines = append(lines, styled{styleDim, "f  format the selected drive      Esc  back"})
	case forRestore:
		lines = append(lines, styled{styleDim, "Enter  restore to the selected partition   t  a typed directory"},
			styled{styleDim, "f  format the selected drive               Esc  cancel"})
	case forExport:
		lines = append(lines, styled{styleDim, "Enter  export to the selected partition   f  format the selected drive"},
			styled{styleDim, "Esc  cancel"})
	case forKeys:
		lines = append(lines, styled{styleDim, "Enter  write to the selected partition    f  format the selected drive"},
			styled{styleDim, "Esc  cancel"})
	}
	return title, lines
}

func (d *driveScreens) workView(m *Model) (string, []styled) {
	j := d.job
	if j == nil {
		return "", nil
	}
	var lines []styled
	if j.running {
		p := j.progress()
		el := m.clock().Sub(j.started).Round(time.Second)
		switch {
		case j.kind == "format":
			lines = append(lines, styled{styleNormal, fmt.Sprintf("%s formatting… %s", spinner[m.spin%len(spinner)], el)})
		case p.Total > 0 || p.Done > 0:
			phase := "writing"
			if p.Phase == todrive.PhaseVerify {
				phase = "reading back from the drive"
			}
			lines = append(lines, styled{styleNormal, phase})
			lines = append(lines, styled{styleNormal, bar(p.Done, p.Total)})
			eta := "ETA -"
			if p.ETA > 0 {
				eta = "ETA " + p.ETA.Round(time.Second).String()
			}
			lines = append(lines, styled{styleNormal, fmt.Sprintf("%s of %s  %s/s  %s", units.Bytes(p.Done), units.Bytes(p.Total), units.Bytes(int64(p.Rate)), eta)})
		default:
			lines = append(lines, styled{styleNormal, fmt.Sprintf("%s mounting the drive, checking its free space… %s", spinner[m.spin%len(spinner)], el)})
		}
		lines = append(lines, styled{}, styled{styleDim, "Esc stops (what is on the drive is then incomplete)"})
		return j.title, lines
	}
	for i, r := range j.result {
		st := styleNormal
		if j.failed && i == 0 {
			st = styleErr
		}
		for _, l := range wrap(r, driveBoxW-2) {
			lines = append(lines, styled{st, l})
		}
	}
	lines = append(lines, styled{}, styled{styleDim, fmt.Sprintf("took %s; press any key", j.ended.Sub(j.started).Round(time.Millisecond))})
	return j.title, lines
}

// driveRows is how many rows of drives or files the drive screens show.
func driveRows(m *Model) int { return max(m.Height-14, 3) }

// fitLeft shortens s to n runes, keeping its end (a path's file name).
func fitLeft(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}

// mark puts "> " at the start of the selected row, which shows on
// terminals without reverse video too.
func mark(row string, sel bool) string {
	if sel {
		return "> " + strings.TrimPrefix(row, "  ")
	}
	return row
}

// bar is a progress bar of done in total.
func bar(done, total int64) string {
	const barW = 40
	if total <= 0 {
		return "[" + strings.Repeat(".", barW) + "]"
	}
	frac := min(float64(done)/float64(total), 1)
	n := int(frac * barW)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", barW-n) + fmt.Sprintf("] %3.0f%%", frac*100)
}

func (d *driveScreens) configsView(m *Model) (string, []styled) {
	lines := []styled{}
	if len(d.found) == 0 {
		lines = append(lines, styled{styleNormal, "No drive with a filesystem is plugged in: plug one in and press r."})
	}
	shown := driveRows(m)
	top := window(d.foundSel, len(d.found), shown)
	for i, f := range d.found {
		if i < top || i >= top+shown {
			continue
		}
		st := styleNormal
		if i == d.foundSel {
			st = styleSel
		}
		var text string
		switch {
		case f.Err == nil:
			text = fmt.Sprintf("%s: %s, %d sources, %d windows", f, config.DriveFile, len(f.Config.Sources), len(f.Config.Windows))
		case errors.Is(f.Err, fs.ErrNotExist):
			text = fmt.Sprintf("%s: no %s at its top", f, config.DriveFile)
		default:
			text = fmt.Sprintf("%s: refused: %v", f, strings.ReplaceAll(f.Err.Error(), "\n", "; "))
		}
		lines = append(lines, styled{st, mark("  "+text, i == d.foundSel)})
	}
	lines = append(lines, styled{}, styled{styleDim, "Enter  show what it changes   r  look again   Esc  cancel"})
	return "Import a configuration from a USB drive", lines
}

func (d *driveScreens) planView(m *Model) (string, []styled) {
	p := d.plan
	lines := []styled{
		{styleNormal, "from " + p.From},
		{styleNormal, "into " + p.Current},
	}
	if p.OldErr != nil {
		lines = append(lines, styled{styleErr, fit("the installed file does not read ("+p.OldErr.Error()+"): everything shows as added", driveBoxW-2)})
	}
	lines = append(lines, styled{})
	if len(p.Changes) == 0 {
		lines = append(lines, styled{styleNormal, "no changes: the file configures what is installed"})
	}
	rows := max(m.Height-12, 1)
	cl := p.Lines()
	for i := d.planTop; i < len(cl) && i < d.planTop+rows; i++ {
		lines = append(lines, styled{styleNormal, "  " + cl[i]})
	}
	if len(cl) > rows {
		lines = append(lines, styled{styleDim, fmt.Sprintf("  (%d changes; Up/Down scroll)", len(cl))})
	}
	lines = append(lines, styled{}, styled{styleNormal, "y  apply (asks the admin passphrase)      n or Esc  cancel"})
	return "Import: what changes", lines
}

// driveHints is the bottom bar while a drive screen is open.
func driveHints(d *driveScreens) string {
	switch d.stage {
	case dsWork:
		if d.job != nil && d.job.running {
			return "Esc stop"
		}
		return "any key: close"
	case dsConfirm:
		return "type the confirmation, Enter format   Esc back"
	case dsAdminPass:
		return "Enter apply   Esc cancel"
	case dsImported:
		return "any key: close"
	case dsExportKind:
		return "p plain   s sealed   Esc cancel"
	case dsFSType:
		return "1 exfat   2 vfat   3 ext4   Esc back"
	case dsScan:
		return "Esc cancel"
	case dsPlan:
		return "y apply   n or Esc cancel   Up/Down scroll"
	case dsConfigs:
		return "Up/Down move   Enter show the changes   r look again   Esc cancel"
	}
	if d.purpose == forLook {
		return "Up/Down move   f format   Esc back"
	}
	return "Up/Down move   Enter pick   f format   Esc cancel"
}
