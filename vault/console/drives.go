package console

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"drawbridge/hw/usb"
	"drawbridge/vault/config/importer"
	"drawbridge/vault/export"
	"drawbridge/vault/store"
	"drawbridge/vault/todrive"
	"drawbridge/vault/tree"

	"drawbridge/vault/units"
)

// The drive screens: restore to a USB drive, export a snapshot to one,
// format one, and import a configuration from one. They are a sub-model of
// the Model with keys, messages and a view of their own; while one is open
// it holds the keyboard. Every drive operation runs in the background
// through the Backend's Drives, and the list of drives is read again every
// DriveListEvery while a drive screen is open, so a drive plugged in or
// pulled out shows within it.

// Journal record types of the drive screens (the import's own,
// config-imported, is written by importer.Plan.Apply).
const (
	RecordRestoreDrive = "console-restore-drive"
	RecordExport       = "console-export"
	RecordFormat       = "console-format"
	RecordKeys         = "console-keys-written"
)

// actDrive is what an export waits for the restore passphrase with.
const actDrive action = 100

// DriveListEvery is how often the open drive screens list the drives.
const DriveListEvery = time.Second

// FormatLabel is the label a drive formatted at the console gets.
const FormatLabel = "DRAWBRIDGE"

// Drives is what the console does with USB drives (USBDrives on the
// appliance and in hosted mode). A Backend offers them by implementing
// DriveBackend. Every method may block: the Model calls them only from
// background goroutines. Errors callers branch on: todrive.ErrDriveGone
// (the drive was pulled out), todrive.ErrNoSpace, ErrAdminPassphrase and
// ErrNoAdmin from ApplyImport.
type Drives interface {
	// List returns the drives plugged in now; an error comes with what
	// could be listed.
	List() ([]usb.Drive, error)
	// RestoreTo mounts part, restores subpath of the snapshot tree root
	// into a new directory on it after checking its free space, reads
	// every file back, and unmounts it.
	RestoreTo(ctx context.Context, r Reader, sn store.Snapshot, root tree.ID, subpath string, part usb.Partition, progress func(todrive.Progress)) (*DriveReport, error)
	// ExportTo mounts part and writes the snapshot's plain-file export
	// (r is the unlocked Reader) or its sealed copy (r is nil) into a new
	// directory on it, checks it on a read-only mount, and unmounts it.
	ExportTo(ctx context.Context, r Reader, sn store.Snapshot, part usb.Partition, sealed bool, progress func(todrive.Progress)) (*DriveReport, error)
	// Format erases d as fstype; confirm must be d.Confirmation().
	Format(ctx context.Context, d usb.Drive, fstype, label, confirm string) error
	// FindConfigs looks for drawbridge.toml on every partition, each
	// mounted read-only only while it is read.
	FindConfigs(ctx context.Context) ([]importer.Found, error)
	// PlanImport compares a configuration found on a drive with the
	// installed one.
	PlanImport(f importer.Found) (*importer.Plan, error)
	// ApplyImport checks the admin passphrase, installs the file and
	// journals config-imported.
	ApplyImport(ctx context.Context, p *importer.Plan, adminPass []byte) error
	// WriteKeys mounts part, writes each source's authorized_keys line
	// into a new file at its top, reads it back and unmounts it.
	WriteKeys(ctx context.Context, part usb.Partition) (*DriveReport, error)
}

// DriveBackend is a Backend that has USB drives; Drives returns nil when
// there are none to offer (then restore goes to a typed directory).
type DriveBackend interface {
	Backend
	Drives() Drives
}

// drivesOf returns b's Drives, or nil.
func drivesOf(b Backend) Drives {
	if db, ok := b.(DriveBackend); ok {
		return db.Drives()
	}
	return nil
}

// DriveReport says what a restore or an export to a drive did.
type DriveReport struct {
	Partition string // "sdb1"
	Dir       string // the new directory at the top of the drive
	Files     int64
	Bytes     int64
	Verified  int64    // files read back identical (the sealed copy's: packs)
	Problems  []string // snapshot damage, what the drive could not hold, what read back wrong
	// Unmounted says the drive was flushed and unmounted: it can be
	// pulled out.
	Unmounted  bool
	UnmountErr string
}

// driveStage is which drive screen is open.
type driveStage int

