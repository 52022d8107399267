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

// LoadAll loads the files of a plan, up to workers at a time, each once
// the modules it needs have been tried. It goes on past a failure: a
// module that does not load costs only the devices that need it (and the
// modules that need it, which then fail to load and say why). Loading in
// parallel matters: some modules probe their hardware for a long time in
// their init (ahci waits for its SATA links).
func LoadAll(l Loader, p Plan, workers int) Result {
	workers = max(workers, 1)
	index := map[string]int{}
	for i, f := range p.Load {
		index[f] = i
	}
	waiting := make([]int, len(p.Load)) // how many needed modules are not yet tried
	dependents := make([][]int, len(p.Load))
	for i, f := range p.Load {
		for _, n := range p.Needs[f] {
			if j, ok := index[n]; ok && j != i {
				waiting[i]++
				dependents[j] = append(dependents[j], i)
			}
		}
	}
	errs := make([]error, len(p.Load))
	todo := make(chan int, len(p.Load))
	done := make(chan int, len(p.Load))
	for i := range p.Load {
		if waiting[i] == 0 {
			todo <- i
		}
	}
	for range workers {
		go func() {
			for i := range todo {
				errs[i] = l.Load(p.Load[i])
				done <- i
			}
		}()
	}
	for range p.Load {
		i := <-done
		for _, d := range dependents[i] {
			if waiting[d]--; waiting[d] == 0 {
				todo <- d
			}
		}
	}
	close(todo)

	var r Result
	for i, f := range p.Load {
		switch err := errs[i]; {
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
