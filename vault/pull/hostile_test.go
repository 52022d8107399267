package pull

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// hostileServerArg, as the test binary's first argument, makes it an SFTP
// server on its standard input and output that answers as a hostile (or
// broken) source would; the second argument says how.
const hostileServerArg = "hostile-sftp-server"

func TestMain(m *testing.M) {
	// The hostile SFTP server of the tests runs as a source's forced
	// command: this very binary, started by sshd.
	if len(os.Args) >= 3 && os.Args[1] == hostileServerArg {
		os.Exit(hostileServer(os.Args[2]))
	}
	os.Exit(m.Run())
}

// hostileServer serves /data; mode decides what is in it:
//
//	ok          a.txt, link -> a.txt, sub/b.txt, and "." and ".." entries
//	slash       a name "/"
//	nul         a name with NUL
//	sub         a name "x/y"
//	dotdot      a name "../../etc"
//	empty       an empty name
//	dup         the name a.txt twice
//	many        3000 entries
//	deep        a directory d holding d holding d…
//	unreadable  a.txt cannot be opened
//	badlink     a symlink target with NUL
//	stall       reading a.txt never answers
func hostileServer(mode string) int {
	h := &hostileFS{mode: mode}
	srv := sftp.NewRequestServer(stdio{}, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h})
	if err := srv.Serve(); err != nil && err != io.EOF {
		return 1
	}
	return 0
}

type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) Close() error                { os.Stdin.Close(); return os.Stdout.Close() }

type hostileFS struct{ mode string }

type info struct {
	name string
	mode fs.FileMode
	data string
}

func (i info) Name() string       { return i.name }
func (i info) Size() int64        { return int64(len(i.data)) }
func (i info) Mode() fs.FileMode  { return i.mode }
func (i info) ModTime() time.Time { return time.Unix(1600000000, 0) }
func (i info) IsDir() bool        { return i.mode.IsDir() }
func (i info) Sys() any           { return nil }

var (
	hostileDir  = info{name: "data", mode: fs.ModeDir | 0o755}
	hostileFile = info{name: "a.txt", mode: 0o644, data: "hello from a hostile source\n"}
)

// children lists the directory p.
func (h *hostileFS) children(p string) ([]fs.FileInfo, bool) {
	file := func(name string) info { f := hostileFile; f.name = name; return f }
	if p == "/data/sub" && h.mode == "ok" {
		return []fs.FileInfo{file("b.txt")}, true
	}
	if h.mode == "deep" && strings.HasPrefix(p, "/data") {
		return []fs.FileInfo{info{name: "d", mode: fs.ModeDir | 0o755}}, true
	}
	if p != "/data" {
		return nil, false
	}
	switch h.mode {
	case "ok":
		return []fs.FileInfo{info{name: ".", mode: fs.ModeDir | 0o755}, info{name: "..", mode: fs.ModeDir | 0o755},
			file("a.txt"), info{name: "link", mode: fs.ModeSymlink | 0o777}, info{name: "sub", mode: fs.ModeDir | 0o750}}, true
	case "slash":
		return []fs.FileInfo{file("a.txt"), file("/")}, true
	case "nul":
		return []fs.FileInfo{file("a\x00b")}, true
	case "sub":
		return []fs.FileInfo{file("x/y")}, true
	case "dotdot":
		return []fs.FileInfo{file("../../etc")}, true
	case "empty":
		return []fs.FileInfo{file("")}, true
	case "dup":
		return []fs.FileInfo{file("a.txt"), file("a.txt")}, true
	case "many":
		var out []fs.FileInfo
		for i := range 3000 {
			out = append(out, file("f"+strconv.Itoa(i)))
		}
		return out, true
	case "unreadable", "stall":
		return []fs.FileInfo{file("a.txt"), file("b.txt")}, true
	case "badlink":
		return []fs.FileInfo{info{name: "link", mode: fs.ModeSymlink | 0o777}}, true
	}
	return nil, false
}

func (h *hostileFS) lookup(p string) (fs.FileInfo, bool) {
	p = path.Clean(p)
	if p == "/data" {
		return hostileDir, true
	}
	kids, ok := h.children(path.Dir(p))
	if !ok {
		return nil, false
	}
	for _, k := range kids {
		if k.Name() == path.Base(p) {
			return k, true
		}
	}
	return nil, false
}

func (h *hostileFS) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		kids, ok := h.children(path.Clean(r.Filepath))
		if !ok {
			return nil, os.ErrNotExist
		}
		return lister(kids), nil
	case "Stat", "Lstat":
		fi, ok := h.lookup(r.Filepath)
		if !ok {
			return nil, os.ErrNotExist
		}
		return lister{fi}, nil
	}
	return nil, os.ErrPermission
}

func (h *hostileFS) Lstat(r *sftp.Request) (sftp.ListerAt, error) { return h.Filelist(r) }

func (h *hostileFS) Readlink(p string) (string, error) {
	if h.mode == "badlink" {
		return "a\x00b", nil
	}
	return "a.txt", nil
}

func (h *hostileFS) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	if h.mode == "unreadable" && path.Base(r.Filepath) == "a.txt" {
		return nil, os.ErrPermission
	}
	if h.mode == "stall" {
		return stallReader{}, nil
	}
	return bytes.NewReader([]byte(hostileFile.data)), nil
}

type stallReader struct{}

func (stallReader) ReadAt([]byte, int64) (int, error) { select {} }

func (h *hostileFS) Filewrite(*sftp.Request) (io.WriterAt, error) { return nil, os.ErrPermission }
func (h *hostileFS) Filecmd(*sftp.Request) error                  { return os.ErrPermission }

type lister []fs.FileInfo

func (l lister) ListAt(out []fs.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	if int(off)+n == len(l) {
		return n, io.EOF
	}
	return n, nil
}