const (
	dsClosed     driveStage = iota
	dsUnlock                // the restore passphrase is asked for an export
	dsList                  // the drives: pick a partition, or format one
	dsExportKind            // plain or sealed
	dsFSType                // the filesystem a format makes
	dsConfirm               // the typed confirmation of a format
	dsWork                  // a restore, export or format running, then its result
	dsScan                  // looking for drawbridge.toml
	dsConfigs               // what the drives hold
	dsPlan                  // the changes an import makes
	dsAdminPass             // the admin passphrase that applies them
	dsImported              // the import's result
)

// drivePurpose is what picking a partition in the list does.
type drivePurpose int

const (
	forLook    drivePurpose = iota // the drive list of the status screen: f formats
	forRestore                     // restore the browser's selection to it
	forExport                      // export d.snap to it
	forKeys                        // write the authorized_keys lines to it (a in the settings)
)

// driveRow is one row of the drive list: a drive (part < 0) or one of its
// partitions.
type driveRow struct {
	d    usb.Drive
	part int
}

// usable says whether the console can write to a partition.
func usable(p usb.Partition) bool {
	switch p.FSType {
	case "vfat", "exfat", "ext2", "ext3", "ext4":
		return true
	}
	return false
}

// driveJob is a restore, export or format running or done.
type driveJob struct {
	kind    string // "restore", "export", "format"
	title   string
	what    string         // for the journal: "abababababab:/etc/hosts", the drive formatted
	data    map[string]any // the journal record's data
	fmtDone string         // a format's result
	started time.Time
	ended   time.Time
	cancel  context.CancelFunc
	part    string // the partition or drive written to

	mu   sync.Mutex // prog is written by the worker
	prog todrive.Progress

	running bool
	failed  bool
	gone    bool // the drive was pulled out
	result  []string
}

func (j *driveJob) progress() todrive.Progress {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.prog
}

func (j *driveJob) setProgress(p todrive.Progress) {
	j.mu.Lock()
	j.prog = p
	j.mu.Unlock()
}

// driveScreens is the drive screens' state.
type driveScreens struct {
	stage   driveStage
	purpose drivePurpose

	drives   []usb.Drive
	listErr  string
	listBusy bool
	listed   bool // a listing arrived since the screen opened
	listAt   time.Time
	sel      int

	snap   store.Snapshot // what an export writes
	sealed bool

	fmtDrive usb.Drive
	fstype   string
	typed    string

	job *driveJob

	found    []importer.Found
	foundSel int
	plan     *importer.Plan
	planTop  int
	pass     []byte
	passBusy bool
	imported []string

	msg string // a line inside the dialog
	bad bool
}

// Messages of the drive screens' background work.
type (
	driveListMsg struct {
		drives []usb.Drive
		err    error
	}
	driveDoneMsg struct {
		job *driveJob
		rep *DriveReport
		err error
	}
	configsMsg struct {
		found []importer.Found
		err   error
	}
	planMsg struct {
		plan *importer.Plan
		err  error
	}
	applyMsg struct{ err error }
)

// open says whether a drive screen holds the keyboard.
func (d *driveScreens) open() bool { return d != nil && d.stage != dsClosed && d.stage != dsUnlock }

// reading says whether a drive job uses the Reader.
func (d *driveScreens) reading() bool {
	return d != nil && d.job != nil && d.job.running && d.job.kind != "format" && !d.sealed
}

func (d *driveScreens) say(format string, args ...any) {
	d.msg, d.bad = fmt.Sprintf(format, args...), false
}

func (d *driveScreens) fail(format string, args ...any) {
	d.msg, d.bad = fmt.Sprintf(format, args...), true
}

// close shuts the drive screens; a job still running is stopped (its
// result is journaled when it ends).
func (d *driveScreens) close(*Model) {
	d.clearPass()
	if d.job != nil && d.job.running {
		d.job.cancel()
	}
	*d = driveScreens{drives: d.drives}
}

func (d *driveScreens) clearPass() {
	clear(d.pass)
	d.pass = d.pass[:0]
	d.passBusy = false
}

// list reads the drives in the background.
func (d *driveScreens) list(m *Model) []Cmd {
	dr := drivesOf(m.b)
	if dr == nil || d.listBusy {
		return nil
	}
	d.listBusy, d.listAt = true, m.clock()
	return []Cmd{func() Msg {
		drives, err := dr.List()
		return driveListMsg{drives, err}
	}}
}

