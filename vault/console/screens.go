package console

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"drawbridge/vault/journal"
	"drawbridge/vault/store"
)

// Journal record types of the console's actions.
const (
	RecordVerify    = "console-verify"
	RecordDiff      = "console-diff"
	RecordBackupNow = "console-backup-now"
	RecordPowerOff  = "console-poweroff"
	RecordReboot    = "console-reboot"
	RecordSettings  = "console-settings"
)

// maxJournalLines caps the records the journal viewer keeps in memory; the
// oldest beyond it are counted, not kept.
const maxJournalLines = 200_000

// journalLine is one record as the viewer shows it.
type journalLine struct {
	Seq     uint64
	Time    time.Time
	Type    string
	Message string
}

// journalView is the journal viewer: the background scan appends to lines
// under mu while the Model and the view read them.
type journalView struct {
	mu      sync.Mutex
	lines   []journalLine
	dropped int    // oldest records not kept
	total   uint64 // the last record when the scan started
	done    bool
	err     error

	// The Model's own.
	sel, top int
	follow   bool // keep the newest record selected while loading
	cancel   context.CancelFunc
}

func (jv *journalView) add(r journal.Record) {
	jv.mu.Lock()
	defer jv.mu.Unlock()
	jv.lines = append(jv.lines, journalLine{Seq: r.Seq, Time: r.Time, Type: r.Type, Message: r.Message})
	if len(jv.lines) >= 2*maxJournalLines {
		n := len(jv.lines) - maxJournalLines
		jv.dropped += n
		jv.lines = append(jv.lines[:0:0], jv.lines[n:]...)
	}
}

// snapshot returns the lines loaded so far and the scan's state.
func (jv *journalView) snapshot() (lines []journalLine, dropped int, total uint64, done bool, err error) {
	jv.mu.Lock()
	defer jv.mu.Unlock()
	return jv.lines, jv.dropped, jv.total, jv.done, jv.err
}

type journalDoneMsg struct {
	jv  *journalView
	err error
}

