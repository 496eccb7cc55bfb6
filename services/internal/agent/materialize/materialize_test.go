package materialize

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultFS is the real file system with faults injected by file name, standing
// in for a full disk or a read-only directory when the tests run as root.
type faultFS struct {
	osFS
	failCreate string // fail CreateTemp for this target name
	failWrite  string // fail Write of the temp for this target name, after writing half
	failRename string // fail Rename onto this target name
	err        error
}

func (f *faultFS) CreateTemp(dir, pattern string) (tempFile, error) {
	if f.failCreate != "" && strings.HasPrefix(pattern, "."+f.failCreate+tempMarker) {
		return nil, &fs.PathError{Op: "open", Path: filepath.Join(dir, pattern), Err: f.err}
	}
	file, err := f.osFS.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	failing := f.failWrite != "" && strings.HasPrefix(pattern, "."+f.failWrite+tempMarker)
	return &faultFile{tempFile: file, fail: failing, err: f.err}, nil
}

func (f *faultFS) Rename(oldpath, newpath string) error {
	if f.failRename != "" && filepath.Base(newpath) == f.failRename {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: f.err}
	}
	return f.osFS.Rename(oldpath, newpath)
}

type faultFile struct {
	tempFile
	fail bool
	err  error
}

func (f *faultFile) Write(p []byte) (int, error) {
	if !f.fail {
		return f.tempFile.Write(p)
	}
	n, _ := f.tempFile.Write(p[:len(p)/2])
	return n, &fs.PathError{Op: "write", Path: f.Name(), Err: f.err}
}

func mustWriter(t *testing.T, opts Options) *Writer {
	t.Helper()
	w, err := NewWriter(opts)
	if err != nil {
		t.Fatalf("NewWriter(%+v): %v", opts, err)
	}
	return w
}

func mustApply(t *testing.T, w *Writer, files ...File) []string {
	t.Helper()
	changed, err := w.Apply(files)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return changed
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return fi.Mode().Perm()
}

func gid(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Gid)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read dir: %v", err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), tempMarker) {
			t.Errorf("temporary file %s left in %s", e.Name(), dir)
		}
	}
}

// setPastMtime moves the mtime far back, so that a rewrite is visible even on
// file systems with coarse timestamps.
func setPastMtime(t *testing.T, paths ...string) time.Time {
	t.Helper()
	past := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range paths {
		if err := os.Chtimes(p, past, past); err != nil {
			t.Fatalf("chtimes: %v", err)
		}
	}
	return past
}

func mtime(t *testing.T, path string) time.Time {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return fi.ModTime()
}

func TestModes(t *testing.T) {
	// A restrictive umask shows that modes are set exactly, not filtered.
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })

	for _, tc := range []struct {
		name                       string
		group                      int
		wantDir, wantKey, wantCert fs.FileMode
	}{
		{"no group", NoGroup, 0o700, 0o600, 0o644},
		{"app group", os.Getgid(), 0o750, 0o640, 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data", "certs")
			w := mustWriter(t, Options{Dir: dir, GroupID: tc.group})
			mustApply(t, w,
				File{Name: "identity.key", Data: []byte("key"), Secret: true},
				File{Name: "identity.crt", Data: []byte("cert")},
			)
			if got := mode(t, dir); got != tc.wantDir {
				t.Errorf("dir mode = %#o, want %#o", got, tc.wantDir)
			}
			if got := mode(t, filepath.Join(dir, "identity.key")); got != tc.wantKey {
				t.Errorf("key mode = %#o, want %#o", got, tc.wantKey)
			}
			if got := mode(t, filepath.Join(dir, "identity.crt")); got != tc.wantCert {
				t.Errorf("cert mode = %#o, want %#o", got, tc.wantCert)
			}
			if tc.group != NoGroup {
				for _, p := range []string{dir, filepath.Join(dir, "identity.key")} {
					if got := gid(t, p); got != tc.group {
						t.Errorf("group of %s = %d, want %d", p, got, tc.group)
					}
				}
			}
		})
	}
}

func TestNewWriterFixesExistingDirMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	mustWriter(t, Options{Dir: dir, GroupID: NoGroup})
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("dir mode = %#o, want 0700", got)
	}
}