// tick lists the drives again while a drive list is shown or a job runs.
func (d *driveScreens) tick(m *Model) []Cmd {
	if d == nil || d.stage == dsClosed || d.stage == dsUnlock {
		return nil
	}
	if m.clock().Sub(d.listAt) >= DriveListEvery {
		return d.list(m)
	}
	return nil
}

// openList shows the drive list for purpose.
func (d *driveScreens) openList(m *Model, purpose drivePurpose) []Cmd {
	if drivesOf(m.b) == nil {
		m.fail("%s", noDrives(m))
		return nil
	}
	d.stage, d.purpose, d.sel, d.msg = dsList, purpose, 0, ""
	d.drives, d.listed = nil, false // what was plugged in last time may be gone
	m.msg = ""
	return d.list(m)
}

// noDrives says why the console offers no drives.
func noDrives(m *Model) string {
	if m.b.ReadOnly() {
		return ErrReadOnly.Error() + ": stop the daemon to use USB drives"
	}
	return "this console has no USB drives (drawbridge export and restore write to a directory)"
}

// openRestore is r and R in the browser. On the appliance's own
// terminals (Options.Fixed) it offers the drives first, t giving the typed
// directory; elsewhere, and when there are no drives, it asks for a
// directory, Tab giving the drives.
func (d *driveScreens) openRestore(m *Model) []Cmd {
	if drivesOf(m.b) == nil || !m.o.Fixed {
		m.input = ""
		m.dialog = DialogTarget
		m.msg = ""
		return nil
	}
	return d.openList(m, forRestore)
}

// fromTarget is Tab in the typed directory's dialog: the drives instead.
func (d *driveScreens) fromTarget(m *Model) []Cmd {
	if drivesOf(m.b) == nil {
		return nil
	}
	m.dialog = DialogNone
	return d.openList(m, forRestore)
}

// openExport asks how to export sn: e on the snapshot list.
func (d *driveScreens) openExport(m *Model, sn store.Snapshot) []Cmd {
	if drivesOf(m.b) == nil {
		m.fail("%s", noDrives(m))
		return nil
	}
	d.snap, d.stage, d.msg = sn, dsExportKind, ""
	m.msg = ""
	return nil
}

// unlocked continues an export that waited for the restore passphrase.
func (d *driveScreens) unlocked(m *Model) []Cmd {
	if d.stage != dsUnlock {
		return nil
	}
	return d.openList(m, forExport)
}

// openImport looks for configurations on the drives: i in the settings.
func (d *driveScreens) openImport(m *Model) []Cmd {
	dr := drivesOf(m.b)
	if dr == nil {
		m.fail("%s", noDrives(m))
		return nil
	}
	d.stage, d.msg, d.found, d.plan = dsScan, "", nil, nil
	m.msg = ""
	return []Cmd{func() Msg {
		found, err := dr.FindConfigs(context.Background())
		return configsMsg{found, err}
	}}
}

// rows flattens the drives into the list's rows.
func (d *driveScreens) rows() []driveRow {
	var out []driveRow
	for _, dr := range d.drives {
		out = append(out, driveRow{d: dr, part: -1})
		for i := range dr.Partitions {
			out = append(out, driveRow{d: dr, part: i})
		}
	}
	return out
}