// openJournal starts reading the whole journal in the background; the
// viewer shows records as they come.
func (m *Model) openJournal() []Cmd {
	if m.jv != nil && m.jv.cancel != nil {
		m.jv.cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	jv := &journalView{follow: true, cancel: cancel}
	m.jv = jv
	m.screen = ScreenJournal
	m.msg = ""
	b := m.b
	return []Cmd{func() Msg {
		defer cancel()
		err := b.ScanJournal(ctx, func(n uint64) {
			jv.mu.Lock()
			jv.total = n
			jv.mu.Unlock()
		}, func(r journal.Record) error {
			jv.add(r)
			return nil
		})
		return journalDoneMsg{jv: jv, err: err}
	}}
}

// clampJournal keeps the selection inside the records and on the screen.
func (m *Model) clampJournal() {
	jv := m.jv
	lines, _, _, _, _ := jv.snapshot()
	n, rows := len(lines), m.listRows()
	if jv.follow {
		jv.sel = n - 1
	}
	jv.sel = max(0, min(jv.sel, n-1))
	if jv.sel < jv.top {
		jv.top = jv.sel
	}
	if jv.sel >= jv.top+rows {
		jv.top = jv.sel - rows + 1
	}
	jv.top = max(0, min(jv.top, n-rows))
}

func (m *Model) keyJournal(k Key) []Cmd {
	jv := m.jv
	m.clampJournal() // the oldest records may have been dropped since
	lines, _, _, _, _ := jv.snapshot()
	jv.sel = max(0, min(jv.sel, len(lines)-1))
	switch {
	case back(k):
		jv.cancel()
		m.screen = ScreenStatus
		m.jv = nil
		return nil
	case k.Name == "Enter":
		if len(lines) > 0 {
			l := lines[jv.sel]
			m.showText(fmt.Sprintf("Journal record %d", l.Seq), append([]string{
				fmt.Sprintf("%s  %s", l.Time.UTC().Format(timeFmt), l.Type), ""}, wrap(l.Message, 74)...))
		}
		return nil
	case isRune(k, 'r'):
		return m.openJournal()
	}
	jv.sel = move(k, jv.sel, len(lines), m.listRows())
	jv.follow = jv.sel == len(lines)-1
	m.clampJournal()
	return nil
}

// wrap cuts s into lines of at most n runes, at spaces where it can.
func wrap(s string, n int) []string {
	var out []string
	r := []rune(s)
	for len(r) > n {
		cut := n
		for i := n; i > n/2; i-- {
			if r[i] == ' ' {
				cut = i
				break
			}
		}
		out = append(out, string(r[:cut]))
		r = r[cut:]
		for len(r) > 0 && r[0] == ' ' {
			r = r[1:]
		}
	}
	return append(out, string(r))
}

// showText opens a dialog of read-only lines.
func (m *Model) showText(title string, lines []string) {
	m.textTitle, m.text = title, lines
	m.dialog = DialogText
}

// verifyJob is a verify running or done.
type verifyJob struct {
	deep        bool
	done, total atomic.Int64
	started     time.Time
	ended       time.Time
	cancel      context.CancelFunc
	running     bool
	rep         *store.VerifyReport
	err         error
}

type verifyMsg struct {
	job *verifyJob
	rep *store.VerifyReport
	err error
}

// startVerify runs verify in the background; deep needs the Reader.
func (m *Model) startVerify(deep bool) []Cmd {
	if m.b.ReadOnly() {
		m.fail("%v: verify needs the store's index", ErrReadOnly)
		return nil
	}
	if deep && m.reader == nil {
		return m.askPassphrase(actDeepVerify)
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &verifyJob{deep: deep, started: m.clock(), cancel: cancel, running: true}
	m.verify = j
	m.dialog = DialogVerify
	m.msg = ""
	b := m.b
	var r Reader
	if deep {
		r = m.reader
	}
	return []Cmd{func() Msg {
		defer cancel()
		rep, err := b.Verify(ctx, r, func(done, total int64) { j.done.Store(done); j.total.Store(total) })
		return verifyMsg{job: j, rep: rep, err: err}
	}}
}

func (m *Model) verifyDone(v verifyMsg) []Cmd {
	j := v.job
	if j != m.verify {
		return nil
	}
	j.running, j.ended, j.rep, j.err = false, m.clock(), v.rep, v.err
	kind := "verify"
	if j.deep {
		kind = "deep verify"
	}
	data := map[string]any{"deep": j.deep}
	var msg string
	switch {
	case v.err != nil:
		data["error"] = v.err.Error()
		msg = fmt.Sprintf("console %s did not finish: %v", kind, v.err)
	default:
		r := v.rep
		data["packs"], data["blobs"], data["journal_records"], data["snapshots"], data["problems"] = r.Packs, r.Blobs, r.Records, r.Snapshots, len(r.Problems)
		if j.deep {
			data["deep_blobs"], data["deep_files"] = r.DeepBlobs, r.DeepFiles
		}
		msg = fmt.Sprintf("console %s: %d packs, %d blobs, %d journal records, %d snapshots: %d problems", kind, r.Packs, r.Blobs, r.Records, r.Snapshots, len(r.Problems))
	}
	return []Cmd{m.journal(RecordVerify, msg, data)}
}

// diffJob is a diff being computed or shown.
type diffJob struct {
	old, new store.Snapshot
	dirs     atomic.Int64
	started  time.Time
	running  bool
	cancel   context.CancelFunc
	res      *DiffResult
	err      error
	sel, top int
}

type diffMsg struct {
	job *diffJob
	res *DiffResult
	err error
}

// startDiff compares the marked (or the next older) snapshot with the
// selected one.
func (m *Model) startDiff() []Cmd {
	if len(m.snaps) == 0 {
		return nil
	}
	sel := m.snaps[m.snapSel]
	var other store.Snapshot
	switch {
	case m.mark != nil && m.mark.ID != sel.ID:
		other = *m.mark
	case m.snapSel+1 < len(m.snaps):
		other = m.snaps[m.snapSel+1] // newest first: the next one is older
	default:
		m.fail("no older snapshot of %s to compare with: mark one with m", sel.Source)
		return nil
	}
	old, new := other, sel
	if old.Time.After(new.Time) {
		old, new = new, old
	}
	if m.b.ReadOnly() {
		m.fail("%v: stop the daemon to compare snapshots", ErrReadOnly)
		return nil
	}
	m.pendingDiff = &diffJob{old: old, new: new}
	if m.reader == nil {
		return m.askPassphrase(actDiff)
	}
	return m.runDiff()
}

func (m *Model) runDiff() []Cmd {
	j := m.pendingDiff
	m.pendingDiff = nil
	if j == nil {
		return nil
	}
	a, err := parseRoot(j.old.Root)
	if err == nil {
		var b [32]byte
		b, err = parseRoot(j.new.Root)
		if err == nil {
			ctx, cancel := context.WithCancel(context.Background())
			j.cancel, j.running, j.started = cancel, true, m.clock()
			m.diff = j
			m.screen = ScreenDiff
			m.msg = ""
			r := m.reader
			return []Cmd{func() Msg {
				defer cancel()
				res, err := Diff(ctx, r, a, b, &j.dirs)
				return diffMsg{job: j, res: res, err: err}
			}}
		}
	}
	m.fail("diff: %v", err)
	return nil
}

func (m *Model) diffDone(v diffMsg) []Cmd {
	j := v.job
	if j != m.diff {
		return nil
	}
	j.running, j.res, j.err = false, v.res, v.err
	data := map[string]any{"old": j.old.ID, "new": j.new.ID, "source": j.new.Source}
	var msg string
	if v.err != nil {
		if errors.Is(v.err, context.Canceled) {
			return nil
		}
		data["error"] = v.err.Error()
		msg = fmt.Sprintf("console diff of %s and %s failed: %v", short(j.old.ID, 12), short(j.new.ID, 12), v.err)
	} else {
		r := v.res
		data["added"], data["removed"], data["changed"] = r.Added, r.Removed, r.Changed
		msg = fmt.Sprintf("console compared snapshots %s and %s of %s: %d added, %d removed, %d changed", short(j.old.ID, 12), short(j.new.ID, 12), j.new.Source, r.Added, r.Removed, r.Changed)
	}
	return []Cmd{m.journal(RecordDiff, msg, data)}
}

func (m *Model) keyDiff(k Key) []Cmd {
	j := m.diff
	if back(k) {
		if j.running {
			j.cancel()
		}
		m.diff = nil
		m.screen = ScreenSnapshots
		return nil
	}
	if j.running || j.res == nil {
		return nil
	}
	n, rows := len(j.res.Changes), m.listRows()-1
	j.sel = move(k, j.sel, n, rows)
	if j.sel < j.top {
		j.top = j.sel
	}
	if j.sel >= j.top+rows {
		j.top = j.sel - rows + 1
	}
	j.top = max(0, min(j.top, n-rows))
	return nil
}

// confirmDialog asks before an action: each key in keys runs its action;
// Esc and n cancel.
type confirmDialog struct {
	title string
	lines []string
	keys  map[rune]func() []Cmd
}

func (m *Model) ask(title string, lines []string, keys map[rune]func() []Cmd) {
	m.confirm = &confirmDialog{title: title, lines: lines, keys: keys}
	m.dialog = DialogConfirm
	m.msg = ""
}

func (m *Model) keyConfirm(k Key) []Cmd {
	c := m.confirm
	if k.Name == "Esc" || isRune(k, 'n') {
		m.dialog, m.confirm = DialogNone, nil
		m.say("cancelled")
		return nil
	}
	if k.Name != "Rune" {
		return nil
	}
	if f, ok := c.keys[k.Rune]; ok {
		m.dialog, m.confirm = DialogNone, nil
		return f()
	}
	return nil
}

type backupMsg struct {
	length time.Duration
	err    error
}

// askBackupNow confirms, then journals and asks the daemon for a window.
func (m *Model) askBackupNow() {
	m.ask("Back up now", []string{
		"Open a backup window now: the network comes up,",
		"every source is pulled, then the network goes down.",
		"",
		"y  open the window      n or Esc  cancel",
	}, map[rune]func() []Cmd{'y': func() []Cmd {
		b := m.b
		m.say("asking the daemon for a window…")
		return []Cmd{func() Msg {
			n, err := b.BackUpNow(context.Background())
			return backupMsg{length: n, err: err}
		}}
	}})
}

type powerMsg struct {
	reboot bool
	err    error
}

// askPower offers power off and reboot, each behind a second question.
func (m *Model) askPower() {
	act := func(reboot bool) func() []Cmd {
		what := "power off"
		if reboot {
			what = "reboot"
		}
		return func() []Cmd {
			m.ask("Confirm", []string{
				fmt.Sprintf("Really %s the vault now?", what),
				"A window that is open closes first, link down.",
				"",
				fmt.Sprintf("y  %s      n or Esc  cancel", what),
			}, map[rune]func() []Cmd{'y': func() []Cmd {
				b := m.b
				m.say("%s…", what)
				return []Cmd{func() Msg { return powerMsg{reboot: reboot, err: b.Power(reboot)} }}
			}})
			return nil
		}
	}
	m.ask("Power", []string{
		"o  power off",
		"r  reboot",
		"",
		"Esc  cancel",
	}, map[rune]func() []Cmd{'o': act(false), 'r': act(true)})
}

type settingsMsg struct {
	lines []string
	err   error
}

type adminMsg struct{ set bool }

// openSettings asks for the admin passphrase, once it is known that one
// is set; the settings show once it is right.
func (m *Model) openSettings() []Cmd {
	b := m.b
	return []Cmd{func() Msg { return adminMsg{b.HasAdmin()} }}
}

func (m *Model) adminKnown(v adminMsg) {
	if !v.set {
		m.fail("%v", ErrNoAdmin)
		return
	}
	if m.dialog != DialogNone || m.screen != ScreenStatus {
		return // the person went elsewhere meanwhile
	}
	m.passAdmin = true
	m.dialog = DialogPassphrase
	m.msg = ""
}

func (m *Model) settingsDone(v settingsMsg) []Cmd {
	m.passBusy = false
	if v.err != nil {
		if errors.Is(v.err, ErrAdminPassphrase) {
			m.fail("wrong admin passphrase: refused (each refusal makes the next check wait longer)")
			return nil
		}
		m.dialog, m.passAdmin = DialogNone, false
		m.fail("settings: %v", v.err)
		return nil
	}
	m.dialog, m.passAdmin = DialogNone, false
	m.settings, m.setTop = v.lines, 0
	m.screen = ScreenSettings
	m.msg = ""
	return []Cmd{m.journal(RecordSettings, "console: the settings were opened with the admin passphrase", nil)}
}

func (m *Model) keySettings(k Key) []Cmd {
	if back(k) {
		m.settings = nil
		m.screen = ScreenStatus
		return nil
	}
	rows := m.listRows()
	m.setTop = max(0, min(move(k, m.setTop, len(m.settings), rows), len(m.settings)-rows))
	return nil
}
