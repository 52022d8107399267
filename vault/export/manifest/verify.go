package manifest

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"drawbridge/vault/seal"
)

// Result is what Verify found.
type Result struct {
	Manifest    *Manifest // nil when there is no readable MANIFEST
	Fingerprint string    // of the public key in the MANIFEST
	Problems    []string  // each names what is wrong; empty when the export is valid
	NotExported []string  // entries the exporter could not write, with why
	Files       int64     // files checked
	Bytes       int64     // content bytes hashed
}

// OK reports whether the export is complete, signed and unchanged.
func (r *Result) OK() bool { return len(r.Problems) == 0 && r.Manifest != nil }

// Verify checks the export in dir (the drawbridge-export directory): the
// MANIFEST's signature by the key it names (and, when key is not empty, that
// the key has that fingerprint), then every entry under files/ against it,
// and that files/ holds nothing else. The walk never follows a symlink.
// The error is for a dir that cannot be read at all; everything found wrong
// with the export is in Result.Problems.
func Verify(dir, key string) (*Result, error) { return verify(dir, key, true) }

// VerifyLayout checks everything Verify checks but the content of the
// files: the MANIFEST's signature, and that files/ holds every entry with
// its type and size and nothing else. It reads no file, so it is quick;
// it is for an export whose files were just read back from the drive
// against what was written (vault/export does that before signing), to
// check the drive, mounted again, as another machine will see it.
func VerifyLayout(dir, key string) (*Result, error) { return verify(dir, key, false) }

func verify(dir, key string, content bool) (*Result, error) {
	r := &Result{}
	mb, err := readCapped(filepath.Join(dir, Name), MaxManifest)
	if errors.Is(err, fs.ErrNotExist) {
		r.Problems = append(r.Problems, "incomplete export: no MANIFEST (the export was interrupted, or this is not an export directory)")
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", Name, err)
	}
	m, err := Parse(mb)
	if err != nil {
		if errors.Is(err, ErrIncomplete) {
			r.Problems = append(r.Problems, err.Error())
		} else {
			r.Problems = append(r.Problems, fmt.Sprintf("manifest invalid: %v", err))
		}
		return r, nil
	}
	r.Manifest = m
	r.Fingerprint = seal.Fingerprint(m.PublicKey)
	sb, err := readCapped(filepath.Join(dir, SigName), MaxSig)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Problems = append(r.Problems, "incomplete export: no MANIFEST.sig")
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", SigName, err)
	default:
		sig, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sb)))
		if derr != nil || !seal.Verify(m.PublicKey, Domain, mb, sig) {
			r.Problems = append(r.Problems, "manifest signature invalid: MANIFEST or MANIFEST.sig was changed, or signed by another key")
		}
	}
	if m.Identity != r.Fingerprint {
		r.Problems = append(r.Problems, fmt.Sprintf("manifest invalid: it names key fingerprint %s but holds a key with fingerprint %s", m.Identity, r.Fingerprint))
	}
	if key != "" && normalize(key) != normalize(r.Fingerprint) {
		r.Problems = append(r.Problems, fmt.Sprintf("manifest signed by key %s, not by the required key %s", r.Fingerprint, key))
	}
	r.checkFiles(filepath.Join(dir, FilesDir), content)
	return r, nil
}

func normalize(fp string) string {
	return strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(fp))
}

func readCapped(name string, max int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return b, nil
}