// update handles the drive screens' messages.
func (d *driveScreens) update(m *Model, msg Msg) []Cmd {
	switch v := msg.(type) {
	case driveListMsg:
		d.listBusy, d.listed = false, true
		d.drives = v.drives
		d.listErr = ""
		if v.err != nil {
			d.listErr = v.err.Error()
		}
		n := len(d.rows())
		if d.purpose == forRestore {
			n++ // the typed directory
		}
		d.sel = max(0, min(d.sel, n-1))
		if d.stage == dsConfirm && !d.present(d.fmtDrive) {
			d.stage = dsList
			d.fail("%s was pulled out: nothing was formatted", d.fmtDrive)
		}
	case driveDoneMsg:
		return d.done(m, v)
	case configsMsg:
		if d.stage != dsScan {
			return nil
		}
		d.found, d.foundSel = v.found, 0
		d.stage = dsConfigs
		if v.err != nil {
			d.fail("listing the drives: %v", v.err)
		}
		if n := len(importer.Valid(v.found)); n > 0 {
			for i, f := range v.found {
				if f.Err == nil {
					d.foundSel = i
					break
				}
			}
		}
	case planMsg:
		if d.stage != dsConfigs {
			return nil
		}
		if v.err != nil {
			d.fail("%v", v.err)
			return nil
		}
		d.plan, d.planTop, d.stage, d.msg = v.plan, 0, dsPlan, ""
	case applyMsg:
		d.passBusy = false
		if d.stage != dsAdminPass {
			return nil
		}
		switch {
		case errors.Is(v.err, ErrAdminPassphrase):
			d.fail("wrong admin passphrase: refused, nothing changed (each refusal makes the next check wait longer)")
		case v.err != nil:
			d.fail("import: %v", v.err)
		default:
			d.stage, d.msg = dsImported, ""
			d.imported = []string{
				fmt.Sprintf("The configuration from %s", d.plan.From),
				fmt.Sprintf("is installed in %s (%d changes),", d.plan.Current, len(d.plan.Changes)),
				"and the import is journaled (config-imported).",
				"",
				"The daemon reads it at its next start: restart the vault",
				"(power menu: reboot) for the new sources and windows to apply.",
			}
			m.say("configuration imported from %s; the daemon reads it at its next start", d.plan.From)
			if !m.statusBusy {
				return []Cmd{m.loadStatus()}
			}
		}
	}
	return nil
}

// present says whether the drive is still in the list.
func (d *driveScreens) present(x usb.Drive) bool {
	for _, dr := range d.drives {
		if dr.Name == x.Name && dr.Size == x.Size && dr.Serial == x.Serial {
			return true
		}
	}
	return false
}

// key handles a key while a drive screen is open.
func (d *driveScreens) key(m *Model, k Key) []Cmd {
	switch d.stage {
	case dsList:
		return d.keyList(m, k)
	case dsExportKind:
		return d.keyExportKind(m, k)
	case dsFSType:
		return d.keyFSType(m, k)
	case dsConfirm:
		return d.keyConfirm(m, k)
	case dsWork:
		return d.keyWork(m, k)
	case dsScan:
		if k.Name == "Esc" {
			d.close(m)
			m.say("import cancelled")
		}
	case dsConfigs:
		return d.keyConfigs(m, k)
	case dsPlan:
		return d.keyPlan(m, k)
	case dsAdminPass:
		return d.keyAdminPass(m, k)
	case dsImported:
		d.close(m)
	}
	return nil
}

func (d *driveScreens) keyList(m *Model, k Key) []Cmd {
	rows := d.rows()
	n := len(rows)
	if d.purpose == forRestore {
		n++
	}
	switch {
	case k.Name == "Esc" || isRune(k, 'q') || k.Name == "Left":
		d.close(m)
		if d.purpose != forLook {
			m.say("cancelled: nothing was written")
		}
		return nil
	case isRune(k, 't') && d.purpose == forRestore:
		return d.toTyped(m)
	case isRune(k, 'f'):
		if d.sel >= len(rows) {
			return nil
		}
		d.fmtDrive = rows[d.sel].d
		d.stage, d.msg = dsFSType, ""
		return nil
	case k.Name == "Enter" || k.Name == "Right":
		if d.purpose == forRestore && d.sel == len(rows) {
			return d.toTyped(m)
		}
		if d.sel >= len(rows) {
			return nil
		}
		r := rows[d.sel]
		if d.purpose == forLook {
			d.say("%s: f formats it", r.d)
			return nil
		}
		if r.part < 0 {
			if len(r.d.Partitions) == 0 {
				d.fail("%s holds no filesystem Drawbridge uses: f formats it (vfat, exfat or ext4)", r.d)
			} else {
				d.fail("pick one of %s's partitions, below it", r.d.Name)
			}
			return nil
		}
		p := r.d.Partitions[r.part]
		if !usable(p) {
			what := p.FSType
			if what == "" {
				what = "no filesystem Drawbridge recognises"
			}
			d.fail("%s holds %s: Drawbridge writes only vfat, exfat and ext4 (f formats the drive)", p.Name, what)
			return nil
		}
		switch d.purpose {
		case forRestore:
			return d.startRestore(m, r.d, p)
		case forKeys:
			return d.startKeys(m, r.d, p)
		}
		return d.startExport(m, r.d, p)
	default:
		d.sel = move(k, d.sel, n, driveRows(m))
	}
	return nil
}

