package console

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"drawbridge/vault/restore"
	"drawbridge/vault/store"
	"drawbridge/vault/tree"

	"drawbridge/vault/units"
)

// maxPassphrase caps the passphrase typed at the console, in bytes.
const maxPassphrase = 1024

// Key is one key press, independent of the terminal library.
type Key struct {
	Name string // "Rune", "Enter", "Esc", "Up", "Down", "Left", "Right", "PgUp", "PgDn", "Home", "End", "Backspace", "Tab", "Ctrl-C"
	Rune rune   // for "Rune"
}

// Msg is anything the Model reacts to: a Key, a Tick, a Resize, or the
// result of background work.
type Msg any

// Tick comes several times a second: it turns the spinner and runs the idle
// timeout.
type Tick struct{}

// Resize tells the Model the terminal's size.
type Resize struct{ Width, Height int }

// Cmd is background work; its result is fed back to Update.
type Cmd func() Msg

type statusMsg struct{ st Status }

type unlockMsg struct {
	r    Reader
	err  error
	then action
}

type treeMsg struct {
	seq  int
	name string
	id   tree.ID
	t    *tree.Tree
	err  error
}

type restoreMsg struct {
	seq int
	rep *restore.Report
	err error
}

type journalMsg struct{ err error }

// Screen names what the main area shows.
type Screen int

const (
	ScreenStatus Screen = iota
	ScreenSources
	ScreenSnapshots
	ScreenBrowse
	ScreenJournal
	ScreenDiff
	ScreenSettings
)

// Dialog is what holds the keyboard over the screen.
type Dialog int

const (
	DialogNone Dialog = iota
	DialogPassphrase
	DialogTarget
	DialogHelp
	DialogRestore // progress of a restore, then its result
	DialogVerify  // progress of a verify, then its result
	DialogConfirm // a question before an action
	DialogText    // read-only lines
)

// action is what waits for the passphrase.
type action int

const (
	actNone action = iota
	actOpenSnapshot
	actDeepVerify
	actDiff
)

// level is one directory of the browser.
type level struct {
	name    string // "/" for the snapshot root
	id      tree.ID
	entries []tree.Entry
	sel     int
	top     int
}

// restoreJob is a restore running or done.
type restoreJob struct {
	what    string // snapshot path or "/" for the whole snapshot
	target  string
	total   atomic.Int64 // 0 until known
	done    *atomic.Int64
	started time.Time
	ended   time.Time
	cancel  context.CancelFunc
	result  string
	failed  bool
	running bool
}

// Options configure a Model.
type Options struct {
	Clock func() time.Time // nil means time.Now
	// PassphraseFile, when set, gives the restore passphrase instead of the
	// dialog (drawbridge console --passphrase-file).
	PassphraseFile func() ([]byte, error)
	// Fixed is a console on the appliance's own terminals: there is
	// nothing to return to, so q and Ctrl-C never end it; they go back
	// towards the status screen.
	Fixed bool
}

// Model is the console's state. Update is its only mutator; it never
// blocks: slow work is returned as Cmds.
type Model struct {
	b     Backend
	o     Options
	clock func() time.Time

	Width, Height int
	Quit          bool

	screen Screen
	dialog Dialog
	ac     *adminChange // the admin passphrase's change, open over the settings

	status     *Status
	statusBusy bool
	statusAt   time.Time
	latest     map[string]int // source → index in status.Snapshots of its newest
	counts     map[string]int // source → snapshots

	sources []string
	srcSel  int
	snaps   []store.Snapshot // of the selected source, newest first
	snapSel int

	reader  Reader
	lastKey time.Time

	pass     []byte
	passBusy bool
	then     action

	input string // target directory being typed
	whole bool   // the restore is of the directory shown, not the selected entry

	snap    *store.Snapshot
	root    tree.ID
	stack   []level
	loading string // name of the directory being read, "" when idle
	loadAt  time.Time
	loadSeq int
	cancel  context.CancelFunc

	job *restoreJob

	jv          *journalView
	verify      *verifyJob
	mark        *store.Snapshot // the snapshot a diff compares with
	pendingDiff *diffJob        // waits for the passphrase
	diff        *diffJob
	confirm     *confirmDialog
	passAdmin   bool // the passphrase dialog asks for the admin passphrase
	settings    []string
	setTop      int
	textTitle   string
	text        []string

	drv driveScreens // restore, export, format, import with USB drives

	spin int
	msg  string
	bad  bool // msg is an error
}

