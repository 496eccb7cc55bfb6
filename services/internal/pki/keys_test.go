package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
)

func TestGenerateKeyAndKeyTypeOf(t *testing.T) {
	for _, kt := range KeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			k := testKey(t, kt)
			got, err := KeyTypeOf(k.Public())
			if err != nil || got != kt {
				t.Fatalf("KeyTypeOf(GenerateKey(%q)) = %q, %v; want %q, nil", kt, got, err, kt)
			}
		})
	}
	t.Run("default", func(t *testing.T) {
		k, err := GenerateKey("")
		if err != nil {
			t.Fatalf("GenerateKey(\"\"): %v", err)
		}
		if got, _ := KeyTypeOf(k.Public()); got != DefaultKeyType {
			t.Fatalf("GenerateKey(\"\") made a %q key, want %q", got, DefaultKeyType)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		_, err := GenerateKey("dsa-1024")
		requireInvalid(t, err, "key_type", `unsupported key type "dsa-1024"`)
	})
}

func TestKeyTypeOfRefuses(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatalf("generate P-224: %v", err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatalf("generate P-521: %v", err)
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate X25519: %v", err)
	}
	// Only the modulus length matters to KeyTypeOf, so no key is generated.
	rsaOfBits := func(bits int) *rsa.PublicKey {
		return &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), uint(bits-1)), E: 65537}
	}
	tests := []struct {
		name string
		pub  crypto.PublicKey
		want string
	}{
		{"P-224", &p224.PublicKey, "curve P-224"},
		{"P-521", &p521.PublicKey, "curve P-521"},
		{"RSA-1024", rsaOfBits(1024), "1024 bits"},
		{"RSA-2047", rsaOfBits(2047), "2047 bits"},
		{"RSA-4096", rsaOfBits(4096), "4096 bits"},
		{"X25519", x25519.PublicKey(), "not supported"},
		{"nil", nil, "not supported"},
		{"nil RSA", (*rsa.PublicKey)(nil), "empty RSA key"},
		{"short Ed25519", make([]byte, 3), "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kt, err := KeyTypeOf(tt.pub)
			if err == nil {
				t.Fatalf("KeyTypeOf(%s) = %q, want error", tt.name, kt)
			}
			requireInvalid(t, err, "public_key", tt.want)
		})
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	for _, kt := range KeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			k := testKey(t, kt)
			b := mustKeyPEM(t, k)
			if !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----")) {
				t.Fatalf("MarshalKeyPEM wrote %q, want a PKCS#8 PRIVATE KEY block", b[:30])
			}
			got, err := ParseKeyPEM(b)
			if err != nil {
				t.Fatalf("ParseKeyPEM: %v", err)
			}
			if !publicKeysEqual(got.Public(), k.Public()) {
				t.Fatal("ParseKeyPEM(MarshalKeyPEM(k)) has another public key")
			}
		})
	}
}

func TestParseKeyPEMLegacyForms(t *testing.T) {
	ec := testKey(t, KeyECDSAP256).(*ecdsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatalf("MarshalECPrivateKey: %v", err)
	}
	rk := testKey(t, KeyRSA2048).(*rsa.PrivateKey)
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	tests := []struct {
		name string
		pem  []byte
		want crypto.PublicKey
	}{
		{"SEC1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ec.Public()},
		{"SEC1 after EC PARAMETERS", append(ecParams, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), ec.Public()},
		{"PKCS1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), rk.Public()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKeyPEM(tt.pem)
			if err != nil {
				t.Fatalf("ParseKeyPEM: %v", err)
			}
			if !publicKeysEqual(got.Public(), tt.want) {
				t.Fatal("ParseKeyPEM returned another key")
			}
		})
	}
}

func TestParseKeyPEMErrors(t *testing.T) {
	k1 := mustKeyPEM(t, freshKey(t))
	k2 := mustKeyPEM(t, freshKey(t))
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("X25519: %v", err)
	}
	xDER, err := x509.MarshalPKCS8PrivateKey(x)
	if err != nil {
		t.Fatalf("marshal X25519: %v", err)
	}
	cert, _ := makeCert(t, certSpec{cn: "c"})
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "no PEM data found"},
		{"garbage", []byte("not a key"), "unexpected data at byte 0"},
		{"two keys", append(append([]byte{}, k1...), k2...), "more than one private key"},
		{"certificate", EncodeCertsPEM(cert), `unexpected PEM block "CERTIFICATE"`},
		{"encrypted PKCS8", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "encrypted"},
		{"legacy encrypted", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1}}), "encrypted"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "parse PRIVATE KEY"},
		{"X25519 cannot sign", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: xDER}), "cannot sign"},
		{"only EC PARAMETERS", pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6}}), "no private key found"},
		{"trailing garbage", append(append([]byte{}, k1...), "junk"...), "unexpected data"},
		{"too large", bytes.Repeat([]byte(" "), maxKeyPEM+1), "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKeyPEM(tt.in)
			if err == nil {
				t.Fatalf("ParseKeyPEM = %T, want error", k)
			}
			requireInvalid(t, err, "key_pem", tt.want)
		})
	}
}
