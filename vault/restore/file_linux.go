package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"os"

	"golang.org/x/sys/unix"

	"drawbridge/vault/tree"
)

// fileJob is a regular file created by the walker, for a worker to fill.
type fileJob struct {
	f    *os.File
	e    *tree.Entry // the entry whose content and metadata it gets
	path string      // snapshot path, for damage
	rel  string      // path in the target, for errors
}

// file creates name in f and hands it to a worker. Creating it here, in walk
// order, means a later hardlink to it finds it in place; O_EXCL means
// nothing already at that name (a symlink, say) is ever opened.
func (r *restorer) file(f *frame, name string, e *tree.Entry, path string) error {
	rel := relPath(f.rel, name)
	h, err := f.dir.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if r.refused(path, err) {
			return nil
		}
		return fmt.Errorf("restore %q: %w", rel, err)
	}
	r.files.Add(1)
	select {
	case r.jobs <- fileJob{f: h, e: e, path: path, rel: rel}:
		return nil
	case <-r.ctx.Done():
		h.Close()
		return context.Cause(r.ctx)
	}
}

func (r *restorer) worker() {
	var buf []byte
	for job := range r.jobs {
		if r.ctx.Err() != nil {
			job.f.Close()
			continue
		}
		var err error
		buf, err = r.fill(job, buf)
		if cerr := job.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("restore %q: %w", job.rel, cerr)
		}
		if err != nil {
			r.fail(err)
		}
	}
}

// fileDamage collects what went wrong with one file's content.
type fileDamage struct {
	first error
	more  int
}

func (d *fileDamage) add(err error) {
	if d.first == nil {
		d.first = err
	} else {
		d.more++
	}
}

func (d *fileDamage) err() error {
	if d.more == 0 {
		return d.first
	}
	return fmt.Errorf("%w (and %d more faults)", d.first, d.more)
}

// fill writes a file's content chunk by chunk at its offsets, leaving holes
// for all-zero chunks and for chunks that could not be read, then sets its
// size and metadata. buf is the worker's chunk buffer, returned for reuse.
func (r *restorer) fill(job fileJob, buf []byte) ([]byte, error) {
	e := job.e
	var dmg fileDamage
	var off uint64
	var end uint64 // the file's size so far: the end of the last chunk written
	known := true  // off is where the next chunk starts
	fd := int(job.f.Fd())
	var h hash.Hash
	if r.opt.Hash != nil && r.opt.Written != nil {
		h = r.opt.Hash()
	}

	put := func(refs []tree.ChunkRef) error {
		for _, ref := range refs {
			if r.ctx.Err() != nil {
				return context.Cause(r.ctx)
			}
			if ref.Length == 0 || ref.Length > tree.MaxChunkLength {
				dmg.add(fmt.Errorf("%w: chunk %x has length %d", tree.ErrInvalid, ref.ID[:8], ref.Length))
				known = false
				return nil
			}
			p, err := r.src.Chunk(r.ctx, ref.ID, buf)
			if err != nil {
				if stop := r.stopped(); stop != nil {
					return stop
				}
				dmg.add(fmt.Errorf("chunk %x at offset %d: %w", ref.ID[:8], off, err))
				off += ref.Length
				continue
			}
			buf = p[:0]
			if uint64(len(p)) != ref.Length {
				dmg.add(fmt.Errorf("%w: chunk %x at offset %d has %d bytes, its entry says %d",
					ErrMismatch, ref.ID[:8], off, len(p), ref.Length))
				p = p[:min(uint64(len(p)), ref.Length)]
			}
			if h != nil {
				h.Write(p)
			}
			if !allZero(p) {
				if _, err := job.f.WriteAt(p, int64(off)); err != nil {
					return fmt.Errorf("restore %q: %w", job.rel, err)
				}
				end = off + uint64(len(p))
			}
			off += ref.Length
			r.bytes.Add(int64(ref.Length))
			if r.opt.Progress != nil {
				r.opt.Progress(int64(ref.Length))
			}
		}
		return nil
	}

	var err error
	switch e.Layout {
	case tree.LayoutInline:
		err = put(e.Chunks)
	case tree.LayoutIndirect:
		for _, id := range e.Lists {
			refs, lerr := r.src.List(r.ctx, id)
			if lerr != nil {
				if stop := r.stopped(); stop != nil {
					return buf, stop
				}
				// The rest of the content has no known offset.
				dmg.add(fmt.Errorf("chunk list %x: %w", id[:8], lerr))
				known = false
				break
			}
			if err = put(refs); err != nil || !known {
				break
			}
		}
	default:
		dmg.add(fmt.Errorf("%w: file layout %d", tree.ErrInvalid, e.Layout))
		known = false
	}
	if err != nil {
		return buf, err
	}
	if known && off != e.Size {
		dmg.add(fmt.Errorf("%w: chunk lengths add up to %d, size is %d", ErrMismatch, off, e.Size))
	}
	// Only a file ending in a hole (or damage) needs its size set; some
	// FUSE drivers of USB filesystems cannot truncate.
	if end != e.Size {
		if err := job.f.Truncate(int64(min(e.Size, 1<<62))); err != nil {
			if !errors.Is(err, unix.EFBIG) && !errors.Is(err, unix.EINVAL) {
				return buf, fmt.Errorf("restore %q: %w", job.rel, err)
			}
			dmg.add(fmt.Errorf("set size %d: %w", e.Size, err))
		}
	}
	if dmg.first != nil {
		r.damage(job.path, dmg.err())
	}
	if err := r.fdMeta(fd, e, job.path, true); err != nil {
		return buf, fmt.Errorf("restore %q: %w", job.rel, err)
	}
	if h != nil && dmg.first == nil {
		r.opt.Written(job.rel, int64(e.Size), h.Sum(nil))
	}
	return buf, nil
}

var zeros [64 << 10]byte

func allZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