// toTyped gives up the drive list for the typed directory.
func (d *driveScreens) toTyped(m *Model) []Cmd {
	d.close(m)
	m.input = ""
	m.dialog = DialogTarget
	return nil
}

func (d *driveScreens) keyExportKind(m *Model, k Key) []Cmd {
	switch {
	case k.Name == "Esc" || isRune(k, 'q'):
		d.close(m)
		m.say("export cancelled")
	case isRune(k, 's'):
		d.sealed = true
		return d.openList(m, forExport)
	case isRune(k, 'p'):
		d.sealed = false
		if m.reader == nil {
			d.stage = dsUnlock
			return m.askPassphrase(actDrive)
		}
		return d.openList(m, forExport)
	}
	return nil
}

// fsTypes are what the console formats, in the order offered.
var fsTypes = []struct {
	key       rune
	name, why string
}{
	{'1', "exfat", "any computer; files of any size"},
	{'2', "vfat", "FAT32: any computer; files up to 4 GiB"},
	{'3', "ext4", "Linux only; keeps owners and symlinks"},
}

func (d *driveScreens) keyFSType(m *Model, k Key) []Cmd {
	if k.Name == "Esc" || isRune(k, 'q') {
		d.stage = dsList
		d.say("not formatted")
		return nil
	}
	for _, t := range fsTypes {
		if isRune(k, t.key) {
			d.fstype, d.typed, d.msg = t.name, "", ""
			d.stage = dsConfirm
		}
	}
	return nil
}

// maxTyped caps the typed confirmation.
const maxTyped = 200

func (d *driveScreens) keyConfirm(m *Model, k Key) []Cmd {
	switch k.Name {
	case "Esc":
		d.stage, d.typed = dsList, ""
		d.say("not formatted")
	case "Backspace":
		if r := []rune(d.typed); len(r) > 0 {
			d.typed = string(r[:len(r)-1])
		}
	case "Rune":
		if utf8.RuneCountInString(d.typed) < maxTyped {
			d.typed += string(k.Rune)
		}
	case "Enter":
		want := d.fmtDrive.Confirmation()
		if d.typed != want {
			d.typed = ""
			d.fail("that is not the confirmation shown: refused, nothing was formatted")
			return nil
		}
		return d.startFormat(m)
	}
	return nil
}

func (d *driveScreens) keyWork(m *Model, k Key) []Cmd {
	j := d.job
	if j != nil && j.running {
		if k.Name == "Esc" {
			j.cancel()
			d.say("stopping…")
		}
		return nil
	}
	if j != nil {
		m.msg, m.bad = j.result[0], j.failed
	}
	if j != nil && j.kind == "format" {
		d.job = nil
		d.stage = dsList
		return d.list(m)
	}
	d.job = nil
	d.close(m)
	return nil
}

// startJob begins a drive job and shows its progress.
func (d *driveScreens) startJob(m *Model, kind, title, part, what string, data map[string]any) (*driveJob, context.Context) {
	ctx, cancel := context.WithCancel(context.Background())
	data["partition"] = part
	j := &driveJob{kind: kind, title: title, part: part, what: what, data: data, started: m.clock(), cancel: cancel, running: true}
	d.job, d.stage, d.msg = j, dsWork, ""
	m.msg = ""
	return j, ctx
}

func (d *driveScreens) startRestore(m *Model, drive usb.Drive, p usb.Partition) []Cmd {
	if m.reader == nil || m.snap == nil {
		d.close(m)
		m.fail("the restore passphrase was forgotten: open the snapshot again")
		return nil
	}
	what, _, _ := m.restoreWhat()
	dr, r, sn, root := drivesOf(m.b), m.reader, *m.snap, m.root
	j, ctx := d.startJob(m, "restore", fmt.Sprintf("Restore %s to %s", what, p.Name), p.Name,
		fmt.Sprintf("%s:%s", short(sn.ID, 12), what), map[string]any{"snapshot": sn.ID, "path": what, "drive": drive.String(), "serial": drive.Serial})
	return []Cmd{func() Msg {
		defer j.cancel()
		rep, err := dr.RestoreTo(ctx, r, sn, root, what, p, j.setProgress)
		return driveDoneMsg{job: j, rep: rep, err: err}
	}}
}

