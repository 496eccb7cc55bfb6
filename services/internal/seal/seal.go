// Package seal protects secrets stored in etcd with envelope encryption.
//
// Every value gets a fresh random 256-bit data key (DEK); the value is sealed
// with AES-256-GCM under the DEK, and the DEK is wrapped with AES-256-GCM under
// a key-encryption key (KEK) from a Keyring. Rotating the KEK therefore only
// rewrites the small wrapped DEK (see Keyring.Rewrap), never the value.
//
// Sealed format, version 1 (all lengths in bytes):
//
//	[1]  format byte (0xA1)
//	[1]  KEK id length n (1..64)
//	[n]  KEK id
//	[60] wrapped DEK: 12-byte GCM nonce ‖ 32-byte encrypted DEK ‖ 16-byte tag
//	[12] GCM nonce of the value
//	[≥16] value ciphertext ‖ tag
//
// The caller's context string (typically the etcd key) is bound as associated
// data to both the DEK wrap and the value, so a sealed value copied under
// another key fails to open.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

var (
	// ErrUnknownKEK means the value was sealed under a KEK the keyring does not hold.
	ErrUnknownKEK = errors.New("seal: unknown key-encryption key")
	// ErrCorrupt means the sealed bytes are malformed, were modified, or were
	// opened with a different associated-data context than they were sealed with.
	ErrCorrupt = errors.New("seal: sealed value is corrupt or bound to another context")
)

const (
	// formatV1 is chosen outside the printable ASCII range so that a value stored
	// unsealed by mistake (JSON, PEM, text) is never taken for a sealed one.
	formatV1 = 0xA1

	keySize        = 32
	nonceSize      = 12
	tagSize        = 16
	wrappedDEKSize = nonceSize + keySize + tagSize
	maxKEKIDLen    = 64

	// Domain-separation labels keep a wrapped DEK and a value ciphertext from
	// ever being valid in each other's place, even though both use GCM.
	labelDEK   = "warden seal v1 dek"
	labelValue = "warden seal v1 value"
)

// envelope is the parsed form of a sealed value. Its byte slices alias the input.
type envelope struct {
	kekID      string
	wrappedDEK []byte
	nonce      []byte
	ciphertext []byte
}

