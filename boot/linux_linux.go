package boot

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"drawbridge/boot/blockdev"
	"drawbridge/boot/kmod"
)

// Linux returns the running kernel and its devices. reaper starts (and is
// the only one to reap) child processes.
func Linux(reaper *Reaper) Hardware {
	return Hardware{
		Mounts:       linuxMounts{},
		Modules:      linuxModules{release: release()},
		Random:       &linuxRandom{},
		RTC:          linuxRTC{},
		Clock:        time.Now,
		Sys:          os.DirFS("/sys"),
		Disks:        blockdev.DevDir("/dev"),
		Watchdog:     openWatchdog,
		PowerButtons: openPowerButtons,
		Procs:        reaper,
		Power:        linuxPower{},
		Stat:         os.Stat,
		MkdirAll:     os.MkdirAll,
		Terminal:     openTerminal,
		OpenConsole:  openConsole,
		Cmdline: func() (string, error) {
			b, err := os.ReadFile("/proc/cmdline")
			return string(b), err
		},
		KernelLogLevel: func(level int) error {
			// One number sets the console log level alone.
			return os.WriteFile("/proc/sys/kernel/printk", []byte(fmt.Sprintf("%d\n", level)), 0)
		},
	}
}

func release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

type linuxMounts struct{}

func (linuxMounts) Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	err := unix.Mount(source, target, fstype, flags, data)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%w: %w", ErrBusy, err)
	}
	return err
}

func (linuxMounts) Unmount(target string) error { return unix.Unmount(target, 0) }

func (linuxMounts) RemountReadOnly(target string) error {
	return unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
}

func (linuxMounts) Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMounts(f)
}

// parseMounts reads /proc/self/mounts (fstab format, octal escapes).
func parseMounts(r io.Reader) ([]Mount, error) {
	var ms []Mount
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		ms = append(ms, Mount{Source: unescapeMount(f[0]), Target: unescapeMount(f[1]), FSType: f[2]})
	}
	return ms, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

type linuxModules struct{ release string }

func (m linuxModules) Release() string { return m.release }

func (m linuxModules) Dir() (fs.FS, error) {
	dir := filepath.Join(ModulesDir, m.release)
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	return os.DirFS(dir), nil
}

func (m linuxModules) Load(file string) error {
	return kmod.Kernel{Dir: filepath.Join(ModulesDir, m.release)}.Load(file)
}

// linuxRandom polls getrandom(2) without blocking. The first poll also
// starts one blocking getrandom in the background: on kernels since 5.4 a
// reader blocked on an uninitialized pool makes the kernel gather entropy
// from CPU timing jitter, which initializes it within a second or so even
// on a machine with no hardware random source and few interrupts.
type linuxRandom struct{ once sync.Once }

func (r *linuxRandom) Ready() (bool, error) {
	r.once.Do(func() {
		go func() {
			var b [1]byte
			unix.Getrandom(b[:], 0)
		}()
	})
	var b [1]byte
	_, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK)
	if errors.Is(err, unix.EAGAIN) {
		return false, nil
	}
	return err == nil, err
}

type linuxRTC struct{}

func (linuxRTC) Read() (time.Time, error) {
	f, err := os.Open("/dev/rtc0")
	if err != nil {
		return readSysRTC()
	}
	defer f.Close()
	t, err := unix.IoctlGetRTCTime(int(f.Fd()))
	if err != nil {
		return time.Time{}, fmt.Errorf("RTC_RD_TIME on /dev/rtc0: %w", err)
	}
	return time.Date(int(t.Year)+1900, time.Month(t.Mon+1), int(t.Mday), int(t.Hour), int(t.Min), int(t.Sec), 0, time.UTC), nil
}

// readSysRTC reads the RTC through sysfs when there is no /dev/rtc0 node.
func readSysRTC() (time.Time, error) {
	d, err := os.ReadFile("/sys/class/rtc/rtc0/date")
	if err != nil {
		return time.Time{}, fmt.Errorf("no /dev/rtc0 and no /sys/class/rtc/rtc0: %w", err)
	}
	t, err := os.ReadFile("/sys/class/rtc/rtc0/time")
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse("2006-01-02 15:04:05", strings.TrimSpace(string(d))+" "+strings.TrimSpace(string(t)))
}

// Watchdog ioctls (<linux/watchdog.h>).
const (
	wdiocSetTimeout = 0xc0045706 // _IOWR('W', 6, int)
	wdiocGetTimeout = 0x80045707 // _IOR('W', 7, int)
)

type linuxWatchdog struct {
	f        *os.File
	identity string
}

func openWatchdog() (Watchdog, error) {
	f, err := os.OpenFile("/dev/watchdog", os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	id := "/dev/watchdog"
	if b, err := os.ReadFile("/sys/class/watchdog/watchdog0/identity"); err == nil {
		id = strings.TrimSpace(string(b))
	}
	return &linuxWatchdog{f: f, identity: id}, nil
}

func (w *linuxWatchdog) Identity() string { return w.identity }

func (w *linuxWatchdog) Timeout() (time.Duration, error) {
	var secs int32
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, w.f.Fd(), wdiocGetTimeout, uintptr(unsafe.Pointer(&secs))); errno != 0 {
		return 0, errno
	}
	return time.Duration(secs) * time.Second, nil
}

func (w *linuxWatchdog) SetTimeout(d time.Duration) error {
	secs := int32(d / time.Second)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, w.f.Fd(), wdiocSetTimeout, uintptr(unsafe.Pointer(&secs))); errno != 0 {
		return errno
	}
	return nil
}

