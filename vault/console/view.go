package console

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gdamore/tcell/v2"

	"drawbridge/vault/daemon"
	"drawbridge/vault/tree"

	"drawbridge/vault/units"
)

var (
	styleNormal = tcell.StyleDefault
	styleBar    = tcell.StyleDefault.Reverse(true)
	styleTitle  = tcell.StyleDefault.Bold(true)
	styleSel    = tcell.StyleDefault.Reverse(true)
	styleErr    = tcell.StyleDefault.Foreground(tcell.ColorRed).Bold(true)
	styleDim    = tcell.StyleDefault.Dim(true)
)

var spinner = []string{"|", "/", "-", "\\"}

// timeFmt is how the console shows times: UTC, to the second.
const timeFmt = "2006-01-02 15:04:05Z"

// canvas is where the view draws: a tcell screen clipped to its size.
type canvas struct {
	s    tcell.Screen
	w, h int
}

// put writes text at (x, y), clipped to the screen; control characters and
// invalid UTF-8 (names in snapshots are raw bytes) show as '?'.
func (c canvas) put(x, y int, st tcell.Style, text string) int {
	if y < 0 || y >= c.h {
		return x
	}
	for i := 0; i < len(text) && x < c.w; {
		r, n := utf8.DecodeRuneInString(text[i:])
		i += n
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		c.s.SetContent(x, y, r, nil, st)
		x++
	}
	return x
}

// line writes text and fills the rest of the row with st.
func (c canvas) line(y int, st tcell.Style, text string) {
	x := c.put(0, y, st, text)
	for ; x < c.w; x++ {
		c.s.SetContent(x, y, ' ', nil, st)
	}
}

// Draw renders the Model onto s; only the rows that fit are built.
func Draw(screen tcell.Screen, m *Model) {
	s := newFrame(screen)
	defer s.flush()
	w, h := s.w, s.h
	c := canvas{s, w, h}
	title := "Drawbridge console"
	if m.status != nil && m.status.VaultID != "" {
		title += "  vault " + short(m.status.VaultID, 12)
	}
	if m.b.ReadOnly() {
		title += "  [read-only: the daemon holds the store]"
	}
	if m.reader != nil {
		left := IdleTimeout - m.clock().Sub(m.lastKey)
		title += fmt.Sprintf("  [unlocked, locks in %s]", left.Round(time.Second))
	}
	c.line(0, styleBar, " "+title)
	switch m.screen {
	case ScreenStatus:
		drawStatus(c, m)
	case ScreenSources:
		drawSources(c, m)
	case ScreenSnapshots:
		drawSnapshots(c, m)
	case ScreenBrowse:
		drawBrowse(c, m)
	case ScreenJournal:
		drawJournal(c, m)
	case ScreenDiff:
		drawDiff(c, m)
	case ScreenSettings:
		drawSettings(c, m)
	}
	if m.msg != "" {
		st := styleNormal
		if m.bad {
			st = styleErr
		}
		c.line(h-2, st, " "+m.msg)
	}
	c.line(h-1, styleBar, " "+hints(m))
	switch m.dialog {
	case DialogHelp:
		drawHelp(c, m)
	case DialogVerify:
		drawVerify(c, m)
	case DialogConfirm:
		drawLines(c, m.confirm.title, m.confirm.lines)
	case DialogText:
		drawLines(c, m.textTitle, m.text)
	case DialogPassphrase:
		drawPassphrase(c, m)
	case DialogTarget:
		drawTarget(c, m)
	case DialogRestore:
		drawRestore(c, m)
	}
	drawDrives(c, m, &m.drv)
	if m.ac != nil {
		drawAdminChange(c, m)
	}
}

