// Package materialize writes what the control plane pushes to a node —
// certificates, keys and the app's env file — onto disk, where the Webapp or
// Coreapp reads them.
//
// Every file is replaced atomically (temporary file in the same directory,
// mode set before any data, fsync, rename, fsync of the directory), so the app
// never reads a half-written key, and a crash leaves either the old or the new
// file. A set of files is applied as a unit as far as a POSIX file system
// allows: all new contents are written aside first, and only when every one of
// them is safely on disk are they renamed into place. Files whose content and
// mode are already right are not touched, so their mtime stays and inotify
// watchers in the app do not fire.
//
// Modes. Without a group, the directory is 0700, secret files 0600 and other
// files 0644: only the agent's user can reach anything. With a group (the
// group the app runs as, when the app runs as another user than the agent),
// the directory is 0750 and secret files 0640, both owned by that group: the
// app must be able to read its own private key, and the group is the narrowest
// grant that allows it. Nobody else can read a key in either case.
//
// The package is for unix systems, as is the agent.
package materialize

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// EnvFileName is the name of the env file in the data directory.
const EnvFileName = "warden.env"

// NoGroup as Options.GroupID keeps everything private to the agent's user.
const NoGroup = -1

// Options configures a Writer.
type Options struct {
	// Dir is the directory the files are written to, typically <data-dir>/certs.
	Dir string
	// GroupID is the group that may read the files (see the package
	// documentation), or NoGroup (-1). Note that 0 is a real group (root).
	GroupID int
	// SharedDir says that Dir belongs to someone else, such as the app's data
	// directory that receives the env file: it is created if missing, but an
	// existing directory keeps its mode and group.
	SharedDir bool
}

// File is one file to materialise.
type File struct {
	// Name is the file's stable base name, such as "identity.crt".
	Name string
	// Data is the complete content.
	Data []byte
	// Secret marks key or secret material: mode 0600, or 0640 with a group,
	// instead of 0644.
	Secret bool
}

// Writer applies sets of files to one directory. It is safe for concurrent use;
// concurrent Apply calls are serialised.
type Writer struct {
	dir string
	gid int
	fs  fileSystem
	mu  sync.Mutex
}

// NewWriter prepares opts.Dir: it creates the directory with the mode the
// package documentation gives (parents 0755, as they only hold other
// directories and files with their own modes), corrects the mode and group of
// an existing directory unless opts.SharedDir is set, and removes temporary
// files a crash may have left behind.
func NewWriter(opts Options) (*Writer, error) {
	return newWriter(opts, osFS{})
}

func newWriter(opts Options, fsys fileSystem) (*Writer, error) {
	if opts.Dir == "" {
		return nil, errors.New("materialize: no directory given")
	}
	if opts.GroupID < NoGroup {
		return nil, fmt.Errorf("materialize: invalid group id %d", opts.GroupID)
	}
	dir := filepath.Clean(opts.Dir)
	mode := fs.FileMode(0o700)
	if opts.GroupID != NoGroup {
		mode = 0o750
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("materialize: create parent of %s: %w", dir, err)
	}
	created := true
	if err := os.Mkdir(dir, mode); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("materialize: create %s: %w", dir, err)
		}
		created = false
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("materialize: %s exists and is not a directory", dir)
	}
	if created || !opts.SharedDir {
		// Mkdir's mode is filtered by the umask, and an existing directory may
		// have been loosened by hand; set both exactly.
		if opts.GroupID != NoGroup {
			if err := os.Chown(dir, -1, opts.GroupID); err != nil {
				return nil, fmt.Errorf("materialize: set group of %s: %w", dir, err)
			}
		}
		if err := os.Chmod(dir, mode); err != nil {
			return nil, fmt.Errorf("materialize: set mode of %s: %w", dir, err)
		}
	}
	if err := removeStaleTemps(fsys, dir); err != nil {
		return nil, fmt.Errorf("materialize: %w", err)
	}
	return &Writer{dir: dir, gid: opts.GroupID, fs: fsys}, nil
}

// removeStaleTemps deletes temporary files of writes that a crash interrupted.
// They may hold key material, and nothing else will ever remove them.
func removeStaleTemps(fsys fileSystem, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), ".") || !strings.Contains(e.Name(), tempMarker) {
			continue
		}
		if err := fsys.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale temporary file: %w", err)
		}
	}
	return nil
}

// Apply writes files into the directory and returns the names of those it
// (re)wrote, in the order given; files whose content, mode and group are
// already right are skipped. Names must be base names (no path separators, no
// "..") and unique within the call.
//
// If writing any new content fails (disk full, read-only directory), no file
// is replaced, no temporary file is left, and the error names the file. Only a
// failing rename — after every new content is safely on disk — can leave the
// set partly applied; changed then lists the files already replaced, so the
// caller can still reload the app for them.
func (w *Writer) Apply(files []File) (changed []string, err error) {
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if err := validName(f.Name); err != nil {
			return nil, fmt.Errorf("materialize: %w", err)
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("materialize: file %q given twice", f.Name)
		}
		seen[f.Name] = true
	}

	w.mu.Lock()
	defer w.mu.Unlock()

	type pending struct{ name, tmp, target string }
	var todo []pending
	discard := func(ps []pending) {
		for _, p := range ps {
			_ = w.fs.Remove(p.tmp)
		}
	}
	for _, f := range files {
		target := filepath.Join(w.dir, f.Name)
		perm := w.perm(f.Secret)
		same, err := w.upToDate(target, f.Data, perm)
		if err != nil {
			discard(todo)
			return nil, fmt.Errorf("materialize %s: %w", target, err)
		}
		if same {
			continue
		}
		tmp, err := writeTemp(w.fs, w.dir, f.Name, f.Data, perm, w.gid)
		if err != nil {
			discard(todo)
			return nil, fmt.Errorf("materialize %s: %w", target, err)
		}
		todo = append(todo, pending{name: f.Name, tmp: tmp, target: target})
	}

	for i, p := range todo {
		if err := w.fs.Rename(p.tmp, p.target); err != nil {
			discard(todo[i:])
			err = fmt.Errorf("materialize %s: replace: %w", p.target, err)
			if syncErr := w.fs.SyncDir(w.dir); syncErr != nil {
				err = errors.Join(err, fmt.Errorf("materialize: sync %s: %w", w.dir, syncErr))
			}
			return changed, err
		}
		changed = append(changed, p.name)
	}
	if len(changed) > 0 {
		if err := w.fs.SyncDir(w.dir); err != nil {
			return changed, fmt.Errorf("materialize: sync %s: %w", w.dir, err)
		}
	}
	return changed, nil
}

func (w *Writer) perm(secret bool) fs.FileMode {
	switch {
	case !secret:
		return 0o644
	case w.gid != NoGroup:
		return 0o640
	default:
		return 0o600
	}
}

// upToDate reports whether target already is a regular file with exactly this
// content, mode and group, so that rewriting it would change nothing.
func (w *Writer) upToDate(target string, data []byte, perm fs.FileMode) (bool, error) {
	fi, err := w.fs.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != perm || fi.Size() != int64(len(data)) {
		return false, nil
	}
	if w.gid != NoGroup {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || int(st.Gid) != w.gid {
			return false, nil
		}
	}
	old, err := w.fs.ReadFile(target)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return bytes.Equal(old, data), nil
}
