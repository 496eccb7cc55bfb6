// Package token issues and parses Warden's opaque join and bearer tokens.
//
// A token is a recognisable prefix followed by base64url (no padding) of 32
// random bytes, e.g. "wjt_" + 43 characters. The prefix lets operators and
// secret scanners tell a leaked token's kind at a glance; the random part
// carries all of the security. Servers store only Hash(token).
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

const (
	// JoinPrefix marks single-use tokens that let a new node join.
	JoinPrefix = "wjt_"
	// BearerPrefix marks API bearer tokens.
	BearerPrefix = "wbt_"

	randomBytes = 32
	encodedLen  = 43 // base64url without padding of randomBytes
	prefixLen   = 4
	// Len is the length of every token string.
	Len = prefixLen + encodedLen
)

// ErrInvalid is returned, wrapped with the reason, for any string that is not
// a well-formed token of the expected kind. The reason never quotes the input,
// since a near-miss is usually a real token with a copy-paste error.
var ErrInvalid = errors.New("token: invalid")

// encoding is strict so that every token has exactly one spelling: otherwise
// the unused low bits of the last character would give four spellings that
// decode alike but hash differently.
var encoding = base64.RawURLEncoding.Strict()

// Token is a parsed or newly generated token. Its String, GoString and
// LogValue are redacted so a token cannot leak through logs or %v; Value
// returns the secret itself.
type Token struct {
	value string
}

// New returns a fresh random token with the given prefix (JoinPrefix or BearerPrefix).
func New(prefix string) (Token, error) {
	if err := checkPrefix(prefix); err != nil {
		return Token{}, err
	}
	var raw [randomBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Token{}, fmt.Errorf("token: generate: %w", err)
	}
	return Token{value: prefix + encoding.EncodeToString(raw[:])}, nil
}

// Parse validates s as a token of the given kind: exact prefix, exact length,
// base64url alphabet only, canonical encoding.
func Parse(s, prefix string) (Token, error) {
	if err := checkPrefix(prefix); err != nil {
		return Token{}, err
	}
	if len(s) != Len {
		return Token{}, fmt.Errorf("%w: length %d, want %d", ErrInvalid, len(s), Len)
	}
	if s[:prefixLen] != prefix {
		return Token{}, fmt.Errorf("%w: wrong prefix, want %q", ErrInvalid, prefix)
	}
	body := s[prefixLen:]
	// Check the alphabet by hand: the decoder alone would skip '\r' and '\n'.
	for i := 0; i < len(body); i++ {
		if !isURLAlphabet(body[i]) {
			return Token{}, fmt.Errorf("%w: character %d is outside the base64url alphabet", ErrInvalid, prefixLen+i)
		}
	}
	var raw [randomBytes]byte
	if n, err := encoding.Decode(raw[:], []byte(body)); err != nil || n != randomBytes {
		return Token{}, fmt.Errorf("%w: not a canonical base64url encoding of %d bytes", ErrInvalid, randomBytes)
	}
	return Token{value: s}, nil
}

func checkPrefix(prefix string) error {
	if prefix != JoinPrefix && prefix != BearerPrefix {
		return fmt.Errorf("token: unknown prefix %q", prefix)
	}
	return nil
}

func isURLAlphabet(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// Value returns the token itself, to hand to its holder once.
func (t Token) Value() string { return t.value }

// Prefix returns the token's kind prefix, or "" for the zero Token.
func (t Token) Prefix() string {
	if len(t.value) < prefixLen {
		return ""
	}
	return t.value[:prefixLen]
}

// Hash returns the value to store for t; see the package-level Hash.
func (t Token) Hash() string { return Hash(t.value) }

// String identifies the token without revealing it: its prefix and the first
// characters of its hash, which is what the server stores anyway.
func (t Token) String() string {
	if t.value == "" {
		return "<no token>"
	}
	return t.Prefix() + "…" + Hash(t.value)[:8]
}

// GoString keeps %#v redacted too.
func (t Token) GoString() string { return "token.Token(" + t.String() + ")" }

// LogValue keeps slog output redacted.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// Hash returns the hex SHA-256 of a token, the only form servers store.
//
// A fast unsalted hash is right here, unlike for passwords: a token holds 256
// random bits, so inverting a leaked hash by guessing is infeasible whatever
// the hash speed, and there is no dictionary for a salt to defeat. A slow KDF
// would add nothing but CPU cost on every authenticated request, and being
// unsalted lets the hash serve directly as the lookup key.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// MatchesHash reports whether token hashes to stored, in time independent of
// where the two hashes first differ.
func MatchesHash(token, stored string) bool {
	return Equal(Hash(token), stored)
}

// Equal compares two secrets in constant time for equal lengths; only the
// lengths, which are fixed for tokens and hashes, can leak through timing.
func Equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