func TestSharedDirKeepsModeAndHoldsEnvFile(t *testing.T) {
	dataDir := t.TempDir()
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := mustWriter(t, Options{Dir: dataDir, GroupID: NoGroup, SharedDir: true})
	env, err := RenderEnv(map[string]string{"WA_SECRET": "s3cr3t"})
	if err != nil {
		t.Fatalf("RenderEnv: %v", err)
	}
	mustApply(t, w, File{Name: EnvFileName, Data: env, Secret: true})
	if got := mode(t, dataDir); got != 0o755 {
		t.Errorf("shared dir mode = %#o, want it left at 0755", got)
	}
	if got := mode(t, filepath.Join(dataDir, EnvFileName)); got != 0o600 {
		t.Errorf("env file mode = %#o, want 0600", got)
	}

	missing := filepath.Join(t.TempDir(), "new-data")
	mustWriter(t, Options{Dir: missing, GroupID: NoGroup, SharedDir: true})
	if got := mode(t, missing); got != 0o700 {
		t.Errorf("created shared dir mode = %#o, want 0700", got)
	}
}

func TestNewWriterRejects(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"empty dir", Options{GroupID: NoGroup}},
		{"bad group", Options{Dir: t.TempDir(), GroupID: -2}},
		{"not a directory", Options{Dir: file, GroupID: NoGroup}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewWriter(tc.opts); err == nil {
				t.Errorf("NewWriter(%+v) succeeded, want an error", tc.opts)
			}
		})
	}
}

func TestNewWriterRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, ".identity.key"+tempMarker+"123")
	keep := filepath.Join(dir, ".hidden")
	for _, p := range []string{stale, keep} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustWriter(t, Options{Dir: dir, GroupID: NoGroup})
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temp still there (stat err %v)", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("unrelated file removed: %v", err)
	}
}

func TestUnchangedContentIsNotRewritten(t *testing.T) {
	dir := t.TempDir()
	w := mustWriter(t, Options{Dir: dir, GroupID: NoGroup})
	key := filepath.Join(dir, "identity.key")
	crt := filepath.Join(dir, "identity.crt")
	files := []File{
		{Name: "identity.key", Data: []byte("key v1"), Secret: true},
		{Name: "identity.crt", Data: []byte("cert v1")},
	}
	if got := mustApply(t, w, files...); !slices.Equal(got, []string{"identity.key", "identity.crt"}) {
		t.Fatalf("first Apply changed %v, want both files", got)
	}
	past := setPastMtime(t, key, crt)

	if got := mustApply(t, w, files...); len(got) != 0 {
		t.Errorf("Apply of identical files changed %v, want nothing", got)
	}
	for _, p := range []string{key, crt} {
		if got := mtime(t, p); !got.Equal(past) {
			t.Errorf("mtime of %s = %v, want it untouched at %v", filepath.Base(p), got, past)
		}
	}

	files[1].Data = []byte("cert v2")
	if got := mustApply(t, w, files...); !slices.Equal(got, []string{"identity.crt"}) {
		t.Errorf("Apply changed %v, want only identity.crt", got)
	}
	if got := mtime(t, key); !got.Equal(past) {
		t.Errorf("unchanged key was rewritten (mtime %v)", got)
	}
	if got := readFile(t, crt); got != "cert v2" {
		t.Errorf("cert = %q, want %q", got, "cert v2")
	}

	// Same content but a loosened mode is not up to date.
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := mustApply(t, w, files...); !slices.Equal(got, []string{"identity.key"}) {
		t.Errorf("Apply after chmod changed %v, want identity.key", got)
	}
	if got := mode(t, key); got != 0o600 {
		t.Errorf("key mode = %#o, want 0600 restored", got)
	}
}

