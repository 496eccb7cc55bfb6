package envelope

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
)

// KeyState is where a WA_SECRET version is in its rotation. A retired version
// is simply absent from the KeySet.
type KeyState int

const (
	// Staged versions are accepted by Open but never used to seal, so every
	// receiver can hold the next secret before any sender starts using it.
	Staged KeyState = iota + 1
	// Active is the one version Seal uses.
	Active
	// Retiring versions are still accepted by Open so messages in flight when
	// the sender switched keep opening until the version is removed.
	Retiring
)

func (s KeyState) String() string {
	switch s {
	case Staged:
		return "staged"
	case Active:
		return "active"
	case Retiring:
		return "retiring"
	default:
		return fmt.Sprintf("KeyState(%d)", int(s))
	}
}

// Key is one version of the shared secret.
type Key struct {
	Version uint64
	Secret  []byte
	State   KeyState
}

// minSecretLen rejects secrets too short to resist offline guessing: anyone
// holding one captured message can test candidate secrets against its tag.
const minSecretLen = 16

// hkdfInfo separates this use of WA_SECRET from any other key derived from it.
const hkdfInfo = "warden envelope v1"

type versionKey struct {
	state KeyState
	aead  cipher.AEAD
}

type keySnapshot struct {
	byVersion map[uint64]versionKey
	active    uint64 // 0 when no version is active
}

// KeySet holds the secret versions an agent currently knows. Set replaces the
// whole set atomically, matching how the agent receives a complete secrets
// snapshot; readers never see a half-applied rotation. Safe for concurrent use.
// Only derived keys are kept, never the raw secrets.
type KeySet struct {
	snap atomic.Pointer[keySnapshot]
}

// NewKeySet returns a KeySet holding keys; see Set for the rules.
func NewKeySet(keys ...Key) (*KeySet, error) {
	ks := &KeySet{}
	if err := ks.Set(keys); err != nil {
		return nil, err
	}
	return ks, nil
}

// Set replaces the key set. Versions must be non-zero and distinct, secrets at
// least 16 bytes, and at most one key Active. On error the previous set stays
// in force.
func (ks *KeySet) Set(keys []Key) error {
	snap := &keySnapshot{byVersion: make(map[uint64]versionKey, len(keys))}
	for _, k := range keys {
		if k.Version == 0 {
			return errors.New("envelope: key version 0 is reserved")
		}
		if _, dup := snap.byVersion[k.Version]; dup {
			return fmt.Errorf("envelope: key version %d listed twice", k.Version)
		}
		switch k.State {
		case Staged, Retiring:
		case Active:
			if snap.active != 0 {
				return fmt.Errorf("envelope: versions %d and %d both active", snap.active, k.Version)
			}
			snap.active = k.Version
		default:
			return fmt.Errorf("envelope: key version %d has invalid state %v", k.Version, k.State)
		}
		if len(k.Secret) < minSecretLen {
			return fmt.Errorf("envelope: key version %d: secret is %d bytes, need at least %d", k.Version, len(k.Secret), minSecretLen)
		}
		aead, err := deriveAEAD(k.Secret)
		if err != nil {
			return fmt.Errorf("envelope: key version %d: %w", k.Version, err)
		}
		snap.byVersion[k.Version] = versionKey{state: k.State, aead: aead}
	}
	ks.snap.Store(snap)
	return nil
}

// Active returns the version Seal would use, and false if none is active.
func (ks *KeySet) Active() (version uint64, ok bool) {
	version, _, ok = ks.active()
	return version, ok
}

// active reads version and key from one snapshot, so a concurrent Set cannot
// hand back a version whose key was just removed.
func (ks *KeySet) active() (uint64, versionKey, bool) {
	snap := ks.snap.Load()
	if snap == nil || snap.active == 0 {
		return 0, versionKey{}, false
	}
	return snap.active, snap.byVersion[snap.active], true
}

// State reports the state of version, and false if the set does not hold it.
func (ks *KeySet) State(version uint64) (KeyState, bool) {
	vk, ok := ks.lookup(version)
	return vk.state, ok
}

func (ks *KeySet) lookup(version uint64) (versionKey, bool) {
	snap := ks.snap.Load()
	if snap == nil {
		return versionKey{}, false
	}
	vk, ok := snap.byVersion[version]
	return vk, ok
}

// deriveAEAD runs WA_SECRET through HKDF so the raw secret, which other
// components may also use, is never an AEAD key itself.
func deriveAEAD(secret []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, secret, nil, hkdfInfo, chacha20poly1305.KeySize)
	if err != nil {
		return nil, fmt.Errorf("derive key: %w", err)
	}
	defer clear(key)
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("init XChaCha20-Poly1305: %w", err)
	}
	return aead, nil
}
