package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"sync"
	"syscall"
	"testing/fstest"
	"time"
)

// fakeMounts records mounts; fail maps a target to the error mounting or
// unmounting it returns.
type fakeMounts struct {
	mu       sync.Mutex
	mounted  []Mount
	log      []string
	fail     map[string]error
	readOnly []string
}

func (f *fakeMounts) Mount(source, target, fstype string, flags uintptr, data string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[target]; err != nil {
		return err
	}
	f.mounted = append(f.mounted, Mount{source, target, fstype})
	f.log = append(f.log, "mount "+target)
	return nil
}

func (f *fakeMounts) Unmount(target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["umount "+target]; err != nil {
		return err
	}
	for i, m := range f.mounted {
		if m.Target == target {
			f.mounted = append(f.mounted[:i], f.mounted[i+1:]...)
			f.log = append(f.log, "umount "+target)
			return nil
		}
	}
	return errors.New("not mounted")
}

func (f *fakeMounts) RemountReadOnly(target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readOnly = append(f.readOnly, target)
	f.log = append(f.log, "ro "+target)
	return nil
}

func (f *fakeMounts) Mounts() ([]Mount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Mount(nil), f.mounted...), nil
}

type fakeModules struct {
	mu     sync.Mutex
	dir    fs.FS
	loaded []string
	fail   map[string]error
}

func (f *fakeModules) Release() string { return "6.1.0-test-amd64" }
func (f *fakeModules) Dir() (fs.FS, error) {
	if f.dir == nil {
		return nil, fs.ErrNotExist
	}
	return f.dir, nil
}
func (f *fakeModules) Load(file string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[file]; err != nil {
		return err
	}
	f.loaded = append(f.loaded, file)
	return nil
}

// fakeRandom becomes ready after a number of polls (-1: never).
type fakeRandom struct {
	mu    sync.Mutex
	after int
	polls int
}

func (f *fakeRandom) Ready() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	return f.after >= 0 && f.polls > f.after, nil
}

type fakeRTC struct {
	t   time.Time
	err error
}

func (f fakeRTC) Read() (time.Time, error) { return f.t, f.err }

type fakeWatchdog struct {
	mu       sync.Mutex
	pets     int
	disarmed bool
	timeout  time.Duration
}

func (w *fakeWatchdog) Identity() string { return "i6300ESB timer" }
func (w *fakeWatchdog) Timeout() (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timeout == 0 {
		return 30 * time.Second, nil
	}
	return w.timeout, nil
}
func (w *fakeWatchdog) SetTimeout(d time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timeout = d
	return nil
}
func (w *fakeWatchdog) petCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pets
}
func (w *fakeWatchdog) Pet() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.disarmed {
		return errors.New("pet after disarm")
	}
	w.pets++
	return nil
}
func (w *fakeWatchdog) Disarm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.disarmed = true
	return nil
}

type fakePower struct {
	mu       sync.Mutex
	cad      bool
	syncs    int
	powered  bool
	rebooted bool
}

func (p *fakePower) CtrlAltDelSignals() error { p.cad = true; return nil }
func (p *fakePower) Sync()                    { p.mu.Lock(); p.syncs++; p.mu.Unlock() }
func (p *fakePower) PowerOff() error          { p.powered = true; return nil }
func (p *fakePower) Reboot() error            { p.rebooted = true; return nil }

// fakeProcs runs "programs" that are Go functions of their arguments.
type fakeProcs struct {
	mu      sync.Mutex
	started [][]string
	// run decides what a started process does: it returns its exit code
	// and whether it keeps running until signalled.
	run func(argv []string) (code int, stays bool)
	// output is what a process writes to Cmd.Out.
	output func(argv []string) string
	procs  []*fakeProc
	ttys   []string // the commands started on a terminal
	ttyDev []string // and on which
}

func (f *fakeProcs) Start(c Cmd) (Process, error) {
	f.mu.Lock()
	f.started = append(f.started, c.Argv)
	pid := len(f.started) + 100
	if c.TTY {
		f.ttys = append(f.ttys, fmt.Sprint(c.Argv))
		f.ttyDev = append(f.ttyDev, c.TTYDevice)
	}
	f.mu.Unlock()
	code, stays := f.run(c.Argv)
	if c.Out != nil && f.output != nil {
		io.WriteString(c.Out, f.output(c.Argv))
	}
	p := &fakeProc{pid: pid, done: make(chan struct{}), code: code}
	if !stays {
		close(p.done)
	}
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p, nil
}