// TestConcurrentReaderNeverSeesPartialContent replaces a file 200 times while
// another goroutine keeps reading it. Each version carries its own checksum, so
// a reader catching a file mid-write (truncated, or mixing two versions) fails.
func TestConcurrentReaderNeverSeesPartialContent(t *testing.T) {
	dir := t.TempDir()
	w := mustWriter(t, Options{Dir: dir, GroupID: NoGroup})
	path := filepath.Join(dir, "bundle.pem")

	version := func(i int) []byte {
		// Large enough that a non-atomic write takes several syscalls.
		body := bytes.Repeat([]byte(fmt.Sprintf("version %03d payload line\n", i)), 4096)
		sum := sha256.Sum256(body)
		return append(body, "sha256 "+hex.EncodeToString(sum[:])+"\n"...)
	}
	check := func(b []byte) error {
		i := bytes.LastIndex(b, []byte("sha256 "))
		if i < 0 || !bytes.HasSuffix(b, []byte("\n")) {
			return fmt.Errorf("no checksum line in %d bytes", len(b))
		}
		sum := sha256.Sum256(b[:i])
		if got, want := string(b[i+len("sha256 "):len(b)-1]), hex.EncodeToString(sum[:]); got != want {
			return fmt.Errorf("checksum mismatch in %d bytes", len(b))
		}
		return nil
	}

	mustApply(t, w, File{Name: "bundle.pem", Data: version(0)})
	done := make(chan struct{})
	var wg sync.WaitGroup
	var reads int
	var seen = map[string]bool{}
	var readErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err == nil {
				err = check(b)
			}
			if err != nil {
				readErr = err
				return
			}
			reads++
			seen[string(b[:len("version 000")])] = true
		}
	}()
	for i := 1; i <= 200; i++ {
		if _, err := w.Apply([]File{{Name: "bundle.pem", Data: version(i)}}); err != nil {
			close(done)
			wg.Wait()
			t.Fatalf("Apply version %d: %v", i, err)
		}
	}
	close(done)
	wg.Wait()
	if readErr != nil {
		t.Fatalf("reader saw a partial file after %d good reads: %v", reads, readErr)
	}
	if len(seen) < 2 {
		t.Errorf("reader saw %d distinct versions in %d reads; the test did not overlap reads with writes", len(seen), reads)
	}
}

// TestFailedWriteKeepsOldFiles injects the faults a full disk or a read-only
// directory cause, on the second of three files: no file may change.
func TestFailedWriteKeepsOldFiles(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault faultFS
		want  error
	}{
		{"read-only dir", faultFS{failCreate: "b.key", err: syscall.EROFS}, syscall.EROFS},
		{"disk full", faultFS{failWrite: "b.key", err: syscall.ENOSPC}, syscall.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := mustWriter(t, Options{Dir: dir, GroupID: NoGroup})
			old := []File{
				{Name: "a.crt", Data: []byte("a old")},
				{Name: "b.key", Data: []byte("b old"), Secret: true},
				{Name: "c.crt", Data: []byte("c old")},
			}
			mustApply(t, w, old...)
			past := setPastMtime(t, filepath.Join(dir, "a.crt"), filepath.Join(dir, "b.key"), filepath.Join(dir, "c.crt"))

			w.fs = &tc.fault
			changed, err := w.Apply([]File{
				{Name: "a.crt", Data: []byte("a new")},
				{Name: "b.key", Data: []byte("b new"), Secret: true},
				{Name: "c.crt", Data: []byte("c new")},
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Apply error = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), "b.key") {
				t.Errorf("error %q does not name the failing file b.key", err)
			}
			if len(changed) != 0 {
				t.Errorf("changed = %v, want nothing", changed)
			}
			for _, f := range old {
				p := filepath.Join(dir, f.Name)
				if got := readFile(t, p); got != string(f.Data) {
					t.Errorf("%s = %q, want old content %q", f.Name, got, f.Data)
				}
				if got := mtime(t, p); !got.Equal(past) {
					t.Errorf("%s was replaced (mtime %v)", f.Name, got)
				}
			}
			assertNoTemps(t, dir)
		})
	}
}

func TestReadOnlyDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions; TestFailedWriteKeepsOldFiles injects the fault instead")
	}
	dir := t.TempDir()
	w := mustWriter(t, Options{Dir: dir, GroupID: NoGroup})
	mustApply(t, w, File{Name: "a.crt", Data: []byte("a old")}, File{Name: "b.key", Data: []byte("b old"), Secret: true})
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })

	changed, err := w.Apply([]File{{Name: "a.crt", Data: []byte("a new")}, {Name: "b.key", Data: []byte("b new"), Secret: true}})
	if !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("Apply error = %v, want permission denied", err)
	}
	if len(changed) != 0 {
		t.Errorf("changed = %v, want nothing", changed)
	}
	if got := readFile(t, filepath.Join(dir, "a.crt")); got != "a old" {
		t.Errorf("a.crt = %q, want old content", got)
	}
	if got := readFile(t, filepath.Join(dir, "b.key")); got != "b old" {
		t.Errorf("b.key = %q, want old content", got)
	}
	assertNoTemps(t, dir)
}

func TestFailedRenameReportsWhatChanged(t *testing.T) {
	dir := t.TempDir()
	w := mustWriter(t, Options{Dir: dir, GroupID: NoGroup})
	mustApply(t, w, File{Name: "a.crt", Data: []byte("a old")}, File{Name: "b.crt", Data: []byte("b old")})
	w.fs = &faultFS{failRename: "b.crt", err: syscall.EIO}

	changed, err := w.Apply([]File{{Name: "a.crt", Data: []byte("a new")}, {Name: "b.crt", Data: []byte("b new")}})
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "b.crt") {
		t.Fatalf("Apply error = %v, want EIO naming b.crt", err)
	}
	if !slices.Equal(changed, []string{"a.crt"}) {
		t.Errorf("changed = %v, want [a.crt]", changed)
	}
	if got := readFile(t, filepath.Join(dir, "b.crt")); got != "b old" {
		t.Errorf("b.crt = %q, want old content", got)
	}
	assertNoTemps(t, dir)
}

func TestApplyRejectsBadNames(t *testing.T) {
	dir := t.TempDir()
	w := mustWriter(t, Options{Dir: dir, GroupID: NoGroup})
	for _, tc := range []struct {
		name  string
		files []File
	}{
		{"empty", []File{{Name: ""}}},
		{"dot", []File{{Name: "."}}},
		{"dot dot", []File{{Name: ".."}}},
		{"parent escape", []File{{Name: "../escape"}}},
		{"embedded dot dot", []File{{Name: "a..b"}}},
		{"slash", []File{{Name: "sub/file"}}},
		{"absolute", []File{{Name: "/etc/passwd"}}},
		{"backslash", []File{{Name: `a\b`}}},
		{"nul", []File{{Name: "a\x00b"}}},
		{"temp marker", []File{{Name: "x" + tempMarker + "1"}}},
		{"too long", []File{{Name: strings.Repeat("a", maxNameLen+1)}}},
		{"duplicate", []File{{Name: "a"}, {Name: "a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A valid file first shows that nothing is written when any name is bad.
			files := append([]File{{Name: "ok.crt", Data: []byte("x")}}, tc.files...)
			if _, err := w.Apply(files); err == nil {
				t.Fatalf("Apply(%q) succeeded, want an error", tc.files[0].Name)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 0 {
				t.Errorf("directory not empty after a refused Apply: %d entries", len(entries))
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })

	path := filepath.Join(t.TempDir(), "state")
	for _, data := range []string{"one", "two"} {
		if err := WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		if got := readFile(t, path); got != data {
			t.Errorf("content = %q, want %q", got, data)
		}
	}
	if got := mode(t, path); got != 0o644 {
		t.Errorf("mode = %#o, want 0644 despite the umask", got)
	}
	assertNoTemps(t, filepath.Dir(path))

	if err := WriteFile(filepath.Join(t.TempDir(), ".."), nil, 0o600); err == nil {
		t.Error(`WriteFile to ".." succeeded, want an error`)
	}
}

func TestCreateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.key")
	if err := CreateFile(path, []byte("first"), 0o600); err != nil {
		t.Fatalf("CreateFile: %v", err)
	}
	if got := mode(t, path); got != 0o600 {
		t.Errorf("mode = %#o, want 0600", got)
	}
	err := CreateFile(path, []byte("second"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second CreateFile error = %v, want fs.ErrExist", err)
	}
	if got := readFile(t, path); got != "first" {
		t.Errorf("content = %q, want the first write kept", got)
	}
	assertNoTemps(t, dir)
}
