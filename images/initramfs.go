package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/mkuimage/uimage/builder"
	"github.com/u-root/mkuimage/uimage/initramfs"
	"github.com/u-root/uio/llog"

	"drawbridge/boot"
	"drawbridge/boot/kmod"
)

// InitramfsConfig says what goes into the initramfs.
type InitramfsConfig struct {
	Repo  string // repository root
	Out   string // the .cpio.zst to write
	Debug bool
	// Release and ModulesDir are the kernel's release and its module
	// directory on the build machine.
	Release, ModulesDir string
	Log                 io.Writer
}

// Packages built into the image, relative to the repository root.
var (
	initPackage   = "cmd/drawbridge-init"
	vaultPackages = []string{"cmd/drawbridge"}
	// debugTools are u-root's commands added to the debug image: the
	// shell, and enough to look around with.
	debugTools = []string{
		"github.com/u-root/u-root/cmds/core/gosh",
		"github.com/u-root/u-root/cmds/core/cat",
		"github.com/u-root/u-root/cmds/core/dmesg",
		"github.com/u-root/u-root/cmds/core/ls",
		"github.com/u-root/u-root/cmds/core/mount",
		"github.com/u-root/u-root/cmds/core/ps",
	}
	// debugModules are kernel modules only the debug image carries, which
	// PID 1 does not load (it loads boot.Modules): loop, for the benchmark
	// that restores to loop-mounted drive images inside the VM (its test
	// binary loads it).
	debugModules = []string{"loop"}
)

// osRelease identifies the system, in the initramfs and in the unified
// kernel image.
const osRelease = `NAME="Drawbridge"
ID=drawbridge
PRETTY_NAME="Drawbridge backup vault"
HOME_URL="https://github.com/drawbridge"
`

// BuildInitramfs builds the initramfs with u-root's image builder.
func BuildInitramfs(ctx context.Context, cfg InitramfsConfig) error {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	repo, err := filepath.Abs(cfg.Repo)
	if err != nil {
		return err
	}
	ix, err := kmod.Parse(os.DirFS(cfg.ModulesDir))
	if err != nil {
		return fmt.Errorf("modules of kernel %s: %w", cfg.Release, err)
	}
	modules := boot.Modules
	if cfg.Debug {
		modules = append(slices.Clip(modules), debugModules...)
	}
	plan := ix.Resolve(modules...)
	for _, m := range plan.Missing {
		fmt.Fprintf(cfg.Log, "images: warning: module %s is not in kernel %s\n", m, cfg.Release)
	}
	tools, err := externalRecords(ExternalTools)
	if err != nil {
		return fmt.Errorf("external tools: %w", err)
	}
	base, err := baseArchive(cfg.Release, ix.Subset(plan.Load), tools)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "drawbridge-initramfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	env := golang.Default(golang.DisableCGO(), golang.WithGOOS("linux"), golang.WithGOARCH("amd64"), golang.WithWorkingDir(repo))
	var tags []string
	if cfg.Debug {
		tags = append(tags, "debugshell")
	}
	var pkgs []string
	for _, p := range append([]string{initPackage}, vaultPackages...) {
		pkgs = append(pkgs, filepath.Join(repo, p))
	}
	mods := []uimage.Modifier{
		uimage.WithReplaceEnv(env),
		uimage.WithTempDir(tmp),
		uimage.WithBaseArchive(base),
		uimage.WithSkipLDD(),
		uimage.WithCommands(nil, goBuilder{tags: tags, log: cfg.Log}, pkgs...),
		uimage.WithInit(path.Base(initPackage)),
		uimage.WithOutput(&zstdCPIO{path: cfg.Out}),
	}
	if cfg.Debug {
		// goshliner: gosh's plain line editor, which works on a serial
		// console; its default editor asks the terminal for its colours
		// and waits for an answer a serial line never gives.
		mods = append(mods, uimage.WithCommands(nil, goBuilder{tags: []string{"goshliner"}, log: cfg.Log}, debugTools...))
	}
	for _, f := range plan.Load {
		mods = append(mods, uimage.WithFiles(filepath.Join(cfg.ModulesDir, f)+":"+path.Join("lib/modules", cfg.Release, f)))
	}
	l := llog.New(slog.LevelWarn, func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "images: u-root: "+format+"\n", args...)
	})
	if err := uimage.Create(l, mods...); err != nil {
		return err
	}
	return nil
}