// fit shortens s to n runes, marking the cut.
func fit(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func short(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func hints(m *Model) string {
	if m.drv.open() {
		return driveHints(&m.drv)
	}
	switch m.dialog {
	case DialogPassphrase:
		return "Enter unlock   Esc cancel"
	case DialogTarget:
		if drivesOf(m.b) != nil {
			return "Enter restore   Tab a USB drive   Esc cancel"
		}
		return "Enter restore   Esc cancel"
	case DialogRestore:
		if m.job != nil && m.job.running {
			return "Esc cancel the restore"
		}
		return "any key: close"
	case DialogVerify:
		if m.verify != nil && m.verify.running {
			return "Esc stop the verify"
		}
		return "any key: close"
	case DialogHelp:
		return "any key: close the help"
	case DialogText:
		return "any key: close"
	case DialogConfirm:
		return "answer with a key shown   Esc cancel"
	}
	switch m.screen {
	case ScreenStatus:
		q := "q quit"
		if m.o.Fixed {
			q = "p power"
		}
		return "b browse  j journal  v/V verify  n back up  u USB  s settings  ? keys  " + q
	case ScreenSources:
		return "Up/Down move   Enter open   Esc back   ? keys"
	case ScreenSnapshots:
		return "Enter open  m mark  d diff  e export to USB  Esc back  ? keys"
	case ScreenJournal:
		return "Up/Down PgUp/PgDn Home/End move   Enter show a record   r reload   Esc back"
	case ScreenDiff:
		return "Up/Down PgUp/PgDn move   Esc back"
	case ScreenSettings:
		return "Up/Down scroll  i import  a keys to a drive  p admin passphrase  Esc back"
	default:
		return "Up/Down PgUp/PgDn move   Enter open   r restore   R restore this directory   Esc back   ? keys"
	}
}

// shortFmt is how the status screen shows times: UTC, to the minute.
const shortFmt = "2006-01-02 15:04Z"

// health is what the status screen says of a source, and whether it is
// bad news.
type health struct {
	text string
	bad  bool
}

// sourceHealth judges a source by its last snapshot and the daemon's last
// pull of it.
func sourceHealth(st *Status, src string, last *time.Time, snapStatus string) health {
	h := health{text: "ok"}
	switch {
	case last == nil:
		h = health{text: "no snapshot yet", bad: true}
	case snapStatus == "partial":
		h = health{text: "partial: some files were unreadable", bad: true}
	case snapStatus != "" && snapStatus != "ok":
		h = health{text: snapStatus, bad: true}
	}
	d := st.Daemon
	if d == nil {
		return h
	}
	for _, s := range d.Sources {
		if s.Name == src && s.LastError != "" && (last == nil || s.LastErrorTime.After(*last)) {
			return health{text: "pull failed: " + strings.TrimPrefix(s.LastError, "pull "+src+": "), bad: true}
		}
	}
	if lw := d.LastWindow; lw != nil && !h.bad && !lw.Closed.IsZero() && lw.Result != "skipped" && last.Before(lw.Start) {
		return health{text: "not pulled in the last window", bad: true}
	}
	return h
}

// alerts lists what the person at the box should look at first.
func alerts(st *Status, m *Model) []string {
	var out []string
	if d := st.Daemon; d != nil {
		if d.ClockAlert != "" {
			out = append(out, "clock: "+d.ClockAlert)
		}
		if lw := d.LastWindow; lw != nil && lw.Error != "" {
			out = append(out, fmt.Sprintf("last window (%s): %s", lw.Result, lw.Error))
		}
	}
	if lv := st.LastVerify; lv != nil {
		var v struct {
			Problems int `json:"problems"`
		}
		if json.Unmarshal(lv.Data, &v) == nil && v.Problems > 0 {
			out = append(out, fmt.Sprintf("the last verify (%s) found damage: %d problems", lv.Time.UTC().Format(shortFmt), v.Problems))
		}
	}
	bad := 0
	for _, src := range m.sources {
		if sourceHealthOf(st, m, src).bad {
			bad++
		}
	}
	if bad > 0 {
		out = append(out, fmt.Sprintf("%d of %d sources need attention", bad, len(m.sources)))
	}
	if st.SnapErr != "" || st.JournalErr != "" {
		out = append(out, "the journal does not read back whole: run verify")
	}
	if need := max(uint64(daemon.DefaultMinFreeBytes), uint64(daemon.DefaultMinFreeFraction*float64(st.DiskSize))); st.DiskSize > 0 && st.DiskFree < need {
		out = append(out, fmt.Sprintf("the store disk is nearly full (%s free): windows are skipped", units.Bytes(int64(st.DiskFree))))
	}
	return out
}

func sourceHealthOf(st *Status, m *Model, src string) health {
	if i, ok := m.latest[src]; ok {
		sn := st.Snapshots[i]
		return sourceHealth(st, src, &sn.Time, sn.Status)
	}
	return sourceHealth(st, src, nil, "")
}

func drawStatus(c canvas, m *Model) {
	y := 2
	if m.status == nil {
		c.put(1, y, styleNormal, spinner[m.spin%len(spinner)]+" reading the store…")
		return
	}
	st := m.status
	if al := alerts(st, m); len(al) > 0 {
		c.put(1, y, styleErr, "Alerts")
		y++
		for _, a := range al {
			c.put(3, y, styleErr, a)
			y++
		}
		y++
	}
	c.put(1, y, styleTitle, "Windows")
	y++
	if st.Daemon == nil {
		c.put(3, y, styleNormal, "no daemon status")
		y++
	} else {
		d := st.Daemon
		if d.Open != nil {
			c.put(3, y, styleTitle, fmt.Sprintf("open now:    since %s, closes by %s", d.Open.Start.UTC().Format(shortFmt), d.Open.End.UTC().Format(shortFmt)))
			y++
		}
		if lw := d.LastWindow; lw != nil {
			res := lw.Result
			if lw.OpenedBy == "now" {
				res += " (back up now)"
			}
			c.put(3, y, styleNormal, fmt.Sprintf("last window: %s for %s: %s", lw.Start.UTC().Format(shortFmt), lw.End.Sub(lw.Start).Round(time.Minute), res))
		} else {
			c.put(3, y, styleNormal, "last window: none yet")
		}
		y++
		if d.NextWindow != nil {
			c.put(3, y, styleNormal, fmt.Sprintf("next window: %s for %s", d.NextWindow.Start.UTC().Format(shortFmt), d.NextWindow.End.Sub(d.NextWindow.Start).Round(time.Minute)))
		} else {
			c.put(3, y, styleNormal, "next window: none scheduled")
		}
		y++
	}
	y++
	c.put(1, y, styleTitle, "Sources")
	y++
	c.put(3, y, styleDim, fmt.Sprintf("%-12s %-17s %7s %9s  %s", "SOURCE", "LAST SNAPSHOT", "FILES", "BYTES", "HEALTH"))
	y++
	if len(m.sources) == 0 {
		c.put(3, y, styleNormal, "no source and no snapshot yet")
		y++
	}
	for _, src := range m.sources {
		if y >= c.h-10 {
			c.put(3, y, styleDim, fmt.Sprintf("… %d sources in all: browse to see every one", len(m.sources)))
			y++
			break
		}
		when, files, bytes := "-", "", ""
		if i, ok := m.latest[src]; ok {
			sn := st.Snapshots[i]
			when, files, bytes = sn.Time.UTC().Format(shortFmt), fmt.Sprint(sn.Files), units.Bytes(sn.Bytes)
		}
		h := sourceHealthOf(st, m, src)
		stStyle := styleNormal
		if h.bad {
			stStyle = styleErr
		}
		x := c.put(3, y, styleNormal, fmt.Sprintf("%-12s %-17s %7s %9s  ", short(src, 12), when, files, bytes))
		text := h.text
		if room := c.w - x; len([]rune(text)) > room {
			// The end of an error says most: "…: i/o timeout".
			if i := strings.LastIndex(text, ": "); i > 0 && strings.HasPrefix(text, "pull failed: ") {
				text = "pull failed: …" + text[i:]
			}
		}
		c.put(x, y, stStyle, fit(text, max(c.w-x, 2)))
		y++
	}
	if st.SnapErr != "" {
		c.put(3, y, styleErr, "snapshot list: "+st.SnapErr)
		y++
	}
	y++
	c.put(1, y, styleTitle, "Store")
	y++
	c.put(3, y, styleNormal, fmt.Sprintf("%d packs, %s on disk; %d snapshots", st.Packs, units.Bytes(st.PackBytes), len(st.Snapshots)))
	y++
	if st.DiskSize > 0 {
		c.put(3, y, styleNormal, fmt.Sprintf("disk: %s free of %s", units.Bytes(int64(st.DiskFree)), units.Bytes(int64(st.DiskSize))))
		y++
	}
	if lv := st.LastVerify; lv != nil {
		var d struct {
			Problems *int   `json:"problems"`
			Error    string `json:"error"`
		}
		_ = json.Unmarshal(lv.Data, &d)
		switch {
		case d.Error != "":
			c.put(3, y, styleNormal, fmt.Sprintf("last verify: %s, did not finish: %s", lv.Time.UTC().Format(timeFmt), d.Error))
		case d.Problems != nil && *d.Problems > 0:
			c.put(3, y, styleErr, fmt.Sprintf("last verify: %s, DAMAGE: %d problems", lv.Time.UTC().Format(timeFmt), *d.Problems))
		default:
			c.put(3, y, styleNormal, fmt.Sprintf("last verify: %s, no problems", lv.Time.UTC().Format(timeFmt)))
		}
	} else {
		c.put(3, y, styleNormal, "last verify: none from a console yet (v verifies)")
	}
	y += 2
	c.put(1, y, styleTitle, "Journal (latest)")
	y++
	if st.JournalErr != "" {
		c.put(3, y, styleErr, st.JournalErr)
		y++
	}
	for _, r := range st.Journal {
		if y >= c.h-2 {
			break
		}
		c.put(3, y, styleNormal, fmt.Sprintf("#%-5d %s  %-18s %s", r.Seq, r.Time.UTC().Format(timeFmt), r.Type, r.Message))
		y++
	}
}

// window returns the first row to show so that sel is visible in rows rows.
func window(sel, n, rows int) int {
	top := 0
	if sel >= rows {
		top = sel - rows + 1
	}
	return max(0, min(top, n-rows))
}

func drawSources(c canvas, m *Model) {
	c.put(1, 1, styleTitle, "Sources")
	rows := m.listRows()
	top := window(m.srcSel, len(m.sources), rows)
	for i := top; i < len(m.sources) && i < top+rows; i++ {
		st := styleNormal
		if i == m.srcSel {
			st = styleSel
		}
		n := m.counts[m.sources[i]]
		c.line(3+i-top, st, fmt.Sprintf("  %-24s %d snapshots", m.sources[i], n))
	}
	if len(m.sources) == 0 {
		c.put(2, 3, styleNormal, "no snapshot yet")
	}
}

func drawSnapshots(c canvas, m *Model) {
	src := ""
	if len(m.sources) > 0 {
		src = m.sources[m.srcSel]
	}
	c.put(1, 1, styleTitle, "Snapshots of "+src)
	c.put(2, 2, styleDim, fmt.Sprintf("%-12s  %-20s %9s %10s  %s", "ID", "TIME", "FILES", "BYTES", "STATUS"))
	rows := m.listRows()
	top := window(m.snapSel, len(m.snaps), rows)
	for i := top; i < len(m.snaps) && i < top+rows; i++ {
		sn := m.snaps[i]
		st := styleNormal
		if i == m.snapSel {
			st = styleSel
		}
		c.line(3+i-top, st, fmt.Sprintf("  %-12s  %-20s %9d %10s  %s", short(sn.ID, 12), sn.Time.UTC().Format(timeFmt), sn.Files, units.Bytes(sn.Bytes), sn.Status))
	}
}

// entryRow is one row of the browser.
func entryRow(e *tree.Entry) string {
	name := e.Name
	size := ""
	switch e.Kind {
	case tree.Dir:
		name += "/"
	case tree.File:
		size = units.Bytes(int64(e.Size))
	case tree.Symlink:
		name += " -> " + e.Target
	default:
		size = e.Kind.String()
	}
	return fmt.Sprintf("  %04o %10s  %s  %s", e.Mode, size, time.Unix(e.MtimeSec, 0).UTC().Format("2006-01-02 15:04"), name)
}

// VisibleRows builds the rows of the browser that fit on the screen: the
// first row's index and the rows, never more than listRows.
func (m *Model) VisibleRows() (top int, rows []string) {
	l := m.cur()
	if l == nil {
		return 0, nil
	}
	end := min(l.top+m.listRows(), len(l.entries))
	for i := l.top; i < end; i++ {
		rows = append(rows, entryRow(&l.entries[i]))
	}
	return l.top, rows
}

func drawBrowse(c canvas, m *Model) {
	where := ""
	if m.snap != nil {
		where = fmt.Sprintf("%s  %s  ", m.snap.Source, short(m.snap.ID, 12))
	}
	c.put(1, 1, styleTitle, where+m.browsePath())
	if m.loading != "" {
		el := m.clock().Sub(m.loadAt).Round(100 * time.Millisecond)
		c.put(1, 3, styleNormal, fmt.Sprintf("%s reading %s … %s (Esc to stop)", spinner[m.spin%len(spinner)], m.loading, el))
		return
	}
	l := m.cur()
	if l == nil {
		return
	}
	c.put(1, 2, styleDim, fmt.Sprintf("%d entries", len(l.entries)))
	if len(l.entries) > 0 {
		pos := fmt.Sprintf("%d/%d", l.sel+1, len(l.entries))
		c.put(c.w-len(pos)-1, 1, styleDim, pos)
	}
	top, rows := m.VisibleRows()
	for i, r := range rows {
		st := styleNormal
		if top+i == l.sel {
			st = styleSel
		}
		c.line(3+i, st, r)
	}
	if len(l.entries) == 0 {
		c.put(2, 3, styleNormal, "(empty directory)")
	}
}

// box draws a framed dialog of the given inner size, centred, and returns
// the position of its first inner row.
func box(c canvas, title string, w, h int) (x, y int) {
	w = min(w, c.w-4)
	x0, y0 := max((c.w-w)/2-1, 0), max((c.h-h)/2-1, 0)
	for yy := y0; yy < y0+h+2 && yy < c.h; yy++ {
		for xx := x0; xx < x0+w+2 && xx < c.w; xx++ {
			ch := ' '
			switch {
			case (yy == y0 || yy == y0+h+1) && (xx == x0 || xx == x0+w+1):
				ch = '+'
			case yy == y0 || yy == y0+h+1:
				ch = '-'
			case xx == x0 || xx == x0+w+1:
				ch = '|'
			}
			c.s.SetContent(xx, yy, ch, nil, styleNormal)
		}
	}
	c.put(x0+2, y0, styleTitle, " "+title+" ")
	return x0 + 2, y0 + 1
}

func drawHelp(c canvas, m *Model) {
	quit := "q quit"
	ctrlC := "Ctrl-C     quit from anywhere"
	if m.o.Fixed {
		quit = "p power off or reboot"
		ctrlC = "Ctrl-C     forget the passphrase, back to the status screen"
	}
	lines := []string{
		"Status     b or Enter browse snapshots; j journal; r refresh",
		"           v verify; V deep verify (restore passphrase)",
		"           n back up now; s settings (admin passphrase)",
		"           u USB drives: format one",
		"           " + quit,
		"Lists      Up/Down (j/k), PgUp/PgDn, Home/End (g/G)",
		"           Enter or Right open; Esc, Left or q back",
		"Snapshots  m mark one; d diff the selected one with the marked",
		"           one, or with the one before it; e export it to USB",
		"Browser    r restore the selected file or directory (to a USB",
		"           drive, or a typed directory); R the directory shown",
		"           (at / the whole snapshot)",
		"Settings   i import a configuration from a USB drive; a write",
		"           each source's authorized_keys line to one; p change",
		"           the admin passphrase",
		"Dialogs    Enter confirm; Esc cancel",
		ctrlC,
		"",
		"Reading contents needs the restore passphrase; it is forgotten",
		fmt.Sprintf("after %s without a key press. Every action that changes or", IdleTimeout),
		"reveals something is journaled.",
	}
	x, y := box(c, "Keys", 68, len(lines))
	for i, l := range lines {
		c.put(x, y+i, styleNormal, l)
	}
}

func drawPassphrase(c canvas, m *Model) {
	if m.passAdmin {
		x, y := box(c, "Admin passphrase", 60, 4)
		c.put(x, y, styleNormal, "The settings need the admin passphrase.")
		c.put(x, y+1, styleDim, "(it is not shown as you type)")
		if m.passBusy {
			c.put(x, y+3, styleNormal, spinner[m.spin%len(spinner)]+" checking the passphrase…")
		} else {
			c.put(x, y+3, styleNormal, "Passphrase: ")
			c.s.ShowCursor(x+12, y+3)
		}
		return
	}
	x, y := box(c, "Restore passphrase", 60, 4)
	c.put(x, y, styleNormal, "Reading snapshot contents needs the restore passphrase.")
	c.put(x, y+1, styleDim, "(it is not shown as you type)")
	if m.passBusy {
		c.put(x, y+3, styleNormal, spinner[m.spin%len(spinner)]+" checking the passphrase…")
	} else {
		c.put(x, y+3, styleNormal, "Passphrase: ")
		c.s.ShowCursor(x+12, y+3)
	}
}

func drawTarget(c canvas, m *Model) {
	what, _, _ := m.restoreWhat()
	x, y := box(c, "Restore", 70, 5)
	c.put(x, y, styleNormal, fit("Restore "+what, 66))
	c.put(x, y+1, styleDim, "to a directory that is missing or empty (the drive):")
	in := m.input
	if r := []rune(in); len(r) > 60 {
		in = "…" + string(r[len(r)-59:])
	}
	end := c.put(x, y+3, styleNormal, "> "+in)
	if drivesOf(m.b) != nil {
		c.put(x, y+4, styleDim, "Tab  a USB drive instead")
	}
	c.s.ShowCursor(end, y+3)
}

func drawRestore(c canvas, m *Model) {
	j := m.job
	if j == nil {
		return
	}
	x, y := box(c, "Restore", 70, 5)
	c.put(x, y, styleNormal, fit(fmt.Sprintf("%s → %s", j.what, j.target), 66))
	done := j.done.Load()
	end := m.clock()
	if !j.running {
		end = j.ended
	}
	el := end.Sub(j.started).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(done) / el
	}
	const barW = 40
	if total := j.total.Load(); total > 0 {
		frac := min(float64(done)/float64(total), 1)
		n := int(frac * barW)
		eta := "ETA -"
		switch {
		case !j.running:
			eta = "took " + end.Sub(j.started).Round(time.Millisecond).String()
		case rate > 0:
			eta = "ETA " + time.Duration(float64(max(total-done, 0))/rate*float64(time.Second)).Round(time.Second).String()
		}
		c.put(x, y+1, styleNormal, "["+strings.Repeat("#", n)+strings.Repeat(".", barW-n)+fmt.Sprintf("] %3.0f%%", frac*100))
		c.put(x, y+2, styleNormal, fmt.Sprintf("%s of %s  %s/s  %s", units.Bytes(done), units.Bytes(total), units.Bytes(int64(rate)), eta))
	} else {
		sp := spinner[m.spin%len(spinner)]
		if !j.running {
			sp = "#"
		}
		c.put(x, y+1, styleNormal, fmt.Sprintf("%s %s  %s/s", sp, units.Bytes(done), units.Bytes(int64(rate))))
	}
	if j.running {
		c.put(x, y+4, styleDim, "restoring… (Esc cancels)")
		return
	}
	st := styleNormal
	if j.failed {
		st = styleErr
	}
	c.put(x, y+3, st, fit(j.result, 66))
	c.put(x, y+4, styleDim, "press any key")
}

// drawLines draws a dialog of fixed lines.
func drawLines(c canvas, title string, lines []string) {
	w := 40
	for _, l := range lines {
		w = max(w, len([]rune(l)))
	}
	n := min(len(lines), max(c.h-4, 1))
	x, y := box(c, title, w+1, n)
	for i, l := range lines[:n] {
		c.put(x, y+i, styleNormal, l)
	}
}

// progressBar draws done of total, or a spinner while total is unknown.
func progressBar(c canvas, m *Model, x, y int, done, total int64, running bool) {
	const barW = 40
	if total > 0 {
		frac := min(float64(done)/float64(total), 1)
		n := int(frac * barW)
		c.put(x, y, styleNormal, "["+strings.Repeat("#", n)+strings.Repeat(".", barW-n)+fmt.Sprintf("] %3.0f%%", frac*100))
		return
	}
	sp := spinner[m.spin%len(spinner)]
	if !running {
		sp = "#"
	}
	c.put(x, y, styleNormal, sp+" starting…")
}

func drawVerify(c canvas, m *Model) {
	j := m.verify
	if j == nil {
		return
	}
	title := "Verify"
	if j.deep {
		title = "Deep verify"
	}
	x, y := box(c, title, 70, 12)
	done, total := j.done.Load(), j.total.Load()
	end := m.clock()
	if !j.running {
		end = j.ended
	}
	if j.running {
		progressBar(c, m, x, y, done, total, true)
		c.put(x, y+1, styleNormal, fmt.Sprintf("%s of %s of packs checked, %s", units.Bytes(done), units.Bytes(total), end.Sub(j.started).Round(time.Second)))
		if j.deep {
			c.put(x, y+3, styleDim, "every blob is decrypted and re-hashed, every snapshot walked")
		}
		c.put(x, y+11, styleDim, "verifying… (Esc stops)")
		return
	}
	took := end.Sub(j.started).Round(time.Millisecond)
	if j.err != nil {
		c.put(x, y, styleErr, fit("verify did not finish: "+j.err.Error(), 66))
		c.put(x, y+11, styleDim, "press any key")
		return
	}
	r := j.rep
	c.put(x, y, styleNormal, fmt.Sprintf("%d packs, %d blobs, %d journal records, %d snapshots", r.Packs, r.Blobs, r.Records, r.Snapshots))
	if j.deep {
		c.put(x, y+1, styleNormal, units.Count(r.DeepBlobs, "blob")+" decrypted, "+units.Count(r.DeepFiles, "file")+" checked")
	}
	if len(r.Problems) == 0 {
		c.put(x, y+3, styleTitle, fmt.Sprintf("no problems (took %s)", took))
	} else {
		c.put(x, y+3, styleErr, fmt.Sprintf("DAMAGE: %d problems (took %s)", len(r.Problems), took))
		for i, p := range r.Problems {
			if i == 6 {
				c.put(x, y+4+i, styleDim, fmt.Sprintf("… and %d more: drawbridge verify lists them all", len(r.Problems)-i))
				break
			}
			c.put(x, y+4+i, styleNormal, fit(p.String(), 66))
		}
	}
	c.put(x, y+11, styleDim, "press any key")
}

func drawJournal(c canvas, m *Model) {
	jv := m.jv
	if jv == nil {
		return
	}
	lines, dropped, total, done, err := jv.snapshot()
	c.put(1, 1, styleTitle, "Journal")
	state := fmt.Sprintf("%d records", len(lines)+dropped)
	switch {
	case err != nil:
		state += "; reading stopped: " + err.Error()
	case !done:
		state = fmt.Sprintf("%s reading record %d of %d…", spinner[m.spin%len(spinner)], len(lines)+dropped, total)
	}
	if dropped > 0 {
		state += fmt.Sprintf(" (the oldest %d not shown: drawbridge journal lists them)", dropped)
	}
	st := styleDim
	if err != nil {
		st = styleErr
	}
	c.put(9, 1, st, "  "+state)
	if len(lines) > 0 {
		pos := fmt.Sprintf("%d/%d", jv.sel+1, len(lines))
		c.put(c.w-len(pos)-1, 1, styleDim, pos)
	}
	c.put(2, 2, styleDim, fmt.Sprintf("%-6s %-20s %-18s %s", "SEQ", "TIME", "TYPE", "MESSAGE"))
	rows := m.listRows()
	for i := jv.top; i < len(lines) && i < jv.top+rows; i++ {
		l := lines[i]
		st := styleNormal
		if i == jv.sel {
			st = styleSel
		}
		c.line(3+i-jv.top, st, fmt.Sprintf("  %-6d %-20s %-18s %s", l.Seq, l.Time.UTC().Format(timeFmt), l.Type, l.Message))
	}
}

func drawDiff(c canvas, m *Model) {
	j := m.diff
	if j == nil {
		return
	}
	const dayFmt = "01-02 15:04Z"
	c.put(1, 1, styleTitle, fmt.Sprintf("Diff of %s: %s (%s) → %s (%s)", j.new.Source, short(j.old.ID, 12), j.old.Time.UTC().Format(dayFmt), short(j.new.ID, 12), j.new.Time.UTC().Format(dayFmt)))
	if j.running {
		el := m.clock().Sub(j.started).Round(100 * time.Millisecond)
		c.put(1, 3, styleNormal, fmt.Sprintf("%s comparing… %d directories so far, %s (Esc stops)", spinner[m.spin%len(spinner)], j.dirs.Load(), el))
		return
	}
	if j.err != nil {
		c.put(1, 3, styleErr, "diff failed: "+j.err.Error())
		return
	}
	r := j.res
	sum := fmt.Sprintf("%d added, %d removed, %d changed; %d directories compared", r.Added, r.Removed, r.Changed, r.Dirs)
	if r.Over > 0 {
		sum += fmt.Sprintf("; the first %d listed", len(r.Changes))
	}
	c.put(2, 2, styleDim, sum)
	if len(r.Changes) == 0 {
		c.put(2, 4, styleNormal, "the two snapshots hold the same files")
		return
	}
	rows := m.listRows() - 1
	for i := j.top; i < len(r.Changes) && i < j.top+rows; i++ {
		ch := r.Changes[i]
		st := styleNormal
		if i == j.sel {
			st = styleSel
		}
		c.line(4+i-j.top, st, "  "+changeRow(&ch))
	}
}

// changeRow is one row of the diff.
func changeRow(ch *Change) string {
	name := ch.Path
	if ch.Kind == tree.Dir {
		name += "/"
	}
	size := func(n uint64) string {
		if ch.Kind != tree.File {
			return ch.Kind.String()
		}
		return units.Bytes(int64(n))
	}
	switch ch.Op {
	case '+':
		return fmt.Sprintf("+ %21s  %s", size(ch.NewSize), name)
	case '-':
		return fmt.Sprintf("- %21s  %s", size(ch.OldSize), name)
	}
	if ch.Kind == tree.File && ch.OldSize != ch.NewSize {
		return fmt.Sprintf("~ %9s → %9s  %s", size(ch.OldSize), size(ch.NewSize), name)
	}
	return fmt.Sprintf("~ %21s  %s", size(ch.NewSize), name)
}

func drawSettings(c canvas, m *Model) {
	c.put(1, 1, styleTitle, "Settings (view only)")
	rows := m.listRows()
	for i := m.setTop; i < len(m.settings) && i < m.setTop+rows; i++ {
		c.put(2, 3+i-m.setTop, styleNormal, m.settings[i])
	}
}