func (w *linuxWatchdog) Pet() error {
	_, err := w.f.Write([]byte{0})
	return err
}

// Disarm writes the magic 'V' before closing: the driver then stops the
// timer instead of letting it fire.
func (w *linuxWatchdog) Disarm() error {
	_, err := w.f.Write([]byte("V"))
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// openPowerButtons opens the evdev nodes of the input devices that have a
// power key: the ACPI power button, and keyboards that have one.
func openPowerButtons() ([]io.ReadCloser, error) {
	entries, err := os.ReadDir("/sys/class/input")
	if err != nil {
		return nil, err
	}
	var devs []io.ReadCloser
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "event") {
			continue
		}
		caps, err := os.ReadFile(filepath.Join("/sys/class/input", e.Name(), "device/capabilities/key"))
		if err != nil || !HasPowerKey(string(caps), longBits) {
			continue
		}
		f, err := os.Open(filepath.Join("/dev/input", e.Name()))
		if err != nil {
			return devs, err
		}
		devs = append(devs, f)
	}
	return devs, nil
}

type linuxPower struct{}

func (linuxPower) CtrlAltDelSignals() error {
	return unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
}

func (linuxPower) Sync() { unix.Sync() }

func (linuxPower) PowerOff() error {
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func (linuxPower) Reboot() error {
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// linuxTerminal reads lines from the consoles' terminals with poll(2), in
// the caller's goroutine: the terminals are opened anew for each question
// and closed after it, so that no read of PID 1's is left waiting to take
// the keys meant for a program started on a terminal afterwards.
type linuxTerminal struct {
	ttys []*termInput
}

type termInput struct {
	fd      int
	dev     string
	rest    []byte // read past the last line returned
	afterCR bool   // the last line ended with CR
}

// maxLine caps an answer; the rest of a longer line is dropped.
const maxLine = 256

func openTerminal(devs []string) (Terminal, error) {
	t := &linuxTerminal{}
	var errs []error
	for _, dev := range devs {
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("open %s: %w", dev, err))
			continue
		}
		// Throw away whatever was typed before the question was asked.
		unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIFLUSH)
		t.ttys = append(t.ttys, &termInput{fd: fd, dev: dev})
	}
	if len(t.ttys) == 0 {
		return nil, fmt.Errorf("no terminal to read from: %w", errors.Join(errs...))
	}
	return t, nil
}

// line returns the next whole line in what was read, if there is one.
func (in *termInput) line() (string, bool) {
	if in.afterCR && len(in.rest) > 0 {
		if in.rest[0] == '\n' {
			in.rest = in.rest[1:] // the LF of a CR LF
		}
		in.afterCR = false
	}
	i := bytes.IndexAny(in.rest, "\r\n")
	if i < 0 {
		if len(in.rest) > maxLine {
			in.rest = in.rest[:maxLine]
		}
		return "", false
	}
	line := string(in.rest[:min(i, maxLine)])
	in.afterCR = in.rest[i] == '\r'
	in.rest = in.rest[i+1:]
	return line, true
}

func (t *linuxTerminal) ReadLine(timeout time.Duration) (string, string, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 512)
	for {
		for _, in := range t.ttys {
			if l, ok := in.line(); ok {
				return l, in.dev, nil
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return "", "", fmt.Errorf("read the consoles: %w", os.ErrDeadlineExceeded)
		}
		fds := make([]unix.PollFd, len(t.ttys))
		for i, in := range t.ttys {
			fds[i] = unix.PollFd{Fd: int32(in.fd), Events: unix.POLLIN}
		}
		n, err := unix.Poll(fds, int(min(left, time.Second)/time.Millisecond)+1)
		if errors.Is(err, unix.EINTR) || n == 0 {
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("poll the consoles: %w", err)
		}
		for i, in := range t.ttys {
			if fds[i].Revents == 0 {
				continue
			}
			m, err := unix.Read(in.fd, buf)
			if m > 0 {
				in.rest = append(in.rest, buf[:m]...)
			}
			if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) || m == 0 && err == nil {
				// A terminal that hung up or failed: the others may
				// still answer.
				t.drop(i)
				if len(t.ttys) == 0 {
					return "", "", fmt.Errorf("read %s: no terminal left to read from (%v)", in.dev, err)
				}
				break
			}
		}
	}
}

func (t *linuxTerminal) drop(i int) {
	unix.Close(t.ttys[i].fd)
	t.ttys = append(t.ttys[:i], t.ttys[i+1:]...)
}

// Close closes the terminals.
func (t *linuxTerminal) Close() error {
	for _, in := range t.ttys {
		unix.Close(in.fd)
	}
	t.ttys = nil
	return nil
}

// openConsole opens a terminal for PID 1's lines.
func openConsole(dev string) (io.WriteCloser, error) {
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	return &ttyWriter{dev: dev, f: f}, nil
}

// ttyWriter writes to a terminal, opening it again when a write fails:
// when a program PID 1 started on the terminal (drawbridge init, a debug
// shell) exits, the kernel hangs the terminal up, and every descriptor
// opened on it before then fails from that moment.
type ttyWriter struct {
	dev string
	f   *os.File
}

func (c *ttyWriter) Write(b []byte) (int, error) {
	if c.f != nil {
		n, err := c.f.Write(b)
		if err == nil {
			return n, nil
		}
		c.f.Close()
		c.f = nil
	}
	f, err := os.OpenFile(c.dev, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return 0, err
	}
	c.f = f
	return f.Write(b)
}

func (c *ttyWriter) Close() error {
	if c.f == nil {
		return nil
	}
	return c.f.Close()
}