// last returns the last process started whose argv starts with prefix.
func (f *fakeProcs) last(prefix ...string) *fakeProc {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.started) - 1; i >= 0; i-- {
		if len(f.started[i]) >= len(prefix) && fmt.Sprint(f.started[i][:len(prefix)]) == fmt.Sprint(prefix) {
			return f.procs[i]
		}
	}
	return nil
}

func (f *fakeProcs) argvs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s []string
	for _, a := range f.started {
		s = append(s, fmt.Sprint(a))
	}
	return s
}

type fakeProc struct {
	pid     int
	mu      sync.Mutex
	done    chan struct{}
	code    int
	signals []syscall.Signal
	// ignoreTerm makes the process survive SIGTERM.
	ignoreTerm bool
}

func (p *fakeProc) Pid() int { return p.pid }
func (p *fakeProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.signals = append(p.signals, sig)
	select {
	case <-p.done:
		return errors.New("process already finished")
	default:
	}
	if sig == sigTerm && p.ignoreTerm {
		return nil
	}
	if sig == syscall.SIGSTOP {
		return nil // hung: still running
	}
	p.code = -1
	close(p.done)
	return nil
}
func (p *fakeProc) Done() <-chan struct{} { return p.done }
func (p *fakeProc) ExitCode() int         { <-p.done; return p.code }

// fakeClock advances by step each time it is read.
type fakeClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.step)
	return c.now
}

// powerKeyEvents is an evdev stream: a key release of another key, then a
// power key press.
func powerKeyEvents() []byte {
	var b bytes.Buffer
	ev := func(typ, code uint16, value int32) {
		e := make([]byte, inputEventSize)
		binary.NativeEndian.PutUint16(e[16:], typ)
		binary.NativeEndian.PutUint16(e[18:], code)
		binary.NativeEndian.PutUint32(e[20:], uint32(value))
		b.Write(e)
	}
	ev(evKey, 28, 0)       // enter released
	ev(evKey, keyPower, 0) // a release without a press
	ev(0, 0, 0)            // SYN
	ev(evKey, keyPower, 1) // pressed
	return b.Bytes()
}

// blockingReader never returns: an input device nobody presses.
type blockingReader struct{ ch chan struct{} }

func (b blockingReader) Read([]byte) (int, error) { <-b.ch; return 0, io.EOF }
func (b blockingReader) Close() error             { return nil }

// fakeFiles answers Stat for the files it holds, with their mtimes.
type fakeFiles struct {
	mu    sync.Mutex
	files map[string]time.Time
}

func newFiles(names ...string) *fakeFiles {
	f := &fakeFiles{files: map[string]time.Time{}}
	for _, n := range names {
		f.files[n] = time.Time{}
	}
	return f
}

func (f *fakeFiles) Stat(name string) (fs.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.files[name]; ok {
		return fstest.MapFS{path.Base(name): {ModTime: t}}.Stat(path.Base(name))
	}
	return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
}

func (f *fakeFiles) touch(name string, t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[name] = t
}

func (f *fakeFiles) MkdirAll(name string, perm fs.FileMode) error {
	f.touch(name, time.Time{})
	return nil
}

// fakeTerminal is the keyboards of the consoles: lines sent on typed are
// typed on dev.
type fakeTerminal struct {
	typed  chan string
	dev    string
	devs   []string // the terminals it was opened on
	closed bool
}

func (t *fakeTerminal) ReadLine(timeout time.Duration) (string, string, error) {
	select {
	case l := <-t.typed:
		return l, t.dev, nil
	case <-time.After(timeout):
		return "", "", fmt.Errorf("read the consoles: %w", os.ErrDeadlineExceeded)
	}
}

func (t *fakeTerminal) Close() error { t.closed = true; return nil }

// fakeDisk is a sparse disk: its bytes, then zeros forever.
type fakeDisk struct {
	b   []byte
	off int64
}

func (d *fakeDisk) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off < int64(len(d.b)) {
		copy(p, d.b[off:])
	}
	return len(p), nil
}

func (d *fakeDisk) Read(p []byte) (int, error) {
	n, err := d.ReadAt(p, d.off)
	d.off += int64(n)
	return n, err
}

func (d *fakeDisk) Close() error { return nil }

func sortedLines(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}
