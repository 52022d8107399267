package console

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"drawbridge/hw/usb"
	"drawbridge/vault/config"
	"drawbridge/vault/config/importer"
	"drawbridge/vault/store"
	"drawbridge/vault/todrive"
	"drawbridge/vault/tree"
)

// fakeDrives is a Drives in memory: tests plug and pull drives by setting
// the list, and choose what each operation does.
type fakeDrives struct {
	mu     sync.Mutex
	drives []usb.Drive
	// listDelay makes List as slow as a drive that hangs.
	listDelay time.Duration

	restoreErr error
	restored   []string // "subpath -> partition"
	exported   []string // "snapshot plain|sealed -> partition"
	formatted  []string // "drive fstype"
	// hold, when set, makes RestoreTo report progress, then wait for it
	// to close, then return restoreErr.
	hold chan struct{}
	// running is closed by RestoreTo once it reported progress.
	running chan struct{}

	found   []importer.Found
	plan    *importer.Plan
	admin   string
	applied int
	keys    []string // partitions the keys were written to
}

func (f *fakeDrives) List() ([]usb.Drive, error) {
	time.Sleep(f.listDelay)
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.drives), nil
}

func (f *fakeDrives) set(drives ...usb.Drive) {
	f.mu.Lock()
	f.drives = drives
	f.mu.Unlock()
}

func (f *fakeDrives) RestoreTo(ctx context.Context, r Reader, sn store.Snapshot, root tree.ID, subpath string, part usb.Partition, progress func(todrive.Progress)) (*DriveReport, error) {
	f.mu.Lock()
	f.restored = append(f.restored, subpath+" -> "+part.Name)
	hold, err := f.hold, f.restoreErr
	f.mu.Unlock()
	progress(todrive.Progress{Phase: todrive.PhaseWrite, Done: 50 << 20, Total: 100 << 20, Rate: 10 << 20, ETA: 5 * time.Second})
	if hold != nil {
		close(f.running)
		select {
		case <-hold:
		case <-ctx.Done():
			return &DriveReport{Partition: part.Name, Unmounted: true}, ctx.Err()
		}
	}
	if err != nil {
		return &DriveReport{Partition: part.Name, UnmountErr: "flush sdb1 before unmounting: input/output error"}, err
	}
	progress(todrive.Progress{Phase: todrive.PhaseVerify, Done: 100 << 20, Total: 100 << 20})
	return &DriveReport{Partition: part.Name, Dir: todrive.DirName(sn.ID, time.Unix(2e9, 0)), Files: 1, Bytes: 5, Verified: 1, Unmounted: true}, nil
}

func (f *fakeDrives) ExportTo(ctx context.Context, r Reader, sn store.Snapshot, part usb.Partition, sealed bool, progress func(todrive.Progress)) (*DriveReport, error) {
	kind := "plain"
	if sealed {
		kind = "sealed"
	}
	if !sealed && r == nil {
		return nil, errors.New("a plain export without the Reader")
	}
	f.mu.Lock()
	f.exported = append(f.exported, short(sn.ID, 12)+" "+kind+" -> "+part.Name)
	f.mu.Unlock()
	return &DriveReport{Partition: part.Name, Dir: exportDirName(sn.ID, time.Unix(2e9, 0), sealed), Files: 2, Bytes: 10, Verified: 2, Unmounted: true}, nil
}

