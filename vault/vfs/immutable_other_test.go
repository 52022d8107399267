//go:build !linux

package vfs_test

import "testing"

func immutableSupported(t *testing.T, dir string) bool { return false }
