//go:build !linux

package vfs

// Outside Linux there is no immutable flag to set: a sealed file is read-only.
func (o *osFS) seal(name string) error { return o.root.Chmod(name, 0o444) }

func (o *osFS) getImmutable(name string) (bool, error) {
	_, err := o.root.Stat(name)
	return false, err
}

func (o *osFS) renameNoReplace(oldname, newname string) error {
	return statThenRename(o, oldname, newname)
}
