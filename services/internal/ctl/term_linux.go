//go:build linux

package ctl

import (
	"os"

	"golang.org/x/sys/unix"
)

// readPasswordTTY reads one line from the terminal f with echo off. ok is false when f is not a
// terminal.
func readPasswordTTY(f *os.File) (line string, ok bool, err error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", false, nil
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	quiet.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", true, err
	}
	defer func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }()
	line, err = readLineUnbuffered(f)
	return line, true, err
}
