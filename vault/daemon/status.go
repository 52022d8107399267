package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"drawbridge/vault/journal"
	"drawbridge/vault/pull"
	"drawbridge/vault/store"
	"drawbridge/vault/vfs"
	"drawbridge/vault/window"
)

// StatusFile is where the daemon keeps its Status, relative to the store:
// replaced whole (temporary file, then rename) at start-up and whenever a
// window opens or closes, for commands that run beside the daemon.
const StatusFile = "state/status.json"

// maxStatusFile caps what ReadStatus reads: a status lists at most a
// thousand sources.
const maxStatusFile = 4 << 20

// Status is what the console shows about the daemon.
type Status struct {
	Updated    time.Time     `json:"updated"`
	Open       *WindowStatus `json:"open,omitempty"` // the window open now
	LastWindow *WindowStatus `json:"last_window,omitempty"`
	NextWindow *WindowStatus `json:"next_window,omitempty"` // none when no window is scheduled
	// ClockAlert describes the active clock alert; empty when the clock is
	// trusted.
	ClockAlert string         `json:"clock_alert,omitempty"`
	Sources    []SourceStatus `json:"sources"` // in configuration order
}

// WindowStatus is one window.
type WindowStatus struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`                 // the deadline
	OpenedBy string    `json:"opened_by,omitempty"` // OpenSchedule or OpenNow
	Closed   time.Time `json:"closed,omitzero"`
	// Result is how it closed: a window.Reason*, ReasonSkipped or
	// ReasonInterrupted.
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// SourceStatus is the state of one source.
type SourceStatus struct {
	Name             string    `json:"name"`
	LastSnapshotID   string    `json:"last_snapshot_id,omitempty"`
	LastSnapshotTime time.Time `json:"last_snapshot_time,omitzero"`
	// LastError is why the last pull failed; empty when it succeeded.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
}

// Status returns the daemon's current status.
func (d *Daemon) Status() Status {
	now := d.o.Clock()
	d.mu.Lock()
	// A copy taken while holding mu: record changes the sources in
	// place, and the journal's replay the last window.
	st := d.status
	st.Sources = slices.Clone(st.Sources)
	for _, w := range []**WindowStatus{&st.Open, &st.LastWindow} {
		if *w != nil {
			c := **w
			*w = &c
		}
	}
	d.mu.Unlock()
	st.Updated = now
	if start, end, ok := d.next(now); ok {
		st.NextWindow = &WindowStatus{Start: start, End: end, OpenedBy: OpenSchedule}
	}
	return st
}

// saveStatus writes Status to StatusFile.
func (d *Daemon) saveStatus() {
	b, err := json.MarshalIndent(d.Status(), "", "  ")
	if err == nil {
		err = vfs.Replace(d.o.Store.FS(), "tmp", StatusFile, append(b, '\n'))
	}
	if err != nil {
		d.log.Warn("cannot save the status", "err", err)
	}
}

// ReadStatus reads the status the daemon of the store in dir last saved.
func ReadStatus(dir string) (Status, error) {
	var st Status
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(StatusFile)))
	if err != nil {
		return st, fmt.Errorf("read daemon status: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStatusFile+1))
	if err != nil {
		return st, fmt.Errorf("read daemon status: %w", err)
	}
	if len(b) > maxStatusFile {
		return st, errors.New("read daemon status: file larger than 4 MiB")
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("read daemon status: %w", err)
	}
	return st, nil
}

// learn takes what the status shows from a journal record written before
// this start-up.
func (d *Daemon) learn(r journal.Record) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch r.Type {
	case "snapshot":
		var sn store.Snapshot
		if json.Unmarshal(r.Data, &sn) != nil {
			return
		}
		if s := d.source(sn.Source); s != nil {
			s.LastSnapshotID, s.LastSnapshotTime = sn.ID, sn.Time
			s.LastError, s.LastErrorTime = "", time.Time{}
		}
	case "pull-failed":
		var f struct {
			Source string `json:"source"`
			Error  string `json:"error"`
		}
		if json.Unmarshal(r.Data, &f) != nil {
			return
		}
		if s := d.source(f.Source); s != nil {
			s.LastError, s.LastErrorTime = f.Error, r.Time
		}
	case window.RecordWindowOpen:
		var o struct {
			Deadline time.Time `json:"deadline"`
			OpenedBy string    `json:"opened_by"`
		}
		_ = json.Unmarshal(r.Data, &o)
		d.status.LastWindow = &WindowStatus{Start: r.Time, End: o.Deadline, OpenedBy: o.OpenedBy}
	case window.RecordWindowClose:
		var c struct {
			Reason string `json:"reason"`
			Error  string `json:"error"`
		}
		_ = json.Unmarshal(r.Data, &c)
		if w := d.status.LastWindow; w != nil && w.Closed.IsZero() {
			w.Closed, w.Result, w.Error = r.Time, c.Reason, c.Error
		}
	case RecordPullSkipped:
		var s struct {
			Start time.Time `json:"window_start"`
			End   time.Time `json:"window_end"`
			By    string    `json:"opened_by"`
		}
		_ = json.Unmarshal(r.Data, &s)
		d.status.LastWindow = &WindowStatus{Start: s.Start, End: s.End, OpenedBy: s.By, Closed: r.Time,
			Result: ReasonSkipped, Error: r.Message}
	}
}

// record takes the results of a window's pulls into the status.
func (d *Daemon) record(results []pull.Result) {
	now := d.o.Clock()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range results {
		s := d.source(r.Source)
		if s == nil {
			continue
		}
		if r.Err != nil {
			s.LastError, s.LastErrorTime = r.Err.Error(), now
			continue
		}
		if r.Snapshot != nil {
			s.LastSnapshotID, s.LastSnapshotTime = r.Snapshot.ID, r.Snapshot.Time
		}
		s.LastError, s.LastErrorTime = "", time.Time{}
	}
}

// source returns the status of the configured source name; d.mu held.
func (d *Daemon) source(name string) *SourceStatus {
	for i := range d.status.Sources {
		if d.status.Sources[i].Name == name {
			return &d.status.Sources[i]
		}
	}
	return nil
}

// statfs reports the bytes free to unprivileged users and the size of the
// filesystem holding dir.
func statfs(dir string) (free, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}
