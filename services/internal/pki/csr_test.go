package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/warden-sec/warden/services/internal/identity"
)

func TestCreateAndParseCSR(t *testing.T) {
	id := identity.NodeID(testTD, identity.RoleCoreapp, "c1")
	for _, kt := range KeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			b, err := CreateCSR(testKey(t, kt), id)
			if err != nil {
				t.Fatalf("CreateCSR: %v", err)
			}
			csr, err := ParseCSR(b)
			if err != nil {
				t.Fatalf("ParseCSR: %v", err)
			}
			if len(csr.URIs) != 1 || csr.URIs[0].String() != id.String() {
				t.Fatalf("CSR URIs = %v, want [%s]", csr.URIs, id)
			}
		})
	}
	if _, err := CreateCSR(testKey(t, KeyECDSAP256), identity.NodeID(testTD, "db", "c1")); err == nil {
		t.Fatal("CreateCSR accepted an invalid identity")
	}
}

func TestParseCSRRejects(t *testing.T) {
	id := identity.AdminID(testTD, "alice")
	good, err := CreateCSR(testKey(t, KeyECDSAP256), id)
	if err != nil {
		t.Fatalf("CreateCSR: %v", err)
	}
	block, _ := pem.Decode(good)

	tampered := bytes.Clone(block.Bytes)
	// The last byte belongs to the signature; flipping it breaks it without
	// breaking the DER structure.
	tampered[len(tampered)-1] ^= 0xff

	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatalf("generate P-224: %v", err)
	}
	p224DER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p224)
	if err != nil {
		t.Fatalf("create P-224 CSR: %v", err)
	}

	enc := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "no PEM data found"},
		{"DER instead of PEM", block.Bytes, "unexpected data at byte 0"},
		{"two CSRs", append(bytes.Clone(good), good...), "holds 2 PEM blocks"},
		{"wrong type", enc("CERTIFICATE", block.Bytes), `PEM block is "CERTIFICATE"`},
		{"old type", enc("NEW CERTIFICATE REQUEST", block.Bytes), `PEM block is "NEW CERTIFICATE REQUEST"`},
		{"headers", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Headers: map[string]string{"a": "b"}, Bytes: block.Bytes}), "PEM headers"},
		{"bad DER", enc("CERTIFICATE REQUEST", []byte{0x30, 0x03, 1, 2, 3}), "parse certificate request"},
		{"bad signature", enc("CERTIFICATE REQUEST", tampered), "signature does not verify"},
		{"P-224 key", enc("CERTIFICATE REQUEST", p224DER), "curve P-224"},
		{"trailing garbage", append(bytes.Clone(good), "x"...), "unexpected data"},
		{"too large", bytes.Repeat([]byte("\n"), maxCSRPEM+1), "at most 16384"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSR(tt.in)
			if err == nil {
				t.Fatalf("ParseCSR = %v, want error", csr.Subject)
			}
			requireInvalid(t, err, "csr_pem", tt.want)
		})
	}
}
