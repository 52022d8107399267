package boot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Cmdline
	}{
		{"", Cmdline{}},
		{"console=ttyS0", Cmdline{Consoles: []string{"/dev/ttyS0"}}},
		{"console=tty0 console=ttyS0,115200n8 console=ttyS0 quiet", Cmdline{Consoles: []string{"/dev/tty1", "/dev/ttyS0"}}},
		{"console=../sda console=", Cmdline{}},
		{"drawbridge.window_now=30m", Cmdline{WindowNow: 30 * time.Minute}},
		{"drawbridge.window_now=-1s", Cmdline{Warnings: []string{"drawbridge.window_now=-1s: want a positive duration like 30m"}}},
		{"drawbridge.watchdog_timeout=15s", Cmdline{WatchdogTimeout: 15 * time.Second}},
		{"drawbridge.watchdog_timeout=0", Cmdline{Warnings: []string{"drawbridge.watchdog_timeout=0: want a duration from 1s to 1h"}}},
		{"drawbridge.fault=kill-daemon-after:20s,stop-daemon-after:1m", Cmdline{Faults: []Fault{{syscall.SIGKILL, 20 * time.Second}, {syscall.SIGSTOP, time.Minute}}}},
		{"drawbridge.fault=crash-daemon-after:1s", Cmdline{Warnings: []string{"drawbridge.fault=crash-daemon-after:1s: want kill-daemon-after:DURATION or stop-daemon-after:DURATION"}}},
	} {
		got := ParseCmdline(tc.in)
		if fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", tc.want) {
			t.Errorf("ParseCmdline(%q) = %+v, want %+v", tc.in, *got, tc.want)
		}
	}
}

// withFlags makes the rig's drawbridge a daemon whose run --help names
// the given flags.
func withFlags(r *rig, flags ...string) {
	r.procs.output = func(argv []string) string {
		return "  run   the vault daemon: --config FILE [--window-now DURATION] " + strings.Join(flags, " ") + "\n"
	}
}

func TestDaemonArgv(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		flags   []string
		want    string
	}{
		{"console=ttyS0", nil, "/bin/drawbridge run --config /data/drawbridge.toml"},
		{"console=ttyS0", []string{"--console DEV"}, "/bin/drawbridge run --config /data/drawbridge.toml --console /dev/ttyS0 --console /dev/tty1"},
		{"", []string{"--console DEV"}, "/bin/drawbridge run --config /data/drawbridge.toml --console /dev/tty1"},
		{"console=ttyS0 drawbridge.window_now=30m", []string{"--console DEV", "--heartbeat FILE"},
			"/bin/drawbridge run --config /data/drawbridge.toml --console /dev/ttyS0 --console /dev/tty1 --heartbeat /run/drawbridge/heartbeat --window-now 30m0s"},
	} {
		r := newRig(t)
		r.cmdline = tc.cmdline
		withFlags(r, tc.flags...)
		res := results(r.a.Boot(context.Background()))
		if res["daemon"] != "ok" {
			t.Errorf("%q: daemon %s\n%s", tc.cmdline, res["daemon"], r.out)
			continue
		}
		got := r.procs.argvs()
		if want := "[" + tc.want + "]"; got[len(got)-1] != want {
			t.Errorf("%q %v: started %s, want %s", tc.cmdline, tc.flags, got[len(got)-1], want)
		}
		// Without console=, PID 1 writes to the screen only.
		lines := strings.Split(r.out.String()+r.screen.String(), "\n")
		if !has(lines, "drawbridge: boot: daemon: "+tc.want) {
			t.Errorf("the console does not say the command line:\n%s", r.out)
		}
		heartbeat := slices.ContainsFunc(tc.flags, func(f string) bool { return strings.HasPrefix(f, "--heartbeat") })
		if w := has(lines, "daemon: warning: this drawbridge writes no heartbeat"); w == heartbeat {
			t.Errorf("heartbeat %v, warning %v:\n%s", heartbeat, w, r.out)
		}
	}
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("no %s after 5s", what)
}

// The watchdog is petted while the daemon's heartbeat is fresh, not once
// it is stale, and again when it comes back; a daemon that has exited is
// restarted and is no reason to stop petting.
func TestWatchdogFollowsHeartbeat(t *testing.T) {
	r := newRig(t)
	withFlags(r, "--console DEV", "--heartbeat FILE")
	r.a.Timing.Heartbeat = 50 * time.Millisecond
	// The rig's clock moves 10ms a read; the heartbeat goes with it.
	beat := make(chan bool, 1)
	beat <- true
	stopBeat := make(chan struct{})
	defer close(stopBeat)
	go func() {
		for {
			select {
			case <-stopBeat:
				return
			case <-time.After(time.Millisecond):
			}
			on := <-beat
			beat <- on
			if on {
				r.files.touch(HeartbeatFile, r.a.HW.Clock())
			}
		}
	}()
	res := results(r.a.Boot(context.Background()))
	if res["daemon"] != "ok" || res["watchdog"] != "ok" {
		t.Fatalf("results %v\n%s", res, r.out)
	}
	pets := r.watchdog.petCount()
	waitFor(t, "pets while the heartbeat is fresh", func() bool { return r.watchdog.petCount() > pets+5 })

	<-beat
	beat <- false
	waitFor(t, "hung daemon said", func() bool { return has(r.lines(), "drawbridge: watchdog: no heartbeat from the daemon for") })
	if !has(r.lines(), "it seems hung; no longer petting the watchdog") {
		t.Errorf("console:\n%s", r.out)
	}
	time.Sleep(20 * time.Millisecond)
	pets = r.watchdog.petCount()
	time.Sleep(50 * time.Millisecond)
	if n := r.watchdog.petCount(); n != pets {
		t.Errorf("petted %d times with a stale heartbeat", n-pets)
	}

	<-beat
	beat <- true
	waitFor(t, "petting again", func() bool {
		return has(r.lines(), "drawbridge: watchdog: the daemon's heartbeat is fresh again; petting")
	})

	// The daemon dies, its heartbeat stops: PID 1 restarts it and keeps
	// petting while it is down; the new process counts from its start.
	<-beat
	beat <- false
	pets = r.watchdog.petCount()
	r.procs.last(Daemon, "run", "--config").Signal(sigKill)
	waitFor(t, "restart said", func() bool { return has(r.lines(), "drawbridge: daemon: killed by a signal; restarting in") })
	if r.watchdog.petCount() <= pets {
		t.Error("no pet while the daemon was down")
	}
	if err := r.a.Shutdown(context.Background(), Request{Why: "test"}); err != nil {
		t.Fatal(err)
	}
}

