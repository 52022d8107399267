package agent

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"drawbridge/vault/agentproto"
	"drawbridge/vault/tree"
)

// node is a directory on the way from "/" to the roots, or a root.
type node struct {
	root     bool
	children map[string]*node
}

func rootTree(roots []string) *node {
	top := &node{children: map[string]*node{}}
	for _, r := range roots {
		n := top
		if r != "/" {
			for name := range strings.SplitSeq(r[1:], "/") {
				c := n.children[name]
				if c == nil {
					c = &node{children: map[string]*node{}}
					n.children[name] = c
				}
				n = c
			}
		}
		n.root = true
	}
	return top
}

// walk lists "/", the directories on the way to the roots and everything
// under the roots, then sends END. It returns only errors that end the
// conversation; what cannot be read is reported with WARN and left out.
func (s *session) walk(ctx context.Context) error {
	if err := s.visit(ctx, "/", rootTree(s.roots)); err != nil {
		return err
	}
	if err := s.w.send(agentproto.End{}); err != nil {
		return err
	}
	s.log.Info("walk done", "entries", s.nextID)
	return s.w.flush()
}

// visit lists p, on the way to the roots below n or a root itself.
func (s *session) visit(ctx context.Context, p string, n *node) error {
	e, st, err := s.capture(p)
	if err != nil {
		return s.warn(p, err.Error())
	}
	if n.root {
		return s.subtree(ctx, p, e, st)
	}
	if e.Kind != tree.Dir {
		return s.warn(p, fmt.Sprintf("a %v, not a directory: the roots under it are not walked", e.Kind))
	}
	id, sent, err := s.entry(ctx, p, e, st)
	if err != nil || !sent {
		return err
	}
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := s.visit(ctx, join(p, name), n.children[name]); err != nil {
			return err
		}
	}
	return s.w.send(agentproto.DirEnd{ID: id})
}

// subtree lists p, whose metadata is e and st, and everything under it.
func (s *session) subtree(ctx context.Context, p string, e tree.Entry, st tree.Stat) error {
	if e.Kind != tree.Dir {
		_, _, err := s.entry(ctx, p, e, st)
		return err
	}
	names, err := s.readDir(p, st)
	if err != nil {
		return s.warn(p, err.Error())
	}
	id, sent, err := s.entry(ctx, p, e, st)
	if err != nil || !sent {
		return err
	}
	for _, name := range names {
		c := join(p, name)
		if err := tree.ValidName(name); err != nil {
			if err := s.warn(c, "name not allowed in a snapshot"); err != nil {
				return err
			}
			continue
		}
		if len(c) > agentproto.MaxPath {
			if err := s.warn(c, fmt.Sprintf("path longer than %d bytes", agentproto.MaxPath)); err != nil {
				return err
			}
			continue
		}
		ce, cst, err := s.capture(c)
		if err != nil {
			if err := s.warn(c, err.Error()); err != nil {
				return err
			}
			continue
		}
		if err := s.subtree(ctx, c, ce, cst); err != nil {
			return err
		}
	}
	return s.w.send(agentproto.DirEnd{ID: id})
}

// capture reads p's metadata with lstat.
func (s *session) capture(p string) (tree.Entry, tree.Stat, error) {
	return tree.Capture(s.hostPath(p))
}

// readDir returns the names in directory p, sorted bytewise. The directory
// opened must be the one captured (st): one swapped in since is refused.
func (s *session) readDir(p string, st tree.Stat) ([]string, error) {
	fd, err := s.open(p, unix.O_DIRECTORY)
	if err != nil {
		return nil, fmt.Errorf("open directory: %w", err)
	}
	f := os.NewFile(uintptr(fd), s.hostPath(p))
	defer f.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return nil, fmt.Errorf("fstat directory: %w", err)
	}
	if uint64(fst.Dev) != st.Dev || fst.Ino != st.Ino {
		return nil, fmt.Errorf("replaced while it was listed")
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list directory: %w", err)
	}
	slices.Sort(names)
	return names, nil
}

// entry sends the ENTRY of p. A regular file first takes a slot, waiting
// while all are taken, and joins the files waiting for an answer. An entry
// that breaks the protocol's rules is reported with WARN instead (sent false).
func (s *session) entry(ctx context.Context, p string, e tree.Entry, st tree.Stat) (id uint64, sent bool, err error) {
	m := agentproto.Entry{
		ID:        s.nextID + 1,
		Path:      p,
		Kind:      uint8(e.Kind),
		Mode:      e.Mode,
		UID:       e.UID,
		GID:       e.GID,
		User:      e.User,
		Group:     e.Group,
		MtimeSec:  e.MtimeSec,
		MtimeNsec: e.MtimeNsec,
		Size:      e.Size,
		Dev:       st.Dev,
		Ino:       st.Ino,
		Nlink:     st.Nlink,
		CtimeSec:  st.CtimeSec,
		CtimeNsec: uint32(st.CtimeNsec),
		Target:    e.Target,
		Major:     e.Major,
		Minor:     e.Minor,
	}
	for _, x := range e.Xattrs {
		m.Xattrs = append(m.Xattrs, agentproto.Xattr{Name: x.Name, Value: x.Value})
	}
	if err := agentproto.Validate(m); err != nil {
		return 0, false, s.warn(p, fmt.Sprintf("cannot be listed: %v", err))
	}
	if e.Kind == tree.File {
		if err := s.takeSlot(ctx); err != nil {
			return 0, false, err
		}
		// Queued before the ENTRY is sent, so it is there when the answer comes.
		s.listed <- pending{
			id: m.ID, path: p, dev: st.Dev, ino: st.Ino, size: e.Size,
			mtime: unix.Timespec{Sec: e.MtimeSec, Nsec: int64(e.MtimeNsec)},
			ctime: unix.Timespec{Sec: st.CtimeSec, Nsec: st.CtimeNsec},
		}
	}
	if err := s.w.send(m); err != nil {
		return 0, false, err
	}
	s.nextID = m.ID
	return m.ID, true, nil
}

// takeSlot waits until fewer than MaxPending files are listed and not yet
// finished.
func (s *session) takeSlot(ctx context.Context) error {
	select {
	case s.slots <- struct{}{}:
		return nil
	default:
	}
	// The vault needs what was listed to answer.
	if err := s.w.flush(); err != nil {
		return err
	}
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *session) warn(p, msg string) error {
	s.log.Warn("left out", "path", p, "why", msg)
	return s.w.send(agentproto.Warn{
		Path:    truncate(strings.ReplaceAll(p, "\x00", ""), agentproto.MaxPath),
		Message: truncate(msg, agentproto.MaxMessage),
	})
}

func join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}