func (r *Result) checkFiles(root string, content bool) {
	want := map[string]*Entry{}
	for i := range r.Manifest.Entries {
		e := &r.Manifest.Entries[i]
		if e.NotExported != "" {
			r.NotExported = append(r.NotExported, fmt.Sprintf("%s (%s)", Escape(e.Path), e.NotExported))
		}
		if e.OnDisk() {
			want[e.Path] = e
		}
	}
	seen := map[string]bool{}
	// Problems are reported in the order of the walk; a regular file's
	// content is hashed later, by a few workers at once, into its slot.
	var slots []string
	var files []contentCheck
	problem := func(msg string) { slots = append(slots, msg) }
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			rel := relOf(root, p)
			problem(fmt.Sprintf("unreadable: %s: %v", Escape(rel), err))
			seen[rel] = true
			return nil
		}
		if p == root {
			return nil
		}
		rel := relOf(root, p)
		e, ok := want[rel]
		if !ok {
			problem("extra: " + Escape(rel))
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		seen[rel] = true
		if (e.Type == TypeFile || e.Type == TypeHardlink) && d.Type().IsRegular() {
			files = append(files, contentCheck{slot: len(slots), path: p, rel: rel, e: e})
			problem("")
			return nil
		}
		if msg := check(p, d, e); msg != "" {
			problem(fmt.Sprintf("changed: %s (%s)", Escape(rel), msg))
			if d.IsDir() {
				return fs.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("incomplete export: cannot read %s: %v", FilesDir, err))
		return
	}
	r.hashFiles(files, slots, content)
	for _, msg := range slots {
		if msg != "" {
			r.Problems = append(r.Problems, msg)
		}
	}
	var missing []string
	for p := range want {
		if !seen[p] && !underMissing(p, seen, want) {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	for _, p := range missing {
		r.Problems = append(r.Problems, "missing: "+Escape(p))
	}
}

// underMissing: p lies in a directory that is itself missing or was
// reported changed (not walked), so reporting p again adds nothing.
func underMissing(p string, seen map[string]bool, want map[string]*Entry) bool {
	for i := strings.LastIndexByte(p, '/'); i > 0; i = strings.LastIndexByte(p[:i], '/') {
		if _, ok := want[p[:i]]; ok && !seen[p[:i]] {
			return true
		}
	}
	return false
}

func relOf(root, p string) string {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return filepath.ToSlash(p)
	}
	return filepath.ToSlash(rel)
}

// contentCheck is a regular file whose content is to be checked against
// its entry; slot is where its problem goes.
type contentCheck struct {
	slot      int
	path, rel string
	e         *Entry
}

// hashWorkers is how many files are hashed at once: enough for the cores
// of a small machine, few enough not to make a slow drive seek.
const hashWorkers = 4

// hashFiles checks the content of files, several at once, and puts what is
// wrong with each into its slot.
func (r *Result) hashFiles(files []contentCheck, slots []string, content bool) {
	next := make(chan int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(hashWorkers, runtime.GOMAXPROCS(0), len(files)) {
		wg.Go(func() {
			for i := range next {
				f := files[i]
				n, msg := checkContent(f.path, f.e, content)
				mu.Lock()
				r.Files++
				r.Bytes += n
				if msg != "" {
					slots[f.slot] = fmt.Sprintf("changed: %s (%s)", Escape(f.rel), msg)
				}
				mu.Unlock()
			}
		})
	}
	for i := range files {
		next <- i
	}
	close(next)
	wg.Wait()
}

// checkContent compares a regular file's size and (when content is set)
// SHA-256 with its entry; it returns the bytes it hashed and "" when they
// match.
func checkContent(p string, e *Entry, content bool) (int64, string) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err.Error()
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err.Error()
	}
	if fi.Size() != e.Size {
		return 0, fmt.Sprintf("size %d, the manifest says %d", fi.Size(), e.Size)
	}
	if !content {
		return 0, ""
	}
	h := seal.NewSHA256()
	n, err := io.Copy(h, f)
	if err != nil {
		return n, "read: " + err.Error()
	}
	if n != e.Size {
		return n, fmt.Sprintf("read %d bytes, the manifest says %d", n, e.Size)
	}
	if hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
		return n, "sha256 differs"
	}
	return n, ""
}

// check compares one thing on the drive that is not a regular file's
// content with its entry; "" means it matches.
func check(p string, d fs.DirEntry, e *Entry) string {
	t := d.Type()
	switch e.Type {
	case TypeDir:
		if !d.IsDir() {
			return "not a directory"
		}
	case TypeSymlink:
		if t&fs.ModeSymlink == 0 {
			return "not a symlink"
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err.Error()
		}
		if target != e.Target && filepath.ToSlash(target) != e.Target {
			return "symlink target differs"
		}
	case TypeFile, TypeHardlink:
		if !t.IsRegular() {
			return "not a regular file"
		}
	}
	return ""
}