func (d *driveScreens) startExport(m *Model, drive usb.Drive, p usb.Partition) []Cmd {
	var r Reader
	if !d.sealed {
		if m.reader == nil {
			d.close(m)
			m.fail("the restore passphrase was forgotten: export again")
			return nil
		}
		r = m.reader
	}
	kind := "plain"
	if d.sealed {
		kind = "sealed"
	}
	dr, sn, sealed := drivesOf(m.b), d.snap, d.sealed
	j, ctx := d.startJob(m, "export", fmt.Sprintf("Export %s (%s) to %s", short(sn.ID, 12), kind, p.Name), p.Name,
		fmt.Sprintf("%s (%s)", short(sn.ID, 12), kind), map[string]any{"snapshot": sn.ID, "sealed": sealed, "drive": drive.String(), "serial": drive.Serial})
	return []Cmd{func() Msg {
		defer j.cancel()
		rep, err := dr.ExportTo(ctx, r, sn, p, sealed, j.setProgress)
		return driveDoneMsg{job: j, rep: rep, err: err}
	}}
}

func (d *driveScreens) startKeys(m *Model, drive usb.Drive, p usb.Partition) []Cmd {
	dr := drivesOf(m.b)
	j, ctx := d.startJob(m, "keys", "Write the authorized_keys lines to "+p.Name, p.Name, "the authorized_keys lines",
		map[string]any{"drive": drive.String(), "serial": drive.Serial})
	return []Cmd{func() Msg {
		defer j.cancel()
		rep, err := dr.WriteKeys(ctx, p)
		return driveDoneMsg{job: j, rep: rep, err: err}
	}}
}

func (d *driveScreens) startFormat(m *Model) []Cmd {
	dr, drive, fstype, confirm := drivesOf(m.b), d.fmtDrive, d.fstype, d.typed
	d.typed = ""
	j, ctx := d.startJob(m, "format", fmt.Sprintf("Format %s as %s", drive, fstype), drive.Name, drive.String(),
		map[string]any{"drive": drive.Name, "fstype": fstype, "model": strings.TrimSpace(drive.Vendor + " " + drive.Model), "size": drive.Size, "serial": drive.Serial})
	j.fmtDone = fmt.Sprintf("formatted as %s, labelled %s: %s", fstype, FormatLabel, drive)
	return []Cmd{func() Msg {
		defer j.cancel()
		err := dr.Format(ctx, drive, fstype, FormatLabel, confirm)
		return driveDoneMsg{job: j, err: err}
	}}
}

// done shows a job's result and journals it, also when the screens were
// closed meanwhile.
func (d *driveScreens) done(m *Model, v driveDoneMsg) []Cmd {
	j := v.job
	j.running, j.ended = false, m.clock()
	rep, err := v.rep, v.err
	data, what := j.data, j.what
	if rep != nil {
		data["dir"], data["files"], data["bytes"], data["verified"], data["problems"] = rep.Dir, rep.Files, rep.Bytes, rep.Verified, len(rep.Problems)
		if len(rep.Problems) > 0 {
			data["problem_list"] = rep.Problems[:min(len(rep.Problems), 100)]
		}
	}
	typ := map[string]string{"restore": RecordRestoreDrive, "export": RecordExport, "format": RecordFormat, "keys": RecordKeys}[j.kind]
	verb := map[string]string{"restore": "restored", "export": "exported", "format": "formatted", "keys": "wrote"}[j.kind]
	if err != nil {
		j.failed = true
		data["error"] = err.Error()
		switch {
		case errors.Is(err, todrive.ErrDriveGone) || errors.Is(err, usb.ErrChanged):
			j.gone = true
			j.result = []string{"the drive was removed: what is on it is incomplete",
				"Plug it in again and start over; the console goes on."}
		case errors.Is(err, todrive.ErrNoSpace) || errors.Is(err, export.ErrNoSpace):
			j.result = []string{"not enough space on the drive: " + errText(err),
				"Use a larger drive, or restore less."}
		case errors.Is(err, context.Canceled):
			j.result = []string{fmt.Sprintf("the %s was stopped: what is on the drive is incomplete", j.kind)}
		case errors.Is(err, usb.ErrInUse):
			j.result = []string{"the drive is in use (a partition is mounted): nothing was formatted"}
		default:
			j.result = []string{fmt.Sprintf("%s failed: %v", j.kind, err)}
		}
		if rep != nil && rep.Unmounted {
			j.result = append(j.result, "The drive is unmounted: you can pull it out now.")
		} else if rep != nil && rep.UnmountErr != "" {
			j.result = append(j.result, "unmount: "+rep.UnmountErr)
		}
		return []Cmd{m.journal(typ, fmt.Sprintf("console %s of %s to %s failed: %v", j.kind, what, j.part, err), data)}
	}
	if j.kind == "format" {
		j.result = []string{j.fmtDone}
		return []Cmd{m.journal(typ, "console formatted "+what+" as "+fmt.Sprint(data["fstype"]), data)}
	}
	j.failed = len(rep.Problems) > 0
	j.result = []string{verb + " " + what, fmt.Sprintf("to %s:/%s: %s, %s", rep.Partition, rep.Dir, units.Count(rep.Files, "file"), units.Bytes(rep.Bytes))}
	if sealed, _ := data["sealed"].(bool); sealed {
		j.result = append(j.result, "checked on a read-only mount: "+units.Count(rep.Verified, "pack")+" whole")
	} else {
		j.result = append(j.result, "read back from the drive: "+units.Count(rep.Verified, "file")+" identical")
	}
	for i, p := range rep.Problems {
		if i == 3 {
			j.result = append(j.result, fmt.Sprintf("… %d problems in all (the journal lists them)", len(rep.Problems)))
			break
		}
		j.result = append(j.result, "problem: "+p)
	}
	if rep.Unmounted {
		j.result = append(j.result, "The drive is unmounted: you can pull it out now.")
	} else {
		j.failed = true
		j.result = append(j.result, "unmount failed ("+rep.UnmountErr+"): do not trust what is on the drive")
	}
	return []Cmd{m.journal(typ, fmt.Sprintf("console %s %s to %s:/%s: %s, %s, %d read back identical, %s",
		verb, what, rep.Partition, rep.Dir, units.Count(rep.Files, "file"), units.Count(rep.Bytes, "byte"), rep.Verified, units.Count(len(rep.Problems), "problem")), data)}
}

