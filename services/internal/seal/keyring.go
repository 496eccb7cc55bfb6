package seal

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// KEK is a key-encryption key. ID is recorded in every value it wraps so the
// right key can be found after rotation; it is 1–64 characters from
// [A-Za-z0-9._-].
type KEK struct {
	ID  string
	Key [32]byte
}

// Keyring holds the primary KEK, used to seal, and older KEKs that are only
// used to open. It is immutable after construction and safe for concurrent use.
type Keyring struct {
	primary KEK
	byID    map[string]KEK
}

// NewKeyring builds a keyring from the primary KEK and any older ones still
// needed to open existing values. IDs must be valid and distinct.
func NewKeyring(primary KEK, others ...KEK) (*Keyring, error) {
	k := &Keyring{primary: primary, byID: make(map[string]KEK, 1+len(others))}
	for _, kek := range append([]KEK{primary}, others...) {
		if err := validateID(kek.ID); err != nil {
			return nil, fmt.Errorf("seal: keyring: %w", err)
		}
		if _, dup := k.byID[kek.ID]; dup {
			return nil, fmt.Errorf("seal: keyring: duplicate KEK id %q", kek.ID)
		}
		if kek.Key == ([32]byte{}) {
			return nil, fmt.Errorf("seal: keyring: KEK %q is all zeros", kek.ID)
		}
		k.byID[kek.ID] = kek
	}
	return k, nil
}

// PrimaryID is the id of the KEK that Seal and Rewrap wrap new data keys under.
func (k *Keyring) PrimaryID() string { return k.primary.ID }

func validateID(id string) error {
	if id == "" || len(id) > maxKEKIDLen {
		return fmt.Errorf("KEK id must be 1-%d characters, got %d", maxKEKIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("KEK id contains %q; allowed are letters, digits, '.', '_' and '-'", c)
		}
	}
	return nil
}

// LoadKeyringFile reads a keyring file: one "id:base64key" per line, the first
// key being the primary; blank lines and lines starting with '#' are ignored.
// Keys are standard base64 of exactly 32 bytes. The file is refused if group or
// others have any permission on it, because anyone who can read it can open
// every secret in etcd.
func LoadKeyringFile(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seal: open keyring file: %w", err)
	}
	defer f.Close()
	// Stat the open descriptor rather than the path so the mode checked is the
	// mode of the file actually read.
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("seal: stat keyring file %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("seal: keyring file %s is not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("seal: keyring file %s has mode %04o; it must not be accessible to group or others (chmod 600 %s)", path, perm, path)
	}
	keks, err := parseKeyring(f)
	if err != nil {
		return nil, fmt.Errorf("seal: keyring file %s: %w", path, err)
	}
	k, err := NewKeyring(keks[0], keks[1:]...)
	if err != nil {
		return nil, fmt.Errorf("seal: keyring file %s: %w", path, err)
	}
	return k, nil
}

// maxKeyringLine bounds a line well above any valid one ("id:" plus 44 base64
// characters) so a wrong path, such as a large binary, fails fast.
const maxKeyringLine = 1024

func parseKeyring(r io.Reader) ([]KEK, error) {
	var keks []KEK
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, maxKeyringLine), maxKeyringLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, b64, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: want \"id:base64key\"", n)
		}
		id = strings.TrimSpace(id)
		if err := validateID(id); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		// The key text is never echoed in errors: a typo in it is still a secret.
		raw, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(b64))
		if err != nil {
			return nil, fmt.Errorf("line %d: KEK %q is not valid standard base64", n, id)
		}
		if len(raw) != keySize {
			clear(raw)
			return nil, fmt.Errorf("line %d: KEK %q is %d bytes, want %d", n, id, len(raw), keySize)
		}
		kek := KEK{ID: id}
		copy(kek.Key[:], raw)
		clear(raw)
		keks = append(keks, kek)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(keks) == 0 {
		return nil, errors.New("no keys found")
	}
	return keks, nil
}

// GenerateKeyringFile creates a keyring file with mode 0600 holding one new
// random KEK, for development setups. It refuses to overwrite an existing file
// because that would make every value sealed under the old keys unreadable.
func GenerateKeyringFile(path string) (*Keyring, error) {
	var idSuffix [6]byte
	if _, err := rand.Read(idSuffix[:]); err != nil {
		return nil, fmt.Errorf("seal: generate KEK id: %w", err)
	}
	kek := KEK{ID: "kek-" + hex.EncodeToString(idSuffix[:])}
	if _, err := rand.Read(kek.Key[:]); err != nil {
		return nil, fmt.Errorf("seal: generate KEK: %w", err)
	}
	k, err := NewKeyring(kek)
	if err != nil {
		return nil, err
	}
	content := "# Warden keyring: one \"id:base64key\" per line; the first key seals, the others only open.\n" +
		kek.ID + ":" + base64.StdEncoding.EncodeToString(kek.Key[:]) + "\n"

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("seal: create keyring file: %w", err)
	}
	_, werr := f.WriteString(content)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		// A partial file would be refused at the next start with a confusing
		// error; removing it lets the operator simply retry.
		if rerr := os.Remove(path); rerr != nil {
			return nil, fmt.Errorf("seal: write keyring file %s: %w (and removing it failed: %w)", path, werr, rerr)
		}
		return nil, fmt.Errorf("seal: write keyring file %s: %w", path, werr)
	}
	return k, nil
}