// New returns a Model on the status screen. Init's Cmds load the status.
func New(b Backend, o Options) *Model {
	m := &Model{b: b, o: o, clock: o.Clock, Width: 80, Height: 24}
	if m.clock == nil {
		m.clock = time.Now
	}
	m.lastKey = m.clock()
	return m
}

// Init returns the Cmds to run at start.
func (m *Model) Init() []Cmd { return []Cmd{m.loadStatus()} }

// StatusEvery is how often the status is read again: a window the daemon
// opens shows within it.
const StatusEvery = 5 * time.Second

func (m *Model) loadStatus() Cmd {
	m.statusBusy = true
	m.statusAt = m.clock()
	b := m.b
	return func() Msg { return statusMsg{b.Status(context.Background())} }
}

func (m *Model) say(format string, args ...any) {
	m.msg, m.bad = fmt.Sprintf(format, args...), false
}

func (m *Model) fail(format string, args ...any) {
	m.msg, m.bad = fmt.Sprintf(format, args...), true
}

// journal runs a journal append in the background; ErrReadOnly is reported
// on the screen.
func (m *Model) journal(typ, msg string, data any) Cmd {
	b := m.b
	return func() Msg { return journalMsg{b.Journal(typ, msg, data)} }
}

// Update handles one Msg and returns the background work it starts.
func (m *Model) Update(msg Msg) (cmds []Cmd) {
	switch v := msg.(type) {
	case Key:
		m.lastKey = m.clock()
		return m.key(v)
	case Tick:
		m.spin++
		if m.screen == ScreenJournal && m.jv != nil {
			m.clampJournal() // records keep coming in
		}
		if !m.statusBusy && m.clock().Sub(m.statusAt) >= StatusEvery {
			cmds = append(cmds, m.loadStatus())
		}
		cmds = append(cmds, m.drv.tick(m)...)
		if m.reader != nil && !m.reading() && m.clock().Sub(m.lastKey) >= IdleTimeout {
			m.forget()
			m.say("the restore passphrase was forgotten after %s without a key press", IdleTimeout)
		}
	case Resize:
		m.Width, m.Height = v.Width, v.Height
		m.clampBrowse()
	case statusMsg:
		m.statusBusy = false
		st := v.st
		m.status = &st
		m.setSources()
	case unlockMsg:
		m.passBusy = false
		if v.err != nil {
			if errors.Is(v.err, ErrPassphrase) {
				m.fail("wrong restore passphrase: refused, nothing was read")
			} else {
				m.fail("unlock: %v", v.err)
			}
			return nil
		}
		m.dialog = DialogNone
		m.reader = v.r
		m.say("unlocked; the passphrase is forgotten after %s without a key press", IdleTimeout)
		switch v.then {
		case actOpenSnapshot:
			return m.openSnapshot()
		case actDeepVerify:
			return m.startVerify(true)
		case actDiff:
			return m.runDiff()
		case actDrive:
			return m.drv.unlocked(m)
		}
	case treeMsg:
		if v.seq != m.loadSeq || m.loading == "" {
			return nil // a directory the user has left
		}
		m.loading = ""
		if v.err != nil {
			m.fail("read directory %s: %v", v.name, v.err)
			if len(m.stack) == 0 {
				m.screen = ScreenSnapshots
			}
			return nil
		}
		m.stack = append(m.stack, level{name: v.name, id: v.id, entries: v.t.Entries})
		m.msg = ""
	case restoreMsg:
		j := m.job
		if j == nil {
			return nil
		}
		j.running, j.ended = false, m.clock()
		if v.err != nil {
			j.failed = true
			j.result = fmt.Sprintf("restore failed: %v", v.err)
			return []Cmd{m.journal("console-restore", fmt.Sprintf("console restore of %s:%s to %s failed: %v", m.snap.ID[:12], j.what, j.target, v.err),
				map[string]any{"snapshot": m.snap.ID, "path": j.what, "target": j.target, "error": v.err.Error()})}
		}
		r := v.rep
		j.failed = len(r.Damaged) > 0
		j.result = fmt.Sprintf("restored to %s: %s, %s, %s", j.target, units.Count(r.Files, "file"), units.Count(r.Dirs, "dir"), units.Bytes(r.Bytes))
		if j.failed {
			j.result += fmt.Sprintf("; %d entries damaged, not restored intact", len(r.Damaged))
		}
		return []Cmd{m.journal("console-restore", fmt.Sprintf("console restored %s:%s to %s", m.snap.ID[:12], j.what, j.target),
			map[string]any{"snapshot": m.snap.ID, "path": j.what, "target": j.target, "files": r.Files, "dirs": r.Dirs, "bytes": r.Bytes, "damaged": len(r.Damaged)})}
	case journalDoneMsg:
		v.jv.mu.Lock()
		v.jv.done, v.jv.err = true, v.err
		v.jv.mu.Unlock()
		if m.jv == v.jv && m.screen == ScreenJournal {
			m.clampJournal()
		}
	case verifyMsg:
		return m.verifyDone(v)
	case diffMsg:
		return m.diffDone(v)
	case backupMsg:
		if v.err != nil {
			m.fail("back up now: %v", v.err)
		} else {
			m.say("the daemon opens a backup window of %s now", v.length)
			if !m.statusBusy {
				return []Cmd{m.loadStatus()}
			}
		}
	case powerMsg:
		what := "power off"
		if v.reboot {
			what = "reboot"
		}
		if v.err != nil {
			m.fail("%s: %v", what, v.err)
		} else {
			m.say("%s: the vault is shutting down", what)
		}
	case settingsMsg:
		return m.settingsDone(v)
	case adminSetMsg:
		return m.adminSet(v)
	case driveListMsg, driveDoneMsg, configsMsg, planMsg, applyMsg:
		return m.drv.update(m, msg)
	case adminMsg:
		m.adminKnown(v)
	case journalMsg:
		if v.err != nil {
			m.fail("not journaled: %v", v.err)
		} else if !m.statusBusy {
			return []Cmd{m.loadStatus()} // show the new record
		}
	}
	return cmds
}

