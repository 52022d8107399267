// Package images assembles the appliance's bootable artifacts (DESIGN.md
// §6) from the repository and the build machine's Debian packages:
//
//   - vmlinuz: Debian's stock kernel (linux-image-amd64), copied;
//   - initramfs.cpio.zst: the userland, built with u-root's image builder —
//     PID 1 (cmd/drawbridge-init) as /init, /bin/drawbridge, the kernel
//     modules PID 1 loads (boot.Modules and what they need) with an index
//     covering only them, the build machine's mke2fs, mkfs.vfat and
//     mkfs.exfat in /sbin (ExternalTools) with the shared libraries their
//     DT_NEEDED entries name and the dynamic loader, and nothing else: no
//     shell, no remote login;
//   - drawbridge.img: a GPT disk whose EFI system partition holds a unified
//     kernel image (systemd's EFI stub, the kernel, the initramfs and the
//     kernel command line in one PE file) at the removable-media path
//     /EFI/BOOT/BOOTX64.EFI, so that any UEFI firmware boots it.
//
// Builds are reproducible: the same source, kernel and tools give the same
// bytes. Go binaries are built with -trimpath, no build id and no VCS
// stamp; every archive record has mtime 0, owner 0 and no inode number;
// the disk's GUIDs, the FAT volume id and every timestamp on the disk are
// fixed (SOURCE_DATE_EPOCH).
package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Artifact names in the output directory.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "initramfs.cpio.zst"
	DiskFile      = "drawbridge.img"
)

// DefaultCmdline is the kernel command line of the unified kernel image:
// the kernel writes to the screen and to the serial port, and
// /dev/console is the serial port (the last console=). PID 1 writes to
// both and takes answers from either.
const DefaultCmdline = "console=tty0 console=ttyS0"

// Config says what to build and from what.
type Config struct {
	// Repo is the repository root (where go.mod is).
	Repo string
	// Out is the output directory.
	Out string
	// Debug builds the debug image: u-root's gosh shell on the console
	// and a few u-root tools to look around with.
	Debug bool
	// Kernel is the kernel to use; empty means the newest /boot/vmlinuz-*.
	Kernel string
	// ModulesRoot holds the module directories (default /lib/modules).
	ModulesRoot string
	// Stub is systemd's EFI stub (default: systemd-boot-efi's).
	Stub string
	// Cmdline is the kernel command line in the unified image.
	Cmdline string
	// Epoch is the time stamped wherever a format insists on one.
	Epoch time.Time
	// SkipDisk builds only the kernel and the initramfs.
	SkipDisk bool
	// Log receives progress lines.
	Log io.Writer
}

// Artifacts are the paths of what Build made.
type Artifacts struct {
	Kernel, Initramfs, Disk string
	// Release is the kernel's release ("6.1.0-27-amd64").
	Release string
}

// Defaults filled in by Build.
const (
	defaultModulesRoot = "/lib/modules"
	defaultStub        = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
)

