// Package password enforces the operator password policy and stores
// passwords as argon2id hashes in PHC string format:
//
//	$argon2id$v=19$m=65536,t=3,p=2$<salt>$<hash>
//
// with salt and hash in unpadded standard base64. Verify takes the cost
// parameters from the stored string, so they can be raised later: old hashes
// keep verifying and NeedsRehash tells the caller to re-hash at next login.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Policy limits, counted in characters (runes), not bytes.
const (
	MinLength = 8
	MaxLength = 64
)

// Policy violations. Validate joins every rule that fails, so errors.Is
// matches each one and the message lists them all.
var (
	ErrTooShort     = fmt.Errorf("password: must be at least %d characters", MinLength)
	ErrTooLong      = fmt.Errorf("password: must be at most %d characters", MaxLength)
	ErrNoDigit      = errors.New("password: must contain a digit")
	ErrNoUpper      = errors.New("password: must contain an upper-case letter")
	ErrNoLower      = errors.New("password: must contain a lower-case letter")
	ErrNoSpecial    = errors.New("password: must contain a special character (not a letter or digit)")
	ErrInvalidUTF8  = errors.New("password: is not valid UTF-8")
	ErrControlChars = errors.New("password: must not contain control characters")
)

// ErrMalformedHash means a stored hash is not a PHC argon2id string this
// package can verify.
var ErrMalformedHash = errors.New("password: malformed hash")

// Validate checks pw against the operator password policy: 8–64 characters
// with at least one digit, one upper-case letter, one lower-case letter and
// one special character. Letters and digits from any script count; a space
// or any other printable non-alphanumeric character counts as special.
// Control characters are refused because they cannot be typed reliably and
// usually mean a paste went wrong.
func Validate(pw string) error {
	if !utf8.ValidString(pw) {
		return ErrInvalidUTF8
	}
	var errs []error
	switch n := utf8.RuneCountInString(pw); {
	case n < MinLength:
		errs = append(errs, ErrTooShort)
	case n > MaxLength:
		errs = append(errs, ErrTooLong)
	}
	var digit, upper, lower, special, control bool
	for _, r := range pw {
		switch {
		case unicode.IsControl(r):
			control = true
		case unicode.IsDigit(r):
			digit = true
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsLower(r):
			lower = true
		case !unicode.IsLetter(r):
			special = true
		}
	}
	for _, rule := range []struct {
		failed bool
		err    error
	}{
		{!digit, ErrNoDigit},
		{!upper, ErrNoUpper},
		{!lower, ErrNoLower},
		{!special, ErrNoSpecial},
		{control, ErrControlChars},
	} {
		if rule.failed {
			errs = append(errs, rule.err)
		}
	}
	return errors.Join(errs...)
}

type params struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
	saltLen int
	keyLen  int
}

// defaultParams take about 60 ms on two cores of a 2025 x86-64 server,
// inside the 50–100 ms budget for an interactive login and well above
// OWASP's argon2id floor (m=19 MiB, t=2, p=1). Raise them here as hardware
// improves; NeedsRehash then flags hashes made with the old values.
var defaultParams = params{memory: 64 << 10, time: 3, threads: 2, saltLen: 16, keyLen: 32}

// Bounds on parameters read from a stored hash. They are far above anything
// Hash produces and exist so that a corrupted or planted hash string cannot
// make Verify allocate gigabytes or spin for minutes.
const (
	maxMemory  = 1 << 20 // KiB, i.e. 1 GiB
	maxTime    = 64
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
)

// Hash returns the argon2id PHC string for pw with a fresh random salt.
func Hash(pw string) (string, error) {
	return hashWith(pw, defaultParams)
}

func hashWith(pw string, p params) (string, error) {
	salt := make([]byte, p.saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password: generate salt: %w", err)
	}
	key := idKey([]byte(pw), salt, p, uint32(p.keyLen))
	return encode(p, salt, key), nil
}

// idKey runs argon2id and hands its memory (64 MiB by default) back to the OS at once: logins are rare,
// and without it a control plane that has hashed two passwords at start keeps ~150 MiB of RSS until the
// runtime's periodic scavenger gets to it.
func idKey(pw, salt []byte, p params, keyLen uint32) []byte {
	key := argon2.IDKey(pw, salt, p.time, p.memory, p.threads, keyLen)
	debug.FreeOSMemory()
	return key
}