// reading says whether background work holds the Reader: a restore, a
// deep verify or a diff. The idle timeout waits for it.
func (m *Model) reading() bool {
	return (m.job != nil && m.job.running) || (m.verify != nil && m.verify.running && m.verify.deep) ||
		(m.diff != nil && m.diff.running) || m.drv.reading()
}

// forget drops the Reader and everything read with it.
func (m *Model) forget() {
	if m.reader != nil {
		m.reader.Close()
		m.reader = nil
	}
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
	m.stack, m.loading = nil, ""
	if m.screen == ScreenBrowse {
		m.screen = ScreenSnapshots
	}
	if m.diff != nil {
		if m.diff.running {
			m.diff.cancel()
		}
		m.diff = nil
		if m.screen == ScreenDiff {
			m.screen = ScreenSnapshots
		}
	}
	m.pendingDiff = nil
	if m.dialog == DialogTarget {
		m.dialog = DialogNone
	}
}

func (m *Model) setSources() {
	seen := map[string]bool{}
	var names []string
	m.latest, m.counts = map[string]int{}, map[string]int{}
	if m.status != nil {
		for i, sn := range m.status.Snapshots {
			m.latest[sn.Source] = i
			m.counts[sn.Source]++
			if !seen[sn.Source] {
				seen[sn.Source] = true
				names = append(names, sn.Source)
			}
		}
		if d := m.status.Daemon; d != nil {
			for _, s := range d.Sources {
				if !seen[s.Name] {
					seen[s.Name] = true
					names = append(names, s.Name)
				}
			}
		}
	}
	sort.Strings(names)
	m.sources = names
	m.srcSel = min(m.srcSel, max(len(names)-1, 0))
}