func (f *fakeDrives) Format(ctx context.Context, d usb.Drive, fstype, label, confirm string) error {
	if confirm != d.Confirmation() {
		return usb.ErrNotConfirmed
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.formatted = append(f.formatted, d.Name+" "+fstype)
	for i := range f.drives {
		if f.drives[i].Name == d.Name {
			f.drives[i].Partitions = []usb.Partition{{Name: d.Name, Path: d.Path, Size: d.Size, FSType: fstype, Label: label}}
		}
	}
	return nil
}

func (f *fakeDrives) FindConfigs(context.Context) ([]importer.Found, error) { return f.found, nil }

func (f *fakeDrives) PlanImport(importer.Found) (*importer.Plan, error) { return f.plan, nil }

func (f *fakeDrives) ApplyImport(_ context.Context, p *importer.Plan, pass []byte) error {
	if string(pass) != f.admin {
		return fmt.Errorf("%w: %v", ErrAdminPassphrase, "wrong")
	}
	f.applied++
	return nil
}

func (f *fakeDrives) WriteKeys(_ context.Context, part usb.Partition) (*DriveReport, error) {
	f.mu.Lock()
	f.keys = append(f.keys, part.Name)
	f.mu.Unlock()
	return &DriveReport{Partition: part.Name, Dir: KeysFile, Files: 1, Bytes: 300, Verified: 1, Unmounted: true}, nil
}

// driveBackend is the fake Backend with drives.
type driveBackend struct {
	*fakeBackend
	dr *fakeDrives
}

func (b driveBackend) Drives() Drives { return b.dr }

var (
	stick = usb.Drive{Name: "sdb", Path: "/dev/sdb", Vendor: "SanDisk", Model: "Ultra", Serial: "4C53", Size: 64 << 30, Removable: true,
		Partitions: []usb.Partition{{Name: "sdb1", Path: "/dev/sdb1", Size: 64 << 30, FSType: "exfat", Label: "STICK"}}}
	blank = usb.Drive{Name: "sdc", Path: "/dev/sdc", Vendor: "Kingston", Model: "DataTraveler", Size: 8 << 30, Removable: true}
)

// dh drives a Model with drive screens.
type dh struct {
	t  *testing.T
	m  *Model
	b  driveBackend
	dr *fakeDrives
	d  *driveScreens
}

func newDH(t *testing.T) *dh {
	dr := &fakeDrives{admin: "admin pass"}
	b := driveBackend{newFake(3), dr}
	clk := &fakeClock{time.Unix(2e9, 0)}
	m := started(t, b, clk)
	m.o.Fixed = true // the appliance's console: r offers the drives first
	h := &dh{t: t, m: m, b: b, dr: dr, d: &m.drv}
	return h
}

func (h *dh) send(msg Msg) { drive(h.m, msg) }

func (h *dh) keys(ks ...string) {
	for _, k := range ks {
		if len(k) == 1 {
			h.send(Key{Name: "Rune", Rune: rune(k[0])})
		} else {
			h.send(Key{Name: k})
		}
	}
}

func (h *dh) text(s string) {
	for _, r := range s {
		h.send(Key{Name: "Rune", Rune: r})
	}
}

// tick moves the clock past the drive list's period and ticks.
func (h *dh) tick() {
	clk := h.m.clock
	now := clk().Add(DriveListEvery)
	h.m.clock = func() time.Time { return now }
	h.send(Tick{})
}

func (h *dh) screen() string {
	h.t.Helper()
	return drawn(h.t, h.m)
}

func (h *dh) want(want ...string) {
	h.t.Helper()
	got := h.screen()
	for _, w := range want {
		if !strings.Contains(got, w) {
			h.t.Fatalf("screen lacks %q:\n%s", w, got)
		}
	}
}

// toHosts opens the snapshot and selects /etc/hosts in the browser.
func (h *dh) toHosts() {
	h.t.Helper()
	h.keys("Enter", "Enter", "Enter")
	h.text("right")
	h.keys("Enter")
	h.keys("Down", "Enter")
	if got := h.m.browsePath(); got != "/etc" {
		h.t.Fatalf("path %q, want /etc", got)
	}
}

func (h *dh) journaled(typ string) bool {
	return slices.Contains(h.b.journal, typ)
}

// TestDriveRestorePlugPick: no drive, then one plugged in shows within a
// tick; picking its partition restores the selected file with progress,
// reads it back, unmounts, and says the drive can be pulled.
func TestDriveRestorePlugPick(t *testing.T) {
	h := newDH(t)
	h.toHosts()
	h.keys("r")
	if h.d.stage != dsList || h.d.purpose != forRestore {
		t.Fatalf("r opens stage %v", h.d.stage)
	}
	h.want("Restore to a USB drive", "/etc/hosts", "No USB drive is plugged in", "to a directory typed by hand")

	h.dr.set(blank, stick)
	h.tick()
	h.want("sdc Kingston DataTraveler 8.0 GiB", "(no filesystem: f formats it)", "sdb SanDisk Ultra 64.0 GiB", "sdb1", "exfat", "STICK")
	// The blank drive's row cannot take a restore.
	h.keys("Enter")
	if h.d.stage != dsList || !strings.Contains(h.d.msg, "no filesystem") {
		t.Fatalf("Enter on a blank drive: stage %v msg %q", h.d.stage, h.d.msg)
	}
	// sdb first (sorted by name as hw/usb lists), then its partition.
	h.dr.set(stick, blank)
	h.tick()
	h.keys("Home", "Down")
	h.keys("Enter")
	if fmt.Sprint(h.dr.restored) != "[/etc/hosts -> sdb1]" {
		t.Fatalf("restored %v", h.dr.restored)
	}
	if h.d.stage != dsWork || h.d.job.running || h.d.job.failed {
		t.Fatalf("stage %v job %+v", h.d.stage, h.d.job)
	}
	h.want("restored abababababab:/etc/hosts", "to sdb1:/drawbridge-restore-abababababab-", "read back from the drive: 1 file identical",
		"you can pull it out now")
	if !h.journaled(RecordRestoreDrive) {
		t.Errorf("not journaled: %v", h.b.journal)
	}
	h.keys("x")
	if h.d.open() || h.m.screen != ScreenBrowse || !strings.Contains(h.m.msg, "restored") {
		t.Fatalf("after the result: open %v screen %v msg %q", h.d.open(), h.m.screen, h.m.msg)
	}
	// t gives the typed directory, as without drives.
	h.keys("r", "t")
	if h.d.open() || h.m.dialog != DialogTarget {
		t.Fatalf("t: dialog %v", h.m.dialog)
	}
}

// TestDriveRestoreProgress: the progress shows bytes, rate and ETA while
// the restore runs in the background, and the screen answers meanwhile.
func TestDriveRestoreProgress(t *testing.T) {
	h := newDH(t)
	h.dr.set(stick)
	h.toHosts()
	h.keys("r", "Down")
	h.dr.hold, h.dr.running = make(chan struct{}), make(chan struct{})
	cmds := h.d.key(h.m, Key{Name: "Enter"})
	if len(cmds) != 1 || !h.d.job.running {
		t.Fatalf("Enter started %d cmds", len(cmds))
	}
	res := make(chan Msg)
	go func() { res <- cmds[0]() }()
	<-h.dr.running
	h.want("Restore /etc/hosts to sdb1", "writing", "]  50%", "50.0 MiB of 100.0 MiB", "10.0 MiB/s", "ETA 5s", "Esc stops")
	// Keys other than Esc do nothing while it runs; a reader stays.
	h.keys("x", "q")
	if !h.d.job.running || h.m.reader == nil || !h.d.reading() {
		t.Fatal("a key ended the running restore")
	}
	close(h.dr.hold)
	h.send(<-res)
	h.want("read back from the drive: 1 file identical")
}

// TestDrivePulled: a drive pulled out during the restore: the console
// says so, journals it, and goes on (another restore works).
func TestDrivePulled(t *testing.T) {
	h := newDH(t)
	h.dr.set(stick)
	h.toHosts()
	h.dr.restoreErr = fmt.Errorf("restore to drive: %w", todrive.ErrDriveGone)
	h.keys("r", "Down", "Enter")
	h.want("the drive was removed", "Plug it in again")
	if !h.d.job.failed || !h.d.job.gone || !h.journaled(RecordRestoreDrive) {
		t.Fatalf("job %+v journal %v", h.d.job, h.b.journal)
	}
	h.dr.set()
	h.tick()
	h.keys("x")
	if h.d.open() || !h.m.bad || !strings.Contains(h.m.msg, "the drive was removed") {
		t.Fatalf("after: open %v msg %q", h.d.open(), h.m.msg)
	}
	// Still usable: the browser moves, the drive comes back, a restore works.
	h.keys("Up", "Down")
	h.dr.restoreErr = nil
	h.dr.set(stick)
	h.keys("r")
	h.tick()
	h.keys("Down", "Enter")
	if h.d.job == nil || h.d.job.failed || len(h.dr.restored) != 2 {
		t.Fatalf("second restore: %+v %v", h.d.job, h.dr.restored)
	}
}

// TestDriveNoSpace: a drive too small refuses with both sizes.
func TestDriveNoSpace(t *testing.T) {
	h := newDH(t)
	h.dr.set(stick)
	h.toHosts()
	h.dr.restoreErr = fmt.Errorf("%w: the restore needs about 2.0 GiB (3 files, 2.0 GiB of data), the drive has 1.0 GiB free", todrive.ErrNoSpace)
	h.keys("r", "Down", "Enter")
	h.want("not enough space on the drive: the restore needs about 2.0 GiB", "the drive has 1.0 GiB free")
	if !h.d.job.failed || h.d.job.gone {
		t.Fatalf("job %+v", h.d.job)
	}
}

// TestDriveFormat: the format is refused unless the exact confirmation is
// typed; then it runs, is journaled, and the list shows the new
// filesystem.
func TestDriveFormat(t *testing.T) {
	h := newDH(t)
	h.dr.set(blank)
	h.keys("u")
	h.want("USB drives", "sdc Kingston DataTraveler 8.0 GiB")
	h.keys("f")
	h.want("Format sdc Kingston DataTraveler 8.0 GiB", "exfat", "vfat", "ext4")
	h.keys("3")
	h.want("ERASES EVERYTHING", "type exactly:", "format sdc Kingston DataTraveler 8.0 GiB")
	h.text("format sdc")
	h.keys("Enter")
	if len(h.dr.formatted) != 0 || h.d.stage != dsConfirm || !h.d.bad || !strings.Contains(h.d.msg, "refused, nothing was formatted") {
		t.Fatalf("a wrong confirmation: formatted %v stage %v msg %q", h.dr.formatted, h.d.stage, h.d.msg)
	}
	h.want("refused, nothing was formatted")
	h.text(blank.Confirmation())
	h.keys("Enter")
	if fmt.Sprint(h.dr.formatted) != "[sdc ext4]" || !h.journaled(RecordFormat) {
		t.Fatalf("formatted %v journal %v", h.dr.formatted, h.b.journal)
	}
	h.want("formatted as ext4, labelled DRAWBRIDGE: sdc Kingston")
	h.keys("x")
	h.want("sdc", "ext4", "DRAWBRIDGE")
	if h.d.stage != dsList {
		t.Fatalf("after a format: stage %v", h.d.stage)
	}
	// A drive pulled while its confirmation is typed: nothing happens.
	h.keys("f", "1")
	h.dr.set()
	h.tick()
	if h.d.stage != dsList || !strings.Contains(h.d.msg, "pulled out") {
		t.Fatalf("pulled during the confirmation: stage %v msg %q", h.d.stage, h.d.msg)
	}
	h.keys("Esc")
	if h.d.open() {
		t.Fatal("Esc does not close the drive list")
	}
}

// TestDriveExport: sealed needs no passphrase; plain asks for it first.
func TestDriveExport(t *testing.T) {
	h := newDH(t)
	h.dr.set(stick)
	h.keys("Enter", "Enter") // the snapshots of home
	h.keys("e")
	h.want("Export abababababab of home to a USB drive", "p  plain files", "s  sealed copy")
	h.keys("s", "Down", "Enter")
	if fmt.Sprint(h.dr.exported) != "[abababababab sealed -> sdb1]" || !h.journaled(RecordExport) {
		t.Fatalf("exported %v journal %v", h.dr.exported, h.b.journal)
	}
	h.want("exported abababababab (sealed)", "to sdb1:/drawbridge-sealed-abababababab-", "packs whole", "pull it out now")
	h.keys("x")
	if h.m.reader != nil {
		t.Fatal("a sealed export unlocked the store")
	}
	h.keys("e", "p")
	if h.m.dialog != DialogPassphrase {
		t.Fatalf("plain export: dialog %v, want the passphrase", h.m.dialog)
	}
	h.text("right")
	h.keys("Enter")
	if h.d.stage != dsList || h.d.purpose != forExport {
		t.Fatalf("after the passphrase: stage %v", h.d.stage)
	}
	h.keys("Down", "Enter")
	if len(h.dr.exported) != 2 || h.dr.exported[1] != "abababababab plain -> sdb1" {
		t.Fatalf("exported %v", h.dr.exported)
	}
	h.want("read back from the drive: 2 files identical")
}

func testPlan() *importer.Plan {
	return &importer.Plan{From: "USB drive sdb SanDisk Ultra 64.0 GiB", Current: "/data/drawbridge.toml", Changes: []config.Change{
		{Op: '+', Subject: "source web2", Detail: "agent backup@198.18.0.7:22 /srv"},
		{Op: '~', Subject: "window 1", Detail: "start 02:00 → 03:00"},
	}}
}

// TestDriveImport: the configurations found are listed, the chosen one's
// changes shown, and applied only with the right admin passphrase.
func TestDriveImport(t *testing.T) {
	h := newDH(t)
	h.b.admin, h.b.settings = "admin pass", []string{"store = \"/data/store\""}
	h.dr.found = []importer.Found{
		{Drive: blank, Partition: usb.Partition{Name: "sdc1"}, Err: fmt.Errorf("read drawbridge.toml: %w", fs.ErrNotExist)},
		{Drive: stick, Partition: stick.Partitions[0], Config: &config.Config{Sources: make([]config.Source, 2)}},
	}
	h.dr.plan = testPlan()
	h.keys("s")
	h.text("admin pass")
	h.keys("Enter")
	if h.m.screen != ScreenSettings {
		t.Fatalf("settings: screen %v msg %q", h.m.screen, h.m.msg)
	}
	h.keys("i")
	h.want("Import a configuration from a USB drive", "sdc1 on sdc Kingston DataTraveler 8.0 GiB: no drawbridge.toml",
		"sdb1 on sdb SanDisk Ultra 64.0 GiB: drawbridge.toml, 2 sources")
	if h.d.foundSel != 1 {
		t.Fatalf("the valid file is not selected: %d", h.d.foundSel)
	}
	h.keys("Enter")
	h.want("Import: what changes", "+ source web2: agent backup@198.18.0.7:22 /srv", "window 1: start 02:00 → 03:00", "y  apply")
	h.keys("y")
	h.want("Applying the import needs the admin passphrase")
	h.text("wrong")
	h.keys("Enter")
	if h.dr.applied != 0 || h.d.stage != dsAdminPass || !strings.Contains(h.d.msg, "wrong admin passphrase: refused, nothing changed") {
		t.Fatalf("wrong passphrase: applied %d stage %v msg %q", h.dr.applied, h.d.stage, h.d.msg)
	}
	if s := h.screen(); strings.Contains(s, "wrong") && !strings.Contains(s, "wrong admin passphrase") {
		t.Fatal("the admin passphrase is echoed")
	}
	h.text("admin pass")
	h.keys("Enter")
	if h.dr.applied != 1 || h.d.stage != dsImported {
		t.Fatalf("right passphrase: applied %d stage %v msg %q", h.dr.applied, h.d.stage, h.d.msg)
	}
	h.want("is installed in /data/drawbridge.toml (2 changes)", "The daemon reads it at its next start")
	h.keys("x")
	if h.d.open() || !strings.Contains(h.m.msg, "the daemon reads it at its next start") {
		t.Fatalf("after the import: open %v msg %q", h.d.open(), h.m.msg)
	}
}

// TestDriveKeys: a in the settings writes the authorized_keys lines to the
// picked drive, journaled; not before the admin passphrase.
func TestDriveKeys(t *testing.T) {
	h := newDH(t)
	h.b.admin, h.b.settings = "admin pass", []string{"# Keys", "ssh key    ssh-ed25519 AAAA drawbridge"}
	h.dr.set(stick)
	h.keys("a")
	if h.d.open() {
		t.Fatal("a on the status screen opened the drives")
	}
	h.keys("s")
	h.text("admin pass")
	h.keys("Enter")
	h.want("ssh key    ssh-ed25519 AAAA drawbridge", "a keys to a drive")
	h.keys("a")
	h.want("Write the authorized_keys lines to a USB drive", "sdb1")
	h.keys("Down", "Enter")
	if fmt.Sprint(h.dr.keys) != "[sdb1]" || !h.journaled(RecordKeys) {
		t.Fatalf("keys written to %v, journal %v", h.dr.keys, h.b.journal)
	}
	h.want("wrote the authorized_keys lines", "to sdb1:/"+KeysFile, "1 file identical", "pull it out now")
}

// TestNoDrivesTypedTarget: a Backend without drives restores to a typed
// directory, as before.
func TestNoDrivesTypedTarget(t *testing.T) {
	b := newFake(3)
	m := started(t, b, &fakeClock{time.Unix(2e9, 0)})
	d := &driveScreens{}
	keys(m, "Enter", "Enter", "Enter")
	typeText(m, "right")
	keys(m, "Enter")
	if cmds := d.openRestore(m); cmds != nil || m.dialog != DialogTarget || d.open() {
		t.Fatalf("without drives: dialog %v", m.dialog)
	}
	if cmds := d.openExport(m, b.snaps[0]); cmds != nil || d.open() || !m.bad {
		t.Fatalf("export without drives: open %v msg %q", d.open(), m.msg)
	}
}

// TestDriveListScrolls: more drives than fit: the selected one stays on
// the screen, with how many rows are above and below.
func TestDriveListScrolls(t *testing.T) {
	h := newDH(t)
	var many []usb.Drive
	for i := range 30 {
		d := stick
		d.Name = fmt.Sprintf("sdx%02d", i)
		d.Partitions = []usb.Partition{{Name: d.Name + "1", Size: d.Size, FSType: "ext4"}}
		many = append(many, d)
	}
	h.dr.set(many...)
	h.keys("u")
	h.want("sdx00 SanDisk", "↓ ")
	h.keys("End")
	h.want(">     sdx291", "↑ ")
	if s := h.screen(); strings.Contains(s, "sdx00 SanDisk") {
		t.Fatalf("the first drive still shows with the last selected:\n%s", s)
	}
}

// TestDriveRestoreHosted: in hosted mode r asks for a directory first, as
// without drives; Tab gives the drives.
func TestDriveRestoreHosted(t *testing.T) {
	h := newDH(t)
	h.m.o.Fixed = false
	h.dr.set(stick)
	h.toHosts()
	h.keys("r")
	if h.m.dialog != DialogTarget || h.d.open() {
		t.Fatalf("r in hosted mode: dialog %v", h.m.dialog)
	}
	h.keys("Tab")
	if h.m.dialog != DialogNone || h.d.stage != dsList || h.d.purpose != forRestore {
		t.Fatalf("Tab: dialog %v stage %v", h.m.dialog, h.d.stage)
	}
	h.keys("Down", "Enter")
	if fmt.Sprint(h.dr.restored) != "[/etc/hosts -> sdb1]" {
		t.Fatalf("restored %v", h.dr.restored)
	}
}

// TestAdminChange: p in the settings changes the admin passphrase after the
// current one and the new one twice; nothing typed shows.
func TestAdminChange(t *testing.T) {
	h := newDH(t)
	h.b.admin, h.b.settings = "admin pass", []string{"store = \"/data/store\""}
	h.keys("s")
	h.text("admin pass")
	h.keys("Enter")
	h.keys("p")
	h.want("Change the admin passphrase", "Current admin passphrase:")
	h.text("not it")
	h.keys("Enter")
	h.text("secret two")
	h.keys("Enter")
	h.text("secret two")
	h.keys("Enter")
	h.want("wrong admin passphrase: refused, nothing changed")
	if h.b.admin != "admin pass" || h.m.ac == nil || h.m.ac.step != 0 {
		t.Fatalf("after a wrong one: admin %q", h.b.admin)
	}
	h.text("admin pass")
	h.keys("Enter")
	h.text("secret two")
	h.keys("Enter")
	h.text("secret 2")
	if s := h.screen(); strings.Contains(s, "secret") {
		t.Fatalf("a passphrase shows as it is typed:\n%s", s)
	}
	h.keys("Enter")
	h.want("the two new ones differ")
	h.text("secret two")
	h.keys("Enter")
	h.text("secret two")
	h.keys("Enter")
	if h.b.admin != "secret two" || h.m.ac != nil || !strings.Contains(h.m.msg, "the admin passphrase is changed") {
		t.Fatalf("after the change: admin %q msg %q", h.b.admin, h.m.msg)
	}
	if s := h.screen(); strings.Contains(s, "secret") {
		t.Fatalf("a passphrase shows:\n%s", s)
	}
	// Esc leaves it as it is.
	h.keys("p")
	h.text("secret two")
	h.keys("Esc")
	if h.m.ac != nil || h.b.admin != "secret two" || h.m.screen != ScreenSettings {
		t.Fatalf("Esc: ac %v admin %q screen %v", h.m.ac, h.b.admin, h.m.screen)
	}
}