// errText is an error's message without the sentinel's wording repeated.
func errText(err error) string {
	s := err.Error()
	for _, e := range []error{todrive.ErrNoSpace, export.ErrNoSpace} {
		s = strings.ReplaceAll(s, e.Error()+": ", "")
	}
	return s
}

func (d *driveScreens) keyConfigs(m *Model, k Key) []Cmd {
	switch {
	case k.Name == "Esc" || isRune(k, 'q'):
		d.close(m)
		m.say("import cancelled: nothing changed")
	case isRune(k, 'r'):
		return d.openImport(m)
	case k.Name == "Enter":
		if d.foundSel >= len(d.found) {
			return nil
		}
		f := d.found[d.foundSel]
		if f.Err != nil {
			d.fail("that file was refused: %v", f.Err)
			return nil
		}
		dr := drivesOf(m.b)
		d.msg = ""
		return []Cmd{func() Msg {
			p, err := dr.PlanImport(f)
			return planMsg{p, err}
		}}
	default:
		d.foundSel = move(k, d.foundSel, len(d.found), driveRows(m))
	}
	return nil
}

func (d *driveScreens) keyPlan(m *Model, k Key) []Cmd {
	switch {
	case k.Name == "Esc" || isRune(k, 'n') || isRune(k, 'q'):
		d.close(m)
		m.say("import cancelled: nothing changed")
	case isRune(k, 'y'):
		d.stage, d.msg = dsAdminPass, ""
		d.clearPass()
	default:
		rows := max(m.Height-12, 1)
		d.planTop = max(0, min(move(k, d.planTop, len(d.plan.Changes), rows), len(d.plan.Changes)-rows))
	}
	return nil
}

func (d *driveScreens) keyAdminPass(m *Model, k Key) []Cmd {
	if d.passBusy {
		return nil
	}
	switch k.Name {
	case "Esc":
		d.close(m)
		m.say("import cancelled: nothing changed")
	case "Backspace", "Rune":
		d.pass = editSecret(d.pass, k)
	case "Enter":
		if len(d.pass) == 0 {
			return nil
		}
		p := d.pass
		d.pass = nil
		d.passBusy, d.msg = true, ""
		dr, plan := drivesOf(m.b), d.plan
		return []Cmd{func() Msg {
			err := dr.ApplyImport(context.Background(), plan, p)
			clear(p)
			return applyMsg{err}
		}}
	}
	return nil
}