func TestFaultInjection(t *testing.T) {
	r := newRig(t)
	r.cmdline = "console=ttyS0 drawbridge.fault=stop-daemon-after:10ms,kill-daemon-after:50ms"
	res := results(r.a.Boot(context.Background()))
	if res["daemon"] != "ok" {
		t.Fatalf("results %v\n%s", res, r.out)
	}
	if !has(r.lines(), "drawbridge: boot: daemon: warning: TEST FAULT: the daemon gets SIGSTOP 10ms after it starts") {
		t.Errorf("console:\n%s", r.out)
	}
	waitFor(t, "SIGKILL sent", func() bool { return has(r.lines(), "drawbridge: test fault: SIGKILL sent to the daemon (pid") })
	p := r.procs.last(Daemon, "run", "--config")
	p.mu.Lock()
	sigs := fmt.Sprint(p.signals)
	p.mu.Unlock()
	if sigs != "[stopped (signal) killed]" {
		t.Errorf("signals %s", sigs)
	}
	waitFor(t, "restart said", func() bool { return has(r.lines(), "drawbridge: daemon: killed by a signal; restarting in") })
}

func TestRebootRequest(t *testing.T) {
	r := newRig(t)
	r.a.Boot(context.Background())
	r.a.RequestReboot("signal SIGUSR1")
	req := r.a.Wait(context.Background())
	if req != (Request{Why: "signal SIGUSR1", Reboot: true}) {
		t.Errorf("Wait = %+v", req)
	}
	if err := r.a.Shutdown(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if !r.power.rebooted || r.power.powered {
		t.Errorf("rebooted %v, powered off %v", r.power.rebooted, r.power.powered)
	}
	lines := r.lines()
	for _, l := range []string{"drawbridge: rebooting: signal SIGUSR1", "drawbridge: shutdown: services: ok", "drawbridge: shutdown: unmount: /data", "drawbridge: reboot"} {
		if !has(lines, l) {
			t.Errorf("no line %q:\n%s", l, r.out)
		}
	}
}

func TestWatchdogTimeoutFromCmdline(t *testing.T) {
	r := newRig(t)
	r.a.Timing.Watchdog = 10 * time.Second
	r.cmdline = "console=ttyS0 drawbridge.watchdog_timeout=15s"
	r.a.Boot(context.Background())
	// Petted thrice within the timeout.
	if !has(r.lines(), "watchdog: i6300ESB timer, reboots a hung box after 15s; petted every 5s") {
		t.Errorf("console:\n%s", r.out)
	}
}

func TestWatchdogShorterPetIntervalKept(t *testing.T) {
	r := newRig(t)
	r.cmdline = "console=ttyS0 drawbridge.watchdog_timeout=15s"
	r.a.Boot(context.Background())
	if !has(r.lines(), "watchdog: i6300ESB timer, reboots a hung box after 15s; petted every 1ms") {
		t.Errorf("console:\n%s", r.out)
	}
}

// A daemon is given Timing.Startup to its first heartbeat; one that never
// gives one stops the petting after that.
func TestWatchdogStartupGrace(t *testing.T) {
	r := newRig(t)
	withFlags(r, "--heartbeat FILE")
	r.a.Timing.Heartbeat = 20 * time.Millisecond
	r.a.Timing.Startup = 300 * time.Millisecond
	// An earlier daemon's heartbeat, from before this one started.
	r.files.touch(HeartbeatFile, r.a.HW.Clock())
	res := results(r.a.Boot(context.Background()))
	if res["daemon"] != "ok" {
		t.Fatalf("results %v\n%s", res, r.out)
	}
	pets := r.watchdog.petCount()
	waitFor(t, "pets while the daemon starts", func() bool { return r.watchdog.petCount() > pets+3 })
	if has(r.lines(), "it seems hung") {
		t.Errorf("hung before its start-up time was up:\n%s", r.out)
	}
	waitFor(t, "hung daemon said", func() bool { return has(r.lines(), "it seems hung; no longer petting the watchdog") })
	if err := r.a.Shutdown(context.Background(), Request{Why: "test"}); err != nil {
		t.Fatal(err)
	}
}
