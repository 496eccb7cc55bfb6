package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"strings"
)

// Fingerprint returns the SHA-256 of c's DER as 64 lowercase hex digits, the
// form Warden stores and compares.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Serial returns a certificate serial number in the form Warden stores, lists and revokes by: lowercase
// hex without leading zeros. It runs on every authenticated call, so it avoids fmt.
func Serial(n *big.Int) string { return n.Text(16) }

// NormalizeFingerprint turns a SHA-256 fingerprint as people paste it — hex
// in either case, bare or colon-separated as openssl prints it — into the
// form Fingerprint returns.
func NormalizeFingerprint(s string) (string, error) {
	const field = "fingerprint"
	s = strings.TrimSpace(s)
	if strings.Contains(s, ":") {
		pairs := strings.Split(s, ":")
		if len(pairs) != sha256.Size {
			return "", invalidf(field, "expected %d colon-separated bytes, got %d", sha256.Size, len(pairs))
		}
		for _, p := range pairs {
			if len(p) != 2 {
				return "", invalidf(field, "colon-separated form must have two hex digits per byte, got %q", p)
			}
		}
		s = strings.Join(pairs, "")
	}
	if len(s) != 2*sha256.Size {
		return "", invalidf(field, "expected %d hex digits for SHA-256, got %d characters", 2*sha256.Size, len(s))
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return "", invalidf(field, "not hexadecimal")
	}
	return hex.EncodeToString(b), nil
}
