// Package cache keeps the last state the agent applied, sealed on disk, so that
// after a restart it can start from it while the control plane is unreachable.
//
// The state is sealed with XChaCha20-Poly1305 under a key derived (HKDF-SHA256)
// from a random node-local key in the cache directory. The cache therefore
// protects the state against being read from a backup, an image or a copied
// data directory that leaves out the key file, and against tampering; it does
// not protect it against root on the node, who can read the key as the agent
// does. The directory is 0700 and the key file 0600.
//
// Entry format, version 1:
//
//	[1]  format byte (0xC1)
//	[24] XChaCha20 nonce, random
//	[≥8] ciphertext ‖ 16-byte tag of: 8-byte big-endian save time (Unix ns) ‖ data
//
// The entry name is bound as associated data, so an entry copied to another
// name does not open.
package cache

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"

	"github.com/warden-sec/warden/services/internal/agent/materialize"
)

var (
	// ErrNotFound means nothing was saved under the name.
	ErrNotFound = errors.New("cache: entry not found")
	// ErrCorrupt means the entry is malformed, was modified, was saved under
	// another name, or was sealed with another node key.
	ErrCorrupt = errors.New("cache: entry is corrupt or was sealed with another key")
)

const (
	// KeyFileName is the node-local key inside the cache directory.
	KeyFileName = "node.key"

	keySize   = 32
	formatV1  = 0xC1
	timeSize  = 8
	entryExt  = ".sealed"
	hkdfInfo  = "warden agent cache v1"
	aadPrefix = "warden agent cache v1 entry\x00"
)

// Cache is a directory of sealed entries. It is safe for concurrent use; the
// last Save of a name wins.
type Cache struct {
	dir  string
	aead cipher.AEAD
}

// Open opens the cache in dir (typically <data-dir>/.warden-agent), creating
// the directory (0700) and the node key (0600) on first use. An existing key
// file that others can read or write is refused rather than used, since the
// state it protects may have been exposed.
func Open(dir string) (*Cache, error) {
	if dir == "" {
		return nil, errors.New("cache: no directory given")
	}
	// Parents are the data directory, shared with the app; only the cache
	// directory itself is private.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("cache: create parent of %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("cache: create %s: %w", dir, err)
	}
	// Mkdir is subject to the umask and an existing directory may have been
	// loosened; the state must be private either way.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache: set mode of %s: %w", dir, err)
	}
	nodeKey, err := loadOrCreateKey(filepath.Join(dir, KeyFileName))
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	key := make([]byte, chacha20poly1305.KeySize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, nodeKey, nil, []byte(hkdfInfo)), key); err != nil {
		return nil, fmt.Errorf("cache: derive key: %w", err)
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return &Cache{dir: dir, aead: aead}, nil
}

func loadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate node key: %w", err)
	}
	err = materialize.CreateFile(path, key, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another Open of the same directory won the race; use its key.
		return readKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("store node key: %w", err)
	}
	return key, nil
}

func readKey(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("node key %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("node key %s has mode %#o, want 0600", path, fi.Mode().Perm())
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("node key %s holds %d bytes, want %d", path, len(key), keySize)
	}
	return key, nil
}

// Save seals data under name and replaces the entry atomically. name must be
// a plain file name (no path separators, no "..").
func (c *Cache) Save(name string, data []byte) error {
	path, err := c.path(name)
	if err != nil {
		return err
	}
	plain := make([]byte, timeSize, timeSize+len(data))
	binary.BigEndian.PutUint64(plain, uint64(time.Now().UnixNano()))
	plain = append(plain, data...)

	out := make([]byte, 1+c.aead.NonceSize(), 1+c.aead.NonceSize()+len(plain)+c.aead.Overhead())
	out[0] = formatV1
	// XChaCha20's 192-bit nonce makes random nonces safe for any number of saves.
	if _, err := rand.Read(out[1:]); err != nil {
		return fmt.Errorf("cache: save %s: nonce: %w", name, err)
	}
	out = c.aead.Seal(out, out[1:], plain, aad(name))
	if err := materialize.WriteFile(path, out, 0o600); err != nil {
		return fmt.Errorf("cache: save %s: %w", name, err)
	}
	return nil
}

// Load returns the data last saved under name and when it was saved. It
// returns an error matching ErrNotFound if there is none, and ErrCorrupt if the
// entry does not open.
func (c *Cache) Load(name string) ([]byte, time.Time, error) {
	path, err := c.path(name)
	if err != nil {
		return nil, time.Time{}, err
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, time.Time{}, fmt.Errorf("load %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("cache: load %s: %w", name, err)
	}
	ns := c.aead.NonceSize()
	if len(raw) < 1+ns+timeSize+c.aead.Overhead() || raw[0] != formatV1 {
		return nil, time.Time{}, fmt.Errorf("load %s: %w", name, ErrCorrupt)
	}
	plain, err := c.aead.Open(nil, raw[1:1+ns], raw[1+ns:], aad(name))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("load %s: %w", name, ErrCorrupt)
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(plain[:timeSize])))
	return plain[timeSize:], at, nil
}

func (c *Cache) path(name string) (string, error) {
	if name == "" || name == "." || strings.Contains(name, "..") || strings.ContainsAny(name, "/\\\x00") {
		return "", fmt.Errorf("cache: invalid entry name %q", name)
	}
	return filepath.Join(c.dir, name+entryExt), nil
}

func aad(name string) []byte {
	return append([]byte(aadPrefix), name...)
}
