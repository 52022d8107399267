//go:build !linux

package vfstest

func clearImmutable(p string) error { return nil }
