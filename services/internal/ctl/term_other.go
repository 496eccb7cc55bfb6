//go:build !linux

package ctl

import "os"

// readPasswordTTY is only implemented on Linux; elsewhere passwords come from --password-stdin.
func readPasswordTTY(*os.File) (string, bool, error) { return "", false, nil }
