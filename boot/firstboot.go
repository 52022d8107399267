package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"drawbridge/boot/blockdev"

	"drawbridge/vault/units"
)

// Mke2fsArgs formats the data disk: ext4 labelled DataLabel, 1% reserved
// for root (the daemon runs as root; the reserve only keeps the
// filesystem from fragmenting when full), inode tables zeroed by the
// kernel after the first mount rather than by mke2fs (minutes of writing
// on a large disk, and under emulation), the journal zeroed now (the
// middle of a disk is not known to be blank, and a stale journal block
// must never be replayed), no discard (slow on some drives, and the disk
// is blank anyway).
func Mke2fsArgs(dev string) []string {
	return []string{Mke2fs, "-q", "-t", "ext4", "-L", DataLabel, "-m", "1",
		"-E", "lazy_itable_init=1,lazy_journal_init=0,nodiscard", dev}
}

// confirmTries is how many wrong answers the format question takes before
// the boot goes on without a data disk.
const confirmTries = 3

// formatBlankDisk runs when no disk carries the data disk's label: if
// exactly one disk is blank, it asks at the console whether to make it
// the data disk, and formats it if the person types "format NAME".
func (a *Appliance) formatBlankDisk(ctx context.Context, log *Log) error {
	a.mu.Lock()
	found, ambiguous := a.disk != nil, a.ambiguous
	a.mu.Unlock()
	if found {
		return Skipped("the data disk was found")
	}
	if ambiguous {
		return Skipped("more than one disk has the data disk's label")
	}
	s := blockdev.Scanner{Sys: a.HW.Sys, Dev: a.HW.Disks}
	cands, err := s.Candidates()
	if err != nil {
		log.Warnf("%v", err)
	}
	var blank []blockdev.Candidate
	for _, c := range cands {
		if c.Blank {
			blank = append(blank, c)
		} else {
			log.Printf("%s (%s) %s: not offered", c.Name, units.Bytes(c.Size), c.Why)
		}
	}
	switch {
	case len(blank) == 0:
		return Skipped("no blank disk to make the data disk")
	case len(blank) > 1:
		var names []string
		for _, c := range blank {
			names = append(names, c.Name)
		}
		a.Console.Printf("drawbridge: no data disk: %d blank disks (%s); attach only the one to use", len(blank), strings.Join(names, ", "))
		return Skipped("more than one blank disk")
	}
	d := blank[0]
	if _, err := a.HW.Stat(Mke2fs); err != nil {
		return fmt.Errorf("%s is blank but cannot be formatted: %w", d.Name, err)
	}
	ok, err := a.confirmFormat(log, d)
	if err != nil || !ok {
		return err
	}
	log.Printf("formatting %s: %s", d.Path(), strings.Join(Mke2fsArgs(d.Path()), " "))
	code, err := a.runWait(ctx, Cmd{Argv: Mke2fsArgs(d.Path())}, a.Timing.Format)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s exited with status %d: %s is not formatted", Mke2fs, code, d.Path())
	}
	nd, err := s.Find(DataLabel)
	if err != nil || nd == nil {
		return fmt.Errorf("%s was formatted but no disk has the label %s: %v", d.Path(), DataLabel, err)
	}
	a.mu.Lock()
	a.disk = nd
	a.mu.Unlock()
	log.Printf("%s is the data disk (label %s, uuid %s)", nd.Path(), nd.Label, nd.UUID)
	return nil
}