// snapsOf lists a source's snapshots, newest first.
func (m *Model) snapsOf(src string) []store.Snapshot {
	var out []store.Snapshot
	if m.status == nil {
		return nil
	}
	for _, sn := range m.status.Snapshots {
		if sn.Source == src {
			out = append(out, sn)
		}
	}
	slices.Reverse(out)
	return out
}

func (m *Model) key(k Key) []Cmd {
	if k.Name == "Ctrl-C" {
		if m.o.Fixed {
			m.home()
			return nil
		}
		m.quit()
		return nil
	}
	if m.drv.open() {
		return m.drv.key(m, k)
	}
	if m.ac != nil {
		return m.keyAdminChange(k)
	}
	switch m.dialog {
	case DialogHelp, DialogText:
		m.dialog = DialogNone
		return nil
	case DialogConfirm:
		return m.keyConfirm(k)
	case DialogVerify:
		if m.verify != nil && m.verify.running {
			if k.Name == "Esc" {
				m.verify.cancel()
			}
			return nil
		}
		m.dialog = DialogNone
		return nil
	case DialogPassphrase:
		return m.keyPassphrase(k)
	case DialogTarget:
		return m.keyTarget(k)
	case DialogRestore:
		if m.job != nil && m.job.running {
			if k.Name == "Esc" {
				m.job.cancel()
			}
			return nil
		}
		m.dialog = DialogNone
		if m.job != nil {
			m.msg, m.bad = m.job.result, m.job.failed
		}
		return nil
	}
	if k.Name == "Rune" && k.Rune == '?' {
		m.dialog = DialogHelp
		return nil
	}
	switch m.screen {
	case ScreenStatus:
		return m.keyStatus(k)
	case ScreenSources:
		return m.keySources(k)
	case ScreenSnapshots:
		return m.keySnapshots(k)
	case ScreenBrowse:
		return m.keyBrowse(k)
	case ScreenJournal:
		return m.keyJournal(k)
	case ScreenDiff:
		return m.keyDiff(k)
	case ScreenSettings:
		if isRune(k, 'i') {
			return m.drv.openImport(m)
		}
		if isRune(k, 'a') {
			return m.drv.openList(m, forKeys)
		}
		if isRune(k, 'p') {
			m.openAdminChange()
			return nil
		}
		return m.keySettings(k)
	}
	return nil
}

// home forgets what was unlocked and goes back to the status screen: Ctrl-C
// on the appliance's console.
func (m *Model) home() {
	if m.verify != nil && m.verify.running {
		m.verify.cancel()
	}
	if m.job != nil && m.job.running {
		m.job.cancel()
	}
	m.drv.close(m)
	if m.ac != nil {
		m.ac.clear()
		m.ac = nil
	}
	m.forget()
	if m.jv != nil {
		m.jv.cancel()
		m.jv = nil
	}
	clear(m.pass)
	m.pass = m.pass[:0]
	m.dialog, m.confirm, m.passAdmin, m.settings = DialogNone, nil, false, nil
	m.screen = ScreenStatus
	m.say("back to the status screen")
}

func (m *Model) quit() {
	m.drv.close(m)
	m.forget()
	if m.job != nil && m.job.running {
		m.job.cancel()
	}
	m.Quit = true
}

func isRune(k Key, r rune) bool { return k.Name == "Rune" && k.Rune == r }

func back(k Key) bool {
	return k.Name == "Esc" || k.Name == "Left" || k.Name == "Backspace" || isRune(k, 'q') || isRune(k, 'h')
}

