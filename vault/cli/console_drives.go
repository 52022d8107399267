package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"drawbridge/hw/usb"
	"drawbridge/vault/admin"
	"drawbridge/vault/console"
	"drawbridge/vault/store"
)

// applianceMountDir is where the appliance's consoles mount a drive.
const applianceMountDir = "/run/drawbridge/usb"

// drivesAny says whether the console lists removable and loop devices too,
// not only drives on a USB bus: --drives-any or DRAWBRIDGE_DRIVES_ANY=1
// (hosted mode, tests with loop devices).
func drivesAny(c *call) bool {
	return c.args.has("drives-any") || c.env.Getenv("DRAWBRIDGE_DRIVES_ANY") == "1"
}

// consoleDrives is what the console's drive screens work with: the
// machine's drives, mounted under a directory of this process's own, the
// store to export from and journal to, and the configuration file an
// import replaces (configPath, "" when none). done removes the mount
// directory.
func consoleDrives(s *store.Store, dir, configPath string, guard *admin.Guard, anyDrive bool) (u *console.USBDrives, done func(), err error) {
	p := usb.Local()
	p.Any = anyDrive
	mountDir := applianceMountDir
	done = func() {}
	if !onAppliance() {
		mountDir, err = os.MkdirTemp("", "drawbridge-usb-")
		if err != nil {
			return nil, nil, fmt.Errorf("console: a directory to mount drives on: %w", err)
		}
		md := mountDir
		done = func() { os.Remove(md) }
	}
	if configPath != "" {
		if configPath, err = filepath.Abs(configPath); err != nil {
			return nil, nil, err
		}
	}
	u = &console.USBDrives{
		Ports:      p,
		MountDir:   mountDir,
		Store:      s,
		StoreDir:   dir,
		ConfigPath: configPath,
		Admin:      guard,
		Verifiers:  defaultVerifiers(),
	}
	if configPath != "" {
		u.Keys = func() (string, error) { return keysText(s, configPath) }
	}
	return u, done, nil
}
