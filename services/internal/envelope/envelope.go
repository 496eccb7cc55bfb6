// Package envelope seals Webapp↔Coreapp messages with a key derived from
// WA_SECRET and refuses stale, future-dated, tampered and replayed messages.
//
// The original product refuses messages whose timestamp is more than 5 s off
// but keeps no nonce cache, so a message replayed inside that window is
// accepted. Opener closes that gap with a bounded replay cache.
//
// Wire format, version 1 (big-endian):
//
//	[1]  format version (1)
//	[8]  secret version
//	[8]  timestamp, Unix nanoseconds
//	[24] random nonce
//	[…]  XChaCha20-Poly1305 ciphertext ‖ 16-byte tag, with the 41-byte header above as associated data
//
// The AEAD key is HKDF-SHA256(secret, info "warden envelope v1").
package envelope

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	formatV1 = 1

	// NonceSize is the length of the random per-message nonce. At 24 bytes
	// random nonces never realistically collide, so a repeated nonce under one
	// version can only be a replay.
	NonceSize = chacha20poly1305.NonceSizeX
	// HeaderSize is the length of the authenticated cleartext header.
	HeaderSize = 1 + 8 + 8 + NonceSize
	// Overhead is how much longer a sealed message is than its payload.
	Overhead = HeaderSize + chacha20poly1305.Overhead
	// MaxMessageSize is the protocol ceiling on a sealed message. Seal never
	// produces more; an Opener may be configured to accept less.
	MaxMessageSize = 16 << 20
)

var (
	// ErrMalformed means the message cannot be parsed as an envelope.
	ErrMalformed = errors.New("envelope: malformed message")
	// ErrTooLarge means the message or payload exceeds the size limit.
	ErrTooLarge = errors.New("envelope: message too large")
	// ErrUnknownKey means the secret version is not held (never known, or retired).
	ErrUnknownKey = errors.New("envelope: unknown secret version")
	// ErrExpired means the timestamp is older than the window allows.
	ErrExpired = errors.New("envelope: message expired")
	// ErrFuture means the timestamp is further ahead than the window allows.
	ErrFuture = errors.New("envelope: message timestamp in the future")
	// ErrTampered means the message failed authentication: modified, or sealed
	// under a different secret with the same version number.
	ErrTampered = errors.New("envelope: message failed authentication")
	// ErrReplayed means this exact message was already accepted.
	ErrReplayed = errors.New("envelope: message replayed")
	// ErrCacheFull means the replay cache is at capacity and the message was
	// refused rather than forgetting nonces that could still be replayed.
	ErrCacheFull = errors.New("envelope: replay cache full")
	// ErrNoActiveKey means Seal was called on a KeySet with no Active version.
	ErrNoActiveKey = errors.New("envelope: no active secret version")
)

// Header is the authenticated cleartext part of a message.
type Header struct {
	KeyVersion uint64
	Timestamp  time.Time
	Nonce      [NonceSize]byte
}

// Seal seals payload under the Active version of ks with timestamp now.
func Seal(ks *KeySet, payload []byte, now time.Time) ([]byte, error) {
	version, vk, ok := ks.active()
	if !ok {
		return nil, ErrNoActiveKey
	}
	if len(payload) > MaxMessageSize-Overhead {
		return nil, fmt.Errorf("%w: payload is %d bytes, limit %d", ErrTooLarge, len(payload), MaxMessageSize-Overhead)
	}
	hdr := Header{KeyVersion: version, Timestamp: now}
	if _, err := rand.Read(hdr.Nonce[:]); err != nil {
		return nil, fmt.Errorf("envelope: generate nonce: %w", err)
	}
	return sealWith(vk, hdr, payload), nil
}

func sealWith(vk versionKey, hdr Header, payload []byte) []byte {
	out := make([]byte, HeaderSize, HeaderSize+len(payload)+chacha20poly1305.Overhead)
	out[0] = formatV1
	binary.BigEndian.PutUint64(out[1:9], hdr.KeyVersion)
	binary.BigEndian.PutUint64(out[9:17], uint64(hdr.Timestamp.UnixNano()))
	copy(out[17:HeaderSize], hdr.Nonce[:])
	return vk.aead.Seal(out, hdr.Nonce[:], payload, out[:HeaderSize])
}