// move applies a cursor key to sel within n items, page rows at a time.
func move(k Key, sel, n, page int) int {
	switch {
	case k.Name == "Up" || isRune(k, 'k'):
		sel--
	case k.Name == "Down" || isRune(k, 'j'):
		sel++
	case k.Name == "PgUp":
		sel -= max(page, 1)
	case k.Name == "PgDn" || isRune(k, ' '):
		sel += max(page, 1)
	case k.Name == "Home" || isRune(k, 'g'):
		sel = 0
	case k.Name == "End" || isRune(k, 'G'):
		sel = n - 1
	}
	return max(0, min(sel, n-1))
}

func (m *Model) keyStatus(k Key) []Cmd {
	switch {
	case isRune(k, 'q'):
		if m.o.Fixed {
			m.say("this console stays on: there is nothing to quit to (p for power off)")
			return nil
		}
		m.quit()
	case k.Name == "Enter" || isRune(k, 'b') || k.Name == "Right":
		m.screen = ScreenSources
		m.msg = ""
	case isRune(k, 'r'):
		if !m.statusBusy {
			return []Cmd{m.loadStatus()}
		}
	case isRune(k, 'j'):
		return m.openJournal()
	case isRune(k, 'v'):
		return m.startVerify(false)
	case isRune(k, 'V'):
		return m.startVerify(true)
	case isRune(k, 'n'):
		m.askBackupNow()
	case isRune(k, 'p'):
		m.askPower()
	case isRune(k, 's'):
		return m.openSettings()
	case isRune(k, 'u'):
		return m.drv.openList(m, forLook)
	}
	return nil
}

func (m *Model) keySources(k Key) []Cmd {
	switch {
	case back(k):
		m.screen = ScreenStatus
	case k.Name == "Enter" || k.Name == "Right" || isRune(k, 'l'):
		if len(m.sources) == 0 {
			return nil
		}
		m.snaps = m.snapsOf(m.sources[m.srcSel])
		m.snapSel = 0
		if len(m.snaps) == 0 {
			m.fail("source %s has no snapshot yet", m.sources[m.srcSel])
			return nil
		}
		m.screen = ScreenSnapshots
		m.msg = ""
	default:
		m.srcSel = move(k, m.srcSel, len(m.sources), m.listRows())
	}
	return nil
}

func (m *Model) keySnapshots(k Key) []Cmd {
	switch {
	case back(k):
		m.screen = ScreenSources
	case isRune(k, 'm'):
		if len(m.snaps) == 0 {
			return nil
		}
		sn := m.snaps[m.snapSel]
		if m.mark != nil && m.mark.ID == sn.ID {
			m.mark = nil
			m.say("mark removed")
		} else {
			m.mark = &sn
			m.say("marked %s: d on another snapshot compares the two", short(sn.ID, 12))
		}
	case isRune(k, 'd'):
		return m.startDiff()
	case isRune(k, 'e'):
		if len(m.snaps) > 0 {
			return m.drv.openExport(m, m.snaps[m.snapSel])
		}
	case k.Name == "Enter" || k.Name == "Right" || isRune(k, 'l'):
		if len(m.snaps) == 0 {
			return nil
		}
		sn := m.snaps[m.snapSel]
		m.snap = &sn
		if m.b.ReadOnly() {
			m.fail("%v: stop the daemon to browse and restore", ErrReadOnly)
			return nil
		}
		if m.reader == nil {
			return m.askPassphrase(actOpenSnapshot)
		}
		return m.openSnapshot()
	default:
		m.snapSel = move(k, m.snapSel, len(m.snaps), m.listRows())
	}
	return nil
}