func parse(sealed []byte) (envelope, error) {
	if len(sealed) < 2 || sealed[0] != formatV1 {
		return envelope{}, fmt.Errorf("%w: unrecognised format", ErrCorrupt)
	}
	idLen := int(sealed[1])
	if idLen == 0 || idLen > maxKEKIDLen {
		return envelope{}, fmt.Errorf("%w: KEK id length %d out of range", ErrCorrupt, idLen)
	}
	rest := sealed[2:]
	if len(rest) < idLen+wrappedDEKSize+nonceSize+tagSize {
		return envelope{}, fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	env := envelope{kekID: string(rest[:idLen])}
	if err := validateID(env.kekID); err != nil {
		return envelope{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	rest = rest[idLen:]
	env.wrappedDEK, rest = rest[:wrappedDEKSize], rest[wrappedDEKSize:]
	env.nonce, env.ciphertext = rest[:nonceSize], rest[nonceSize:]
	return env, nil
}

func (e envelope) marshal() []byte {
	out := make([]byte, 0, 2+len(e.kekID)+wrappedDEKSize+nonceSize+len(e.ciphertext))
	out = append(out, formatV1, byte(len(e.kekID)))
	out = append(out, e.kekID...)
	out = append(out, e.wrappedDEK...)
	out = append(out, e.nonce...)
	return append(out, e.ciphertext...)
}

// KEKID reports which KEK a sealed value was wrapped under, without opening it.
func KEKID(sealed []byte) (string, error) {
	env, err := parse(sealed)
	if err != nil {
		return "", err
	}
	return env.kekID, nil
}

// Seal encrypts plaintext under a fresh DEK wrapped by the primary KEK and
// binds aad (the storage context, e.g. the etcd key) to the result.
func (k *Keyring) Seal(plaintext []byte, aad string) ([]byte, error) {
	dek := make([]byte, keySize)
	defer clear(dek)
	if _, err := rand.Read(dek); err != nil {
		return nil, fmt.Errorf("seal: generate data key: %w", err)
	}
	wrapped, err := wrapDEK(k.primary, dek, aad)
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: generate nonce: %w", err)
	}
	env := envelope{
		kekID:      k.primary.ID,
		wrappedDEK: wrapped,
		nonce:      nonce,
		ciphertext: gcm.Seal(nil, nonce, plaintext, valueAAD(aad)),
	}
	return env.marshal(), nil
}

// Open authenticates and decrypts a value sealed by Seal with the same aad. It
// returns ErrUnknownKEK when the wrapping KEK is not in the keyring and
// ErrCorrupt for anything that fails to authenticate.
func (k *Keyring) Open(sealed []byte, aad string) ([]byte, error) {
	env, err := parse(sealed)
	if err != nil {
		return nil, err
	}
	dek, err := k.unwrapDEK(env, aad)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	return openValue(dek, env, aad)
}

// Rewrap re-wraps the DEK of a value sealed under an older KEK with the primary
// KEK, leaving the value ciphertext untouched; changed is false (and out is the
// input) when the value already uses the primary KEK. The value is fully
// authenticated either way, so a rotation job never carries a corrupt record
// forward under the new KEK without noticing.
func (k *Keyring) Rewrap(sealed []byte, aad string) (out []byte, changed bool, err error) {
	env, err := parse(sealed)
	if err != nil {
		return nil, false, err
	}
	dek, err := k.unwrapDEK(env, aad)
	if err != nil {
		return nil, false, err
	}
	defer clear(dek)
	plaintext, err := openValue(dek, env, aad)
	if err != nil {
		return nil, false, err
	}
	clear(plaintext)
	if env.kekID == k.primary.ID {
		return sealed, false, nil
	}
	wrapped, err := wrapDEK(k.primary, dek, aad)
	if err != nil {
		return nil, false, err
	}
	env.kekID = k.primary.ID
	env.wrappedDEK = wrapped
	return env.marshal(), true, nil
}

func wrapDEK(kek KEK, dek []byte, aad string) ([]byte, error) {
	gcm, err := newGCM(kek.Key[:])
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, nonceSize, wrappedDEKSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: generate wrap nonce: %w", err)
	}
	return gcm.Seal(nonce, nonce, dek, dekAAD(kek.ID, aad)), nil
}

func (k *Keyring) unwrapDEK(env envelope, aad string) ([]byte, error) {
	kek, ok := k.byID[env.kekID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKEK, env.kekID)
	}
	gcm, err := newGCM(kek.Key[:])
	if err != nil {
		return nil, err
	}
	dek, err := gcm.Open(nil, env.wrappedDEK[:nonceSize], env.wrappedDEK[nonceSize:], dekAAD(kek.ID, aad))
	if err != nil {
		return nil, fmt.Errorf("%w: data key does not authenticate", ErrCorrupt)
	}
	return dek, nil
}

func openValue(dek []byte, env envelope, aad string) ([]byte, error) {
	gcm, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	plaintext, err := gcm.Open(nil, env.nonce, env.ciphertext, valueAAD(aad))
	if err != nil {
		return nil, fmt.Errorf("%w: value does not authenticate", ErrCorrupt)
	}
	return plaintext, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: init AES: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: init GCM: %w", err)
	}
	return gcm, nil
}

// dekAAD binds the wrapped DEK to the KEK id in the header (so the id cannot be
// swapped for another KEK's) and to the caller's context. Fields are
// length-prefixed so that no two (id, aad) pairs encode alike.
func dekAAD(kekID, aad string) []byte {
	return lengthPrefixed(labelDEK, kekID, aad)
}

// valueAAD leaves the KEK id out on purpose: Rewrap changes the id without
// re-encrypting the value.
func valueAAD(aad string) []byte {
	return lengthPrefixed(labelValue, aad)
}

func lengthPrefixed(fields ...string) []byte {
	var out []byte
	for _, f := range fields {
		out = binary.AppendUvarint(out, uint64(len(f)))
		out = append(out, f...)
	}
	return out
}