// Build makes every artifact in cfg.Out.
func Build(ctx context.Context, cfg Config) (*Artifacts, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.ModulesRoot == "" {
		cfg.ModulesRoot = defaultModulesRoot
	}
	if cfg.Stub == "" {
		cfg.Stub = defaultStub
	}
	if cfg.Cmdline == "" {
		cfg.Cmdline = DefaultCmdline
	}
	if cfg.Epoch.IsZero() {
		cfg.Epoch = time.Unix(0, 0)
	}
	if missing := Missing(BuildRequirements(cfg.SkipDisk)); len(missing) > 0 {
		return nil, MissingError(missing)
	}
	kernel, release, err := findKernel(cfg.Kernel)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	a := &Artifacts{
		Kernel:    filepath.Join(cfg.Out, KernelFile),
		Initramfs: filepath.Join(cfg.Out, InitramfsFile),
		Release:   release,
	}
	step := func(what string, fn func() error) error {
		start := time.Now()
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		fmt.Fprintf(cfg.Log, "images: %s (%.1fs)\n", what, time.Since(start).Seconds())
		return nil
	}
	if err := step("kernel "+release, func() error { return copyFile(kernel, a.Kernel) }); err != nil {
		return nil, err
	}
	err = step(InitramfsFile, func() error {
		return BuildInitramfs(ctx, InitramfsConfig{
			Repo:       cfg.Repo,
			Out:        a.Initramfs,
			Debug:      cfg.Debug,
			Release:    release,
			ModulesDir: filepath.Join(cfg.ModulesRoot, release),
			Log:        cfg.Log,
		})
	})
	if err != nil {
		return nil, err
	}
	if cfg.SkipDisk {
		return a, nil
	}
	a.Disk = filepath.Join(cfg.Out, DiskFile)
	err = step(DiskFile, func() error {
		return BuildDisk(ctx, DiskConfig{
			Stub:      cfg.Stub,
			Kernel:    a.Kernel,
			Initramfs: a.Initramfs,
			Cmdline:   cfg.Cmdline,
			Epoch:     cfg.Epoch,
			Out:       a.Disk,
		})
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// findKernel returns the kernel to use and its release, taken from its name
// (vmlinuz-RELEASE): the given one, else the newest in /boot.
func findKernel(kernel string) (path, release string, err error) {
	if kernel == "" {
		matches, _ := filepath.Glob("/boot/vmlinuz-*")
		if len(matches) == 0 {
			return "", "", MissingError(Missing([]Requirement{reqKernel}))
		}
		sort.Slice(matches, func(i, j int) bool { return versionLess(matches[i], matches[j]) })
		kernel = matches[len(matches)-1]
	}
	if _, err := os.Stat(kernel); err != nil {
		return "", "", fmt.Errorf("kernel: %w", err)
	}
	release = strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	if release == filepath.Base(kernel) || release == "" {
		return "", "", fmt.Errorf("kernel %s: cannot tell its release from its name (want vmlinuz-RELEASE)", kernel)
	}
	return kernel, release, nil
}

// versionLess orders "vmlinuz-6.1.0-9-amd64" before "vmlinuz-6.1.0-27-amd64".
func versionLess(a, b string) bool {
	fa, fb := strings.FieldsFunc(a, notDigit), strings.FieldsFunc(b, notDigit)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		na, _ := strconv.Atoi(fa[i])
		nb, _ := strconv.Atoi(fb[i])
		if na != nb {
			return na < nb
		}
	}
	return len(fa) < len(fb)
}

func notDigit(r rune) bool { return r < '0' || r > '9' }

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeFileAtomic(dst, b, 0o644)
}

// writeFileAtomic writes a file in full or not at all.
func writeFileAtomic(name string, b []byte, perm os.FileMode) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, perm); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// Requirement is something on the build machine that building or booting
// the image needs, and the Debian package that provides it.
type Requirement struct {
	// Path is an absolute file path, or a command looked up in PATH.
	Path    string
	Package string
}

var (
	reqKernel = Requirement{"/boot/vmlinuz-*", "linux-image-amd64"}
	reqGo     = Requirement{"go", "Go in /usr/local/go"}
	reqDisk   = []Requirement{
		{defaultStub, "systemd-boot-efi"},
		{"objcopy", "binutils"},
		{"mkfs.vfat", "dosfstools"},
		{"mmd", "mtools"},
		{"mcopy", "mtools"},
		{"sgdisk", "gdisk"},
	}
	reqQEMU = Requirement{"qemu-system-x86_64", "qemu-system-x86"}
	// OVMFCode and OVMFVars are the UEFI firmware and its variable store
	// template for a q35 machine.
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	reqOVMF  = Requirement{OVMFCode, "ovmf"}
)

// BuildRequirements is what Build needs.
func BuildRequirements(skipDisk bool) []Requirement {
	r := append([]Requirement{reqGo, reqKernel}, ExternalTools...)
	if !skipDisk {
		r = append(r, reqDisk...)
	}
	return r
}

// BootRequirements is what booting the image in QEMU needs (uefi: from the
// disk image, with OVMF).
func BootRequirements(uefi bool) []Requirement {
	r := []Requirement{reqQEMU}
	if uefi {
		r = append(r, reqOVMF)
	}
	return r
}

// Missing returns the requirements not met on this machine.
func Missing(reqs []Requirement) []Requirement {
	var missing []Requirement
	for _, r := range reqs {
		switch {
		case strings.Contains(r.Path, "*"):
			if m, _ := filepath.Glob(r.Path); len(m) == 0 {
				missing = append(missing, r)
			}
		case filepath.IsAbs(r.Path):
			if _, err := os.Stat(r.Path); err != nil {
				missing = append(missing, r)
			}
		default:
			if _, err := exec.LookPath(r.Path); err != nil {
				missing = append(missing, r)
			}
		}
	}
	return missing
}

// ErrMissing is wrapped by the error of a build that lacks a tool.
var ErrMissing = errors.New("missing on this machine")

// MissingError says what is missing and which packages to install.
func MissingError(missing []Requirement) error {
	var what []string
	pkgs := map[string]bool{}
	var list []string
	for _, r := range missing {
		what = append(what, r.Path)
		if !pkgs[r.Package] {
			pkgs[r.Package] = true
			list = append(list, r.Package)
		}
	}
	return fmt.Errorf("%w: %s (install: %s; bash .ci/install installs them all)", ErrMissing, strings.Join(what, ", "), strings.Join(list, " "))
}