func parseHeader(msg []byte) (Header, error) {
	if len(msg) < Overhead {
		return Header{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte minimum", ErrMalformed, len(msg), Overhead)
	}
	if msg[0] != formatV1 {
		return Header{}, fmt.Errorf("%w: unsupported format version %d", ErrMalformed, msg[0])
	}
	hdr := Header{
		KeyVersion: binary.BigEndian.Uint64(msg[1:9]),
		Timestamp:  time.Unix(0, int64(binary.BigEndian.Uint64(msg[9:17]))),
	}
	copy(hdr.Nonce[:], msg[17:HeaderSize])
	return hdr, nil
}

// DefaultWindow is how far a timestamp may be from the receiver's clock in
// either direction: 5 s each way, the original product's 10 s of grace.
const DefaultWindow = 5 * time.Second

// DefaultCacheSize bounds the replay cache. Each entry costs roughly 80 bytes
// including map overhead, so the default caps the cache near 20 MiB while
// allowing about 25 000 messages a second under the default 10 s window.
const DefaultCacheSize = 1 << 18

// Opener opens messages sealed by Seal. It is safe for concurrent use; one
// Opener (and so one replay cache) must serve every goroutine receiving on a
// channel, or a message could be replayed to a second Opener.
type Opener struct {
	keys       *KeySet
	window     time.Duration
	now        func() time.Time
	maxMessage int
	cache      *replayCache
}

// Option configures an Opener.
type Option func(*Opener) error

// WithWindow sets how far, in either direction, a timestamp may be from the
// receiver's clock. The replay cache keeps each nonce for up to twice this.
func WithWindow(d time.Duration) Option {
	return func(o *Opener) error {
		if d <= 0 {
			return fmt.Errorf("envelope: window must be positive, got %v", d)
		}
		o.window = d
		return nil
	}
}

// WithClock replaces time.Now, for tests and for callers with their own clock.
func WithClock(now func() time.Time) Option {
	return func(o *Opener) error {
		if now == nil {
			return errors.New("envelope: clock must not be nil")
		}
		o.now = now
		return nil
	}
}

// WithMaxMessage lowers the largest message Open accepts below MaxMessageSize.
func WithMaxMessage(n int) Option {
	return func(o *Opener) error {
		if n < Overhead || n > MaxMessageSize {
			return fmt.Errorf("envelope: max message must be between %d and %d bytes, got %d", Overhead, MaxMessageSize, n)
		}
		o.maxMessage = n
		return nil
	}
}

// WithCacheSize sets how many (version, nonce) pairs the replay cache holds
// before it starts refusing messages with ErrCacheFull.
func WithCacheSize(n int) Option {
	return func(o *Opener) error {
		if n <= 0 {
			return fmt.Errorf("envelope: cache size must be positive, got %d", n)
		}
		o.cache.capacity = n
		return nil
	}
}

// NewOpener returns an Opener that accepts messages under any Staged, Active
// or Retiring version held by ks.
func NewOpener(ks *KeySet, opts ...Option) (*Opener, error) {
	if ks == nil {
		return nil, errors.New("envelope: key set must not be nil")
	}
	o := &Opener{
		keys:       ks,
		window:     DefaultWindow,
		now:        time.Now,
		maxMessage: MaxMessageSize,
		cache:      &replayCache{capacity: DefaultCacheSize},
	}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	o.cache.init(o.window)
	return o, nil
}

// Open authenticates msg and returns its payload. Checks run cheapest first
// and the replay cache is written only after authentication, so forged
// messages cannot fill it. The header is returned whenever msg parsed, so
// callers can log which version or timestamp was refused.
func (o *Opener) Open(msg []byte) (payload []byte, hdr Header, err error) {
	if len(msg) > o.maxMessage {
		return nil, Header{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(msg), o.maxMessage)
	}
	hdr, err = parseHeader(msg)
	if err != nil {
		return nil, Header{}, err
	}
	vk, ok := o.keys.lookup(hdr.KeyVersion)
	if !ok {
		return nil, hdr, fmt.Errorf("%w: %d", ErrUnknownKey, hdr.KeyVersion)
	}
	now := o.now().UnixNano()
	ts := hdr.Timestamp.UnixNano()
	window := int64(o.window)
	// Compare against now±window rather than computing now-ts: ts is
	// attacker-controlled and the subtraction could overflow.
	if ts < now-window {
		return nil, hdr, fmt.Errorf("%w: timestamp %v is more than %v old", ErrExpired, hdr.Timestamp.UTC(), o.window)
	}
	if ts > now+window {
		return nil, hdr, fmt.Errorf("%w: timestamp %v is more than %v ahead", ErrFuture, hdr.Timestamp.UTC(), o.window)
	}
	payload, err = vk.aead.Open(nil, hdr.Nonce[:], msg[HeaderSize:], msg[:HeaderSize])
	if err != nil {
		return nil, hdr, fmt.Errorf("%w: secret version %d", ErrTampered, hdr.KeyVersion)
	}
	if err := o.cache.record(cacheKey{version: hdr.KeyVersion, nonce: hdr.Nonce}, ts, now); err != nil {
		return nil, hdr, err
	}
	return payload, hdr, nil
}