func (m *Model) askPassphrase(then action) []Cmd {
	m.then = then
	if m.o.PassphraseFile != nil {
		pf := m.o.PassphraseFile
		m.passBusy = true
		b := m.b
		return []Cmd{func() Msg {
			p, err := pf()
			if err != nil {
				return unlockMsg{err: err, then: then}
			}
			r, err := b.Unlock(context.Background(), p)
			clear(p)
			return unlockMsg{r: r, err: err, then: then}
		}}
	}
	m.dialog = DialogPassphrase
	m.msg = ""
	return nil
}

func (m *Model) keyPassphrase(k Key) []Cmd {
	if m.passBusy {
		return nil // the passphrase is being checked
	}
	switch k.Name {
	case "Esc":
		clear(m.pass)
		m.pass = m.pass[:0]
		m.dialog = DialogNone
		m.pendingDiff = nil
		if m.passAdmin {
			m.passAdmin = false
			m.say("cancelled: the settings stay shut")
			return nil
		}
		m.say("cancelled: nothing was unlocked")
	case "Backspace", "Rune":
		m.pass = editSecret(m.pass, k)
	case "Enter":
		if len(m.pass) == 0 {
			return nil
		}
		p := m.pass
		m.pass = nil
		m.passBusy = true
		m.msg = ""
		b, then := m.b, m.then
		if m.passAdmin {
			return []Cmd{func() Msg {
				lines, err := b.Settings(context.Background(), p)
				clear(p)
				return settingsMsg{lines, err}
			}}
		}
		return []Cmd{func() Msg {
			r, err := b.Unlock(context.Background(), p)
			clear(p)
			return unlockMsg{r: r, err: err, then: then}
		}}
	}
	return nil
}

// openSnapshot starts reading the selected snapshot's root directory.
func (m *Model) openSnapshot() []Cmd {
	root, err := parseRoot(m.snap.Root)
	if err != nil {
		m.fail("snapshot %s: %v", m.snap.ID[:12], err)
		return nil
	}
	m.root = root
	m.stack = nil
	m.screen = ScreenBrowse
	return []Cmd{m.loadDir("/", root), m.journal("console-browse", fmt.Sprintf("console opened snapshot %s of %s", m.snap.ID[:12], m.snap.Source),
		map[string]any{"snapshot": m.snap.ID, "source": m.snap.Source})}
}