// baseArchive holds what is not built by the go command: the directories,
// the console device the kernel opens for /init before anything is
// mounted, os-release, the module index for the modules in the image, and
// extra (the external tools and their libraries).
func baseArchive(release string, index map[string][]byte, extra []cpio.Record) (*cpio.Archive, error) {
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("data", 0o755),
		cpio.Directory("dev", 0o755),
		cpio.Directory("etc", 0o755),
		cpio.Directory("lib", 0o755),
		cpio.Directory("lib/modules", 0o755),
		cpio.Directory("lib/modules/"+release, 0o755),
		cpio.Directory("proc", 0o755),
		cpio.Directory("run", 0o755),
		cpio.Directory("sys", 0o755),
		cpio.Directory("tmp", 0o1777),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.StaticFile("etc/os-release", osRelease, 0o444),
	}
	var names []string
	for name := range index {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		recs = append(recs, cpio.StaticFile(path.Join("lib/modules", release, name), string(index[name]), 0o444))
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Name] = true
	}
	for _, r := range extra {
		if !seen[r.Name] {
			seen[r.Name] = true
			recs = append(recs, r)
		}
	}
	return cpio.ArchiveFromRecords(recs)
}

// goBuilder builds Go commands for u-root's image builder with the go
// command's build cache (u-root's own binary builder passes -a, rebuilding
// the standard library for every image) and with inlining on (it turns it
// off to save space; the vault hashes and compresses, and wants the speed).
// The binaries are reproducible: -trimpath, no build id, no VCS stamp.
type goBuilder struct {
	tags []string
	log  io.Writer
}

func (goBuilder) DefaultBinaryDir() string { return "bin" }

func (b goBuilder) Build(_ *llog.Logger, af *initramfs.Files, o builder.Opts) error {
	// The builder's directory becomes the archive's root: make it 0755,
	// not the 0700 of a fresh temporary directory.
	if err := os.Chmod(o.TempDir, 0o755); err != nil {
		return err
	}
	dir := filepath.Join(o.TempDir, o.BinaryDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", dir + string(filepath.Separator)}
	if len(b.tags) > 0 {
		args = append(args, "-tags="+strings.Join(b.tags, ","))
	}
	args = append(args, o.Packages...)
	cmd := exec.Command("go", args...)
	cmd.Dir = o.Env.Dir
	cmd.Env = append(os.Environ(), o.Env.Env()...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = b.log, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, stderr.Bytes())
	}
	return af.AddFile(o.TempDir, "")
}

// zstdCPIO writes the archive as zstd-compressed newc cpio, which the
// kernel unpacks itself (CONFIG_RD_ZSTD). One encoder thread and fixed
// options make the compressed bytes a function of the archive alone.
type zstdCPIO struct {
	path string
}

func (z *zstdCPIO) OpenWriter() (initramfs.Writer, error) {
	f, err := os.Create(z.path + ".tmp")
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(f,
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(8<<20),
		zstd.WithEncoderCRC(true))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &zstdWriter{RecordWriter: cpio.Newc.Writer(enc), enc: enc, f: f, path: z.path}, nil
}

type zstdWriter struct {
	cpio.RecordWriter
	enc  *zstd.Encoder
	f    *os.File
	path string
}

func (w *zstdWriter) Finish() error {
	err := errors.Join(cpio.WriteTrailer(w), w.enc.Close(), w.f.Close())
	if err != nil {
		os.Remove(w.f.Name())
		return err
	}
	return os.Rename(w.f.Name(), w.path)
}

// Entry is one file in an initramfs.
type Entry struct {
	Name string
	Mode uint64 // type and permission bits, as in cpio
	Size uint64
}

// List reads the names, modes and sizes in a zstd-compressed cpio archive.
func List(initramfsPath string) ([]Entry, error) {
	f, err := os.Open(initramfsPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec, err := zstd.NewReader(f, zstd.WithDecoderMaxMemory(1<<30))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	raw, err := io.ReadAll(dec)
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", initramfsPath, err)
	}
	rr := cpio.Newc.Reader(bytes.NewReader(raw))
	var entries []Entry
	for {
		r, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", initramfsPath, err)
		}
		if r.Name == cpio.Trailer {
			return entries, nil
		}
		entries = append(entries, Entry{Name: r.Name, Mode: r.Mode, Size: r.FileSize})
	}
}