// Verify reports whether pw matches encoded. A well-formed hash that does not
// match gives (false, nil); an error means the stored hash itself is unusable.
func Verify(pw, encoded string) (bool, error) {
	p, salt, want, err := decode(encoded)
	if err != nil {
		return false, err
	}
	got := idKey([]byte(pw), salt, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// NeedsRehash reports whether encoded was made with other parameters than
// Hash uses now (or cannot be parsed), so the caller should store a fresh
// Hash after the next successful login.
func NeedsRehash(encoded string) bool {
	p, _, _, err := decode(encoded)
	return err != nil || p != defaultParams
}

var b64 = base64.RawStdEncoding.Strict()

func encode(p params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// decode parses a PHC argon2id string strictly: fixed field order, decimal
// numbers without leading zeros, canonical base64. Every accepted string is
// exactly what encode would produce for its values.
func decode(encoded string) (params, []byte, []byte, error) {
	fields := strings.Split(encoded, "$")
	if len(fields) != 6 || fields[0] != "" {
		return params{}, nil, nil, fmt.Errorf("%w: want 5 '$'-separated fields", ErrMalformedHash)
	}
	if fields[1] != "argon2id" {
		return params{}, nil, nil, fmt.Errorf("%w: algorithm %q, want argon2id", ErrMalformedHash, fields[1])
	}
	if fields[2] != "v="+strconv.Itoa(argon2.Version) {
		return params{}, nil, nil, fmt.Errorf("%w: unsupported version field %q", ErrMalformedHash, fields[2])
	}
	p, err := decodeParams(fields[3])
	if err != nil {
		return params{}, nil, nil, fmt.Errorf("%w: %w", ErrMalformedHash, err)
	}
	salt, err := decodeB64(fields[4], minSaltLen, maxSaltLen)
	if err != nil {
		return params{}, nil, nil, fmt.Errorf("%w: salt: %w", ErrMalformedHash, err)
	}
	key, err := decodeB64(fields[5], minKeyLen, maxKeyLen)
	if err != nil {
		return params{}, nil, nil, fmt.Errorf("%w: hash: %w", ErrMalformedHash, err)
	}
	p.saltLen, p.keyLen = len(salt), len(key)
	return p, salt, key, nil
}

func decodeParams(s string) (params, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return params{}, fmt.Errorf("parameters %q: want m=…,t=…,p=…", s)
	}
	var vals [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(parts[i], name+"=")
		if !ok {
			return params{}, fmt.Errorf("parameter %d: want %s=", i+1, name)
		}
		n, err := parseDecimal(v)
		if err != nil {
			return params{}, fmt.Errorf("parameter %s: %w", name, err)
		}
		vals[i] = n
	}
	m, t, p := vals[0], vals[1], vals[2]
	switch {
	case p < 1 || p > 255:
		return params{}, fmt.Errorf("parallelism %d outside 1-255", p)
	case m < 8*p || m > maxMemory:
		// argon2 needs 8 KiB per lane; below that the library would silently
		// use more memory than the string says.
		return params{}, fmt.Errorf("memory %d KiB outside %d-%d", m, 8*p, maxMemory)
	case t < 1 || t > maxTime:
		return params{}, fmt.Errorf("iterations %d outside 1-%d", t, maxTime)
	}
	return params{memory: uint32(m), time: uint32(t), threads: uint8(p)}, nil
}

// parseDecimal accepts only plain canonical decimals: strconv alone would
// also take "+5" and "007".
func parseDecimal(s string) (uint64, error) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%q is not a canonical decimal", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a canonical decimal", s)
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

func decodeB64(s string, minLen, maxLen int) ([]byte, error) {
	// Length check first bounds the allocation; the alphabet check closes the
	// decoder's habit of skipping '\r' and '\n'.
	if len(s) > b64.EncodedLen(maxLen) {
		return nil, fmt.Errorf("longer than %d bytes", maxLen)
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("contains line breaks")
	}
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not canonical unpadded base64: %w", err)
	}
	if len(b) < minLen {
		return nil, fmt.Errorf("%d bytes, need at least %d", len(b), minLen)
	}
	return b, nil
}