func (m *Model) loadDir(name string, id tree.ID) Cmd {
	if m.cancel != nil {
		m.cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.loadSeq++
	seq, r := m.loadSeq, m.reader
	m.loading, m.loadAt = name, m.clock()
	return func() Msg {
		t, err := r.Tree(ctx, id)
		return treeMsg{seq: seq, name: name, id: id, t: t, err: err}
	}
}

// listRows is how many rows of a list fit on the screen.
func (m *Model) listRows() int { return max(m.Height-6, 1) }

func (m *Model) cur() *level {
	if len(m.stack) == 0 {
		return nil
	}
	return &m.stack[len(m.stack)-1]
}

// clampBrowse keeps the selection on the screen.
func (m *Model) clampBrowse() {
	l := m.cur()
	if l == nil {
		return
	}
	rows := m.listRows()
	if l.sel < l.top {
		l.top = l.sel
	}
	if l.sel >= l.top+rows {
		l.top = l.sel - rows + 1
	}
	l.top = max(0, min(l.top, len(l.entries)-rows))
}

// browsePath is the slash path of the current directory in the snapshot.
func (m *Model) browsePath() string {
	p := "/"
	for _, l := range m.stack[min(1, len(m.stack)):] {
		p = path.Join(p, l.name)
	}
	return p
}

func (m *Model) keyBrowse(k Key) []Cmd {
	if m.loading != "" {
		if back(k) {
			m.cancel()
			m.loading = ""
			if len(m.stack) == 0 {
				m.screen = ScreenSnapshots
			}
		}
		return nil
	}
	l := m.cur()
	if l == nil {
		if back(k) {
			m.screen = ScreenSnapshots
		}
		return nil
	}
	switch {
	case back(k):
		m.stack = m.stack[:len(m.stack)-1]
		if len(m.stack) == 0 {
			m.screen = ScreenSnapshots
		}
	case k.Name == "Enter" || k.Name == "Right" || isRune(k, 'l'):
		if len(l.entries) == 0 {
			return nil
		}
		e := &l.entries[l.sel]
		if e.Kind != tree.Dir {
			m.say("%s: %s, %s; press r to restore it", e.Name, e.Kind, units.Bytes(int64(e.Size)))
			return nil
		}
		return []Cmd{m.loadDir(e.Name, e.Subtree)}
	case isRune(k, 'r'), isRune(k, 'R'):
		m.whole = k.Rune == 'R'
		return m.drv.openRestore(m)
	default:
		l.sel = move(k, l.sel, len(l.entries), m.listRows())
		m.clampBrowse()
	}
	return nil
}

// restoreWhat is the snapshot path the restore dialog acts on, the bytes
// it holds when known, else the directory whose tree gives them.
func (m *Model) restoreWhat() (p string, size int64, dir *tree.ID) {
	l := m.cur()
	if l == nil || len(l.entries) == 0 || m.whole {
		if len(m.stack) <= 1 && m.snap != nil {
			return "/", m.snap.Bytes, nil
		}
		if l == nil {
			return m.browsePath(), 0, nil
		}
		return m.browsePath(), 0, &l.id
	}
	e := l.entries[l.sel]
	p = path.Join(m.browsePath(), e.Name)
	switch e.Kind {
	case tree.File:
		return p, int64(e.Size), nil
	case tree.Dir:
		return p, 0, &e.Subtree
	}
	return p, 0, nil
}

// treeBytes adds up the file sizes under a directory, for the progress bar.
func treeBytes(ctx context.Context, r Reader, id tree.ID) (int64, error) {
	var n int64
	todo := []tree.ID{id}
	for len(todo) > 0 {
		t, err := r.Tree(ctx, todo[len(todo)-1])
		if err != nil {
			return 0, err
		}
		todo = todo[:len(todo)-1]
		for i := range t.Entries {
			switch e := &t.Entries[i]; e.Kind {
			case tree.File:
				n += int64(e.Size)
			case tree.Dir:
				todo = append(todo, e.Subtree)
			}
		}
	}
	return n, nil
}

func (m *Model) keyTarget(k Key) []Cmd {
	switch k.Name {
	case "Esc":
		m.dialog = DialogNone
		m.say("restore cancelled")
	case "Tab":
		return m.drv.fromTarget(m)
	case "Backspace":
		if r := []rune(m.input); len(r) > 0 {
			m.input = string(r[:len(r)-1])
		}
	case "Rune":
		m.input += string(k.Rune)
	case "Enter":
		if m.input == "" {
			return nil
		}
		return m.startRestore(m.input)
	}
	return nil
}

func (m *Model) startRestore(target string) []Cmd {
	if m.reader == nil {
		m.dialog = DialogNone
		m.fail("the restore passphrase was forgotten: open the snapshot again")
		return nil
	}
	what, total, dir := m.restoreWhat()
	ctx, cancel := context.WithCancel(context.Background())
	j := &restoreJob{what: what, target: target, done: new(atomic.Int64), started: m.clock(), cancel: cancel, running: true}
	j.total.Store(total)
	m.job = j
	m.dialog = DialogRestore
	b, r, root := m.b, m.reader, m.root
	return []Cmd{func() Msg {
		defer cancel()
		if dir != nil {
			// The size shows once the directory's trees are read.
			id := *dir
			go func() {
				if n, err := treeBytes(ctx, r, id); err == nil {
					j.total.Store(n)
				}
			}()
		}
		rep, err := b.Restore(ctx, r, root, what, target, func(n int64) { j.done.Add(n) })
		return restoreMsg{rep: rep, err: err}
	}}
}

func parseRoot(s string) (tree.ID, error) {
	var id tree.ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, errors.New("bad root id in its journal record")
	}
	copy(id[:], b)
	return id, nil
}
