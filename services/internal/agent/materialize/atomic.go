package materialize

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// tempMarker is part of every temporary file name, so that temps left behind by
// a crash can be recognised and removed (see NewWriter) without touching
// anything else in a directory the agent shares with the app.
const tempMarker = ".warden-tmp-"

// maxNameLen leaves room for the temp prefix and suffix under the usual
// 255-byte limit on a file name.
const maxNameLen = 200

// validName refuses anything that could make a write land outside the target
// directory or collide with the temp files of another write.
func validName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case len(name) > maxNameLen:
		return fmt.Errorf("file name %.32q… is longer than %d bytes", name, maxNameLen)
	case name == ".", strings.Contains(name, ".."):
		return fmt.Errorf("file name %q contains \"..\" or is \".\"", name)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("file name %q contains a path separator or NUL", name)
	case strings.Contains(name, tempMarker):
		return fmt.Errorf("file name %q contains the reserved marker %q", name, tempMarker)
	}
	return nil
}

// writeTemp writes data to a new temporary file in dir and returns its path.
// The file gets its final mode and group before any data is written, and is
// synced before it is closed, so a rename of it can never expose a file that
// is readable by the wrong people or whose content is not yet on disk. On
// error nothing is left behind.
func writeTemp(fsys fileSystem, dir, name string, data []byte, perm fs.FileMode, gid int) (string, error) {
	f, err := fsys.CreateTemp(dir, "."+name+tempMarker+"*")
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) (string, error) {
		_ = f.Close()
		_ = fsys.Remove(tmp)
		return "", err
	}
	if gid >= 0 {
		// Chown before Chmod: a chown by a non-root owner may clear mode bits.
		if err := f.Chown(-1, gid); err != nil {
			return fail(fmt.Errorf("set group of temporary file: %w", err))
		}
	}
	if err := f.Chmod(perm); err != nil {
		return fail(fmt.Errorf("set mode of temporary file: %w", err))
	}
	if _, err := f.Write(data); err != nil {
		return fail(fmt.Errorf("write temporary file: %w", err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("sync temporary file: %w", err))
	}
	if err := f.Close(); err != nil {
		_ = fsys.Remove(tmp)
		return "", fmt.Errorf("close temporary file: %w", err)
	}
	return tmp, nil
}

// WriteFile atomically replaces the file at path with data at exactly perm
// (the umask does not apply): readers see either the old or the new content,
// never a mix, and after a crash the file holds one of the two. The directory
// must exist; its mode is left alone.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return writeFile(osFS{}, path, data, perm)
}

func writeFile(fsys fileSystem, path string, data []byte, perm fs.FileMode) error {
	dir, name := filepath.Split(path)
	dir = filepath.Clean(dir)
	if err := validName(name); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := writeTemp(fsys, dir, name, data, perm.Perm(), -1)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := fsys.Rename(tmp, path); err != nil {
		_ = fsys.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename is only durable once the directory entry is.
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}

// CreateFile is WriteFile for a file that must not be replaced once it exists,
// such as a key: it fails with an error matching fs.ErrExist if path exists.
// The file appears complete or not at all (it is written aside and then
// hard-linked into place), so a crash never leaves a truncated key behind.
func CreateFile(path string, data []byte, perm fs.FileMode) error {
	return createFile(osFS{}, path, data, perm)
}

func createFile(fsys fileSystem, path string, data []byte, perm fs.FileMode) error {
	dir, name := filepath.Split(path)
	dir = filepath.Clean(dir)
	if err := validName(name); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	tmp, err := writeTemp(fsys, dir, name, data, perm.Perm(), -1)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	linkErr := fsys.Link(tmp, path)
	// The temp is only a staging name; the content lives on under path.
	removeErr := fsys.Remove(tmp)
	if linkErr != nil {
		return fmt.Errorf("create %s: %w", path, linkErr)
	}
	if removeErr != nil {
		return fmt.Errorf("create %s: remove temporary file: %w", path, removeErr)
	}
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("create %s: sync directory: %w", path, err)
	}
	return nil
}
