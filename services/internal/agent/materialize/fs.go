package materialize

import (
	"io/fs"
	"os"
)

// fileSystem is the narrow set of calls the atomic write path makes. It exists
// so tests can inject faults (disk full, read-only directory) even when they run
// as root, where permission bits would not stop a write.
type fileSystem interface {
	CreateTemp(dir, pattern string) (tempFile, error)
	Rename(oldpath, newpath string) error
	Link(oldname, newname string) error
	Remove(name string) error
	ReadFile(name string) ([]byte, error)
	Lstat(name string) (fs.FileInfo, error)
	SyncDir(dir string) error
}

// tempFile is the part of *os.File the write path uses.
type tempFile interface {
	Name() string
	Chmod(mode fs.FileMode) error
	Chown(uid, gid int) error
	Write(p []byte) (int, error)
	Sync() error
	Close() error
}

// osFS is the real file system.
type osFS struct{}

func (osFS) CreateTemp(dir, pattern string) (tempFile, error) {
	// os.CreateTemp opens with O_CREATE|O_EXCL and mode 0600, so nobody else can
	// open the file before its final mode is set.
	return os.CreateTemp(dir, pattern)
}

func (osFS) Rename(oldpath, newpath string) error   { return os.Rename(oldpath, newpath) }
func (osFS) Link(oldname, newname string) error     { return os.Link(oldname, newname) }
func (osFS) Remove(name string) error               { return os.Remove(name) }
func (osFS) ReadFile(name string) ([]byte, error)   { return os.ReadFile(name) }
func (osFS) Lstat(name string) (fs.FileInfo, error) { return os.Lstat(name) }

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}
