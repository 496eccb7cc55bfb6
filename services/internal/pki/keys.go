package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
)

// KeyType names a key algorithm and size Warden issues certificates for.
type KeyType string

// The key types agents may use. Anything else, including larger RSA keys, is
// refused so that every node stays within what the TLS profiles allow.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyECDSAP384 KeyType = "ecdsa-p384"
	KeyEd25519   KeyType = "ed25519"
	KeyRSA2048   KeyType = "rsa-2048"
	KeyRSA3072   KeyType = "rsa-3072"
)

// DefaultKeyType is what GenerateKey uses for an empty KeyType.
const DefaultKeyType = KeyECDSAP256

// KeyTypes lists every supported KeyType, default first.
func KeyTypes() []KeyType {
	return []KeyType{KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA2048, KeyRSA3072}
}

// GenerateKey creates a private key of type kt, or of DefaultKeyType if kt is
// empty.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch kt {
	case "", KeyECDSAP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyEd25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case KeyRSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return nil, invalidf("key_type", "unsupported key type %q; supported: %v", kt, KeyTypes())
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", kt, err)
	}
	return key, nil
}

// KeyTypeOf returns the KeyType of pub, refusing keys outside KeyTypes:
// other curves, other RSA sizes, X25519 and anything unknown.
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	kt, reason := keyTypeOf(pub)
	if reason != "" {
		return "", invalidf("public_key", "%s", reason)
	}
	return kt, nil
}

// keyTypeOf returns a reason instead of an error so callers can file the
// problem under their own field.
func keyTypeOf(pub crypto.PublicKey) (KeyType, string) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "", "empty ECDSA key"
		}
		switch k.Curve {
		case elliptic.P256():
			return KeyECDSAP256, ""
		case elliptic.P384():
			return KeyECDSAP384, ""
		}
		return "", fmt.Sprintf("ECDSA curve %s is not supported; use P-256 or P-384", k.Curve.Params().Name)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", fmt.Sprintf("Ed25519 key is %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
		return KeyEd25519, ""
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "", "empty RSA key"
		}
		switch bits := k.N.BitLen(); bits {
		case 2048:
			return KeyRSA2048, ""
		case 3072:
			return KeyRSA3072, ""
		default:
			return "", fmt.Sprintf("RSA key of %d bits is not supported; use 2048 or 3072", bits)
		}
	default:
		return "", fmt.Sprintf("key algorithm %T is not supported; use ECDSA P-256/P-384, Ed25519 or RSA 2048/3072", pub)
	}
}

// checkForeignKey accepts the keys operators are likely to bring with an
// uploaded CA or HTTPS certificate. It is wider than KeyTypeOf, because an
// offline root is often RSA-4096 or P-521, but still refuses weak keys.
func checkForeignKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k != nil && k.Curve == elliptic.P521() {
			return ""
		}
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "empty RSA key"
		}
		if bits := k.N.BitLen(); bits < 2048 || bits > 8192 {
			return fmt.Sprintf("RSA key of %d bits is not supported; use 2048 to 8192 bits", bits)
		}
		return ""
	}
	_, reason := keyTypeOf(pub)
	return reason
}

// publicKeysEqual compares keys without knowing their type; all public key
// types of the standard library implement Equal.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}
