package cache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func mustOpen(t *testing.T, dir string) *Cache {
	t.Helper()
	c, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return c
}

func mustSave(t *testing.T, c *Cache, name string, data []byte) {
	t.Helper()
	if err := c.Save(name, data); err != nil {
		t.Fatalf("Save(%q): %v", name, err)
	}
}

func TestRoundTrip(t *testing.T) {
	c := mustOpen(t, filepath.Join(t.TempDir(), ".warden-agent"))
	for _, data := range [][]byte{[]byte("snapshot v7: WA_SECRET=hunter2"), {}, bytes.Repeat([]byte{0xAB}, 1<<16)} {
		before := time.Now()
		mustSave(t, c, "state", data)
		after := time.Now()
		got, at, err := c.Load("state")
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("Load = %d bytes, want the %d saved", len(got), len(data))
		}
		if at.Before(before) || at.After(after) {
			t.Errorf("saved at %v, want between %v and %v", at, before, after)
		}
	}
}

func TestRawFileHidesPlaintext(t *testing.T) {
	dir := t.TempDir()
	c := mustOpen(t, dir)
	secret := []byte("WA_SECRET=correct-horse-battery-staple")
	mustSave(t, c, "state", secret)
	raw, err := os.ReadFile(filepath.Join(dir, "state"+entryExt))
	if err != nil {
		t.Fatalf("read entry: %v", err)
	}
	if bytes.Contains(raw, secret) || bytes.Contains(raw, []byte("correct-horse")) {
		t.Error("the sealed entry contains the plaintext")
	}
	fi, err := os.Stat(filepath.Join(dir, "state"+entryExt))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("entry mode = %#o, want 0600", got)
	}
}

func TestTamperingIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	c := mustOpen(t, dir)
	mustSave(t, c, "state", []byte("applied policy v3"))
	path := filepath.Join(dir, "state"+entryExt)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		mangle func([]byte) []byte
	}{
		{"format byte", func(b []byte) []byte { b[0] ^= 1; return b }},
		{"nonce", func(b []byte) []byte { b[5] ^= 1; return b }},
		{"save time", func(b []byte) []byte { b[1+24] ^= 1; return b }},
		{"data", func(b []byte) []byte { b[len(b)-20] ^= 0x80; return b }},
		{"tag", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }},
		{"too short", func(b []byte) []byte { return b[:10] }},
		{"empty", func([]byte) []byte { return nil }},
		{"appended", func(b []byte) []byte { return append(b, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.mangle(bytes.Clone(orig)), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.Load("state"); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Load of a tampered entry: err = %v, want ErrCorrupt", err)
			}
		})
	}

	t.Run("moved to another name", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, "other"+entryExt), orig, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Load("other"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Load of an entry copied to another name: err = %v, want ErrCorrupt", err)
		}
	})

	t.Run("other node key", func(t *testing.T) {
		other := t.TempDir()
		if err := os.WriteFile(filepath.Join(other, "state"+entryExt), orig, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := mustOpen(t, other).Load("state"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Load under another node key: err = %v, want ErrCorrupt", err)
		}
	})
}

func TestNotFound(t *testing.T) {
	c := mustOpen(t, t.TempDir())
	if _, _, err := c.Load("state"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load of a missing entry: err = %v, want ErrNotFound", err)
	}
}

func TestKeyFileAndDirModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".warden-agent")
	mustOpen(t, dir)
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, KeyFileName): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %#o, want %#o", filepath.Base(path), got, want)
		}
	}
	key, err := os.ReadFile(filepath.Join(dir, KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != keySize || bytes.Equal(key, make([]byte, keySize)) {
		t.Errorf("key file holds %d bytes (all zero: %v), want %d random bytes", len(key), bytes.Equal(key, make([]byte, keySize)), keySize)
	}
}

func TestSecondOpenReadsWhatFirstSaved(t *testing.T) {
	dir := t.TempDir()
	mustSave(t, mustOpen(t, dir), "state", []byte("last applied"))
	got, _, err := mustOpen(t, dir).Load("state")
	if err != nil {
		t.Fatalf("Load after reopening: %v", err)
	}
	if string(got) != "last applied" {
		t.Errorf("Load after reopening = %q, want %q", got, "last applied")
	}
}

func TestOpenRejectsBadKeyFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"readable by others", make([]byte, keySize), 0o644},
		{"wrong size", make([]byte, keySize-1), 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, KeyFileName)
			if err := os.WriteFile(path, tc.data, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(dir); err == nil {
				t.Error("Open succeeded, want an error")
			}
		})
	}
}

func TestInvalidNames(t *testing.T) {
	c := mustOpen(t, t.TempDir())
	for _, name := range []string{"", ".", "..", "../state", "a/b", "/abs", "a\x00b"} {
		if err := c.Save(name, []byte("x")); err == nil {
			t.Errorf("Save(%q) succeeded, want an error", name)
		}
		if _, _, err := c.Load(name); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Load(%q) err = %v, want an invalid-name error", name, err)
		}
	}
}