// confirmFormat asks the person at the console; only "format NAME" is yes.
func (a *Appliance) confirmFormat(log *Log, d blockdev.Candidate) (bool, error) {
	term, err := a.HW.Terminal(a.consoles())
	if err != nil {
		return false, fmt.Errorf("%s is blank, but the console cannot be read to ask whether to format it: %w", d.Name, err)
	}
	defer term.Close()
	model := d.Model
	if model == "" {
		model = "no model name"
	}
	want := "format " + d.Name
	log.Printf("first boot: %s (%s, %s) is blank and can become the data disk; formatting erases it", d.Name, model, units.Bytes(d.Size))
	for try := 1; ; try++ {
		log.Printf("type %q and enter to format it, or just enter to go on without a data disk (no answer in %v is no)", want, a.Timing.Confirm)
		line, dev, err := term.ReadLine(a.Timing.Confirm)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			a.Console.Printf("drawbridge: no data disk: no answer within %v: %s not formatted", a.Timing.Confirm, d.Name)
			return false, Skipped("not confirmed")
		}
		if err != nil {
			return false, fmt.Errorf("read the answer: %w", err)
		}
		line = strings.Join(strings.Fields(line), " ")
		switch {
		case line == want:
			a.mu.Lock()
			a.answeredOn = dev
			a.mu.Unlock()
			return true, nil
		case line == "":
			a.Console.Printf("drawbridge: no data disk: %s not formatted", d.Name)
			return false, Skipped("not confirmed")
		case try >= confirmTries:
			a.Console.Printf("drawbridge: no data disk: %s not formatted after %d answers that were not %q", d.Name, try, want)
			return false, Skipped("not confirmed")
		}
		log.Printf("%s not formatted: the answer was not %q", d.Name, want)
	}
}

// makeStore makes the store on the data disk when it has none: drawbridge
// init on the console, where the person types the restore passphrase
// twice. A failure is said, and the next boot tries again.
func (a *Appliance) makeStore(ctx context.Context, log *Log) error {
	a.mu.Lock()
	mounted := a.mounted
	a.mu.Unlock()
	if !mounted {
		return Skipped("no data disk")
	}
	if _, err := a.HW.Stat(StoreMarker); err == nil {
		log.Printf("%s", StoreDir)
		return nil
	}
	if _, err := a.HW.Stat(Daemon); err != nil {
		return fmt.Errorf("no store at %s, and no %s to make one: %w", StoreDir, Daemon, err)
	}
	log.Printf("no store at %s: making one; choose the restore passphrase and type it twice", StoreDir)
	argv := []string{Daemon, "init", "--store", StoreDir}
	code, err := a.runWait(ctx, Cmd{Argv: argv, TTY: true, TTYDevice: a.answered()}, 0)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s exited with status %d: no store yet; the next boot tries again", strings.Join(argv, " "), code)
	}
	log.Printf("store made at %s", StoreDir)
	return nil
}

// importConfig imports the configuration from a USB stick when the data
// disk has none: drawbridge config import on the console.
func (a *Appliance) importConfig(ctx context.Context, log *Log) error {
	a.mu.Lock()
	mounted := a.mounted
	a.mu.Unlock()
	if !mounted {
		return Skipped("no data disk")
	}
	if _, err := a.HW.Stat(ConfigFile); err == nil {
		log.Printf("%s", ConfigFile)
		return nil
	}
	if _, err := a.HW.Stat(Daemon); err != nil {
		return fmt.Errorf("no configuration at %s, and no %s to import one: %w", ConfigFile, Daemon, err)
	}
	code, _, err := a.probe(ctx, Daemon, "config", "import", "--help")
	if err != nil {
		return err
	}
	if code != 0 {
		a.Console.Printf("drawbridge: the configuration must be imported: this %s cannot import one; put it at %s", path.Base(Daemon), ConfigFile)
		return Skipped("no 'config import' in " + Daemon)
	}
	log.Printf("no configuration at %s: importing one from a USB stick (ctrl-c goes on without one)", ConfigFile)
	argv := []string{Daemon, "config", "import", "--usb", "--config", ConfigFile, "--store", StoreDir}
	code, err = a.runWait(ctx, Cmd{Argv: argv, TTY: true, TTYDevice: a.answered()}, 0)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s exited with status %d: no configuration yet; the next boot tries again", strings.Join(argv, " "), code)
	}
	log.Printf("configuration imported to %s", ConfigFile)
	return nil
}

// answered is the terminal the format question was answered on; "" (the
// kernel's console) when none was asked.
func (a *Appliance) answered() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.answeredOn
}
