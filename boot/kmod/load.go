package kmod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Loader loads one module file into the kernel.
type Loader interface {
	Load(file string) error
}

var (
	// ErrLoaded is wrapped by Loader.Load when the module is already loaded.
	ErrLoaded = errors.New("already loaded")
	// ErrNoDevice is wrapped by Loader.Load when the module is not for
	// this machine: its init found no hardware or CPU feature it drives
	// (crc32c_intel on a CPU without SSE4.2).
	ErrNoDevice = errors.New("not for this machine")
)

// Kernel loads module files from Dir into the running kernel with
// finit_module(2): the kernel reads the file itself, so it can check the
// module's signature.
type Kernel struct {
	Dir string
}

// Load implements Loader.
func (k Kernel) Load(file string) error {
	f, err := os.Open(filepath.Join(k.Dir, file))
	if err != nil {
		return fmt.Errorf("load module %s: %w", Name(file), err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load module %s: %w", Name(file), ErrLoaded)
		}
		if errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("load module %s: %w", Name(file), ErrNoDevice)
		}
		return fmt.Errorf("load module %s: %w", Name(file), err)
	}
	return nil
}

// Result is the outcome of LoadAll.
type Result struct {
	Loaded   []string // modules loaded now
	Already  []string // modules that were loaded before
	NoDevice []string // modules not for this machine
	Failed   []error  // one error per module that would not load
}

// LoadAll loads every file of a plan in order. It goes on past a failure:
// a module that does not load costs only the devices that need it.
func LoadAll(l Loader, p Plan) Result {
	var r Result
	for _, f := range p.Load {
		err := l.Load(f)
		switch {
		case err == nil:
			r.Loaded = append(r.Loaded, Name(f))
		case errors.Is(err, ErrLoaded):
			r.Already = append(r.Already, Name(f))
		case errors.Is(err, ErrNoDevice):
			r.NoDevice = append(r.NoDevice, Name(f))
		default:
			r.Failed = append(r.Failed, err)
		}
	}
	return r
}
