package pki

import (
	"bytes"
	"crypto/x509"
	"math/big"
	"testing"
	"time"
)

func TestNewRootCA(t *testing.T) {
	ca := newTestCA(t)
	c := ca.Cert
	if c.Subject.CommonName != "Warden Root CA "+testTD {
		t.Errorf("CN = %q, want %q", c.Subject.CommonName, "Warden Root CA "+testTD)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://"+testTD {
		t.Errorf("URIs = %v, want [spiffe://%s]", c.URIs, testTD)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 1 {
		t.Errorf("IsCA=%v BasicConstraintsValid=%v MaxPathLen=%d, want true true 1", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("KeyUsage = %v, want CertSign|CRLSign", c.KeyUsage)
	}
	if len(c.SubjectKeyId) == 0 {
		t.Error("SubjectKeyId is empty")
	}
	if kt, err := KeyTypeOf(c.PublicKey); kt != KeyECDSAP256 || err != nil {
		t.Errorf("root key type = %q, %v; want %q", kt, err, KeyECDSAP256)
	}
	if !isSelfSigned(c) {
		t.Error("root is not self-signed")
	}
	if !c.NotBefore.Equal(testNow.Add(-clockSkew)) || !c.NotAfter.Equal(testNow.Add(365*24*time.Hour)) {
		t.Errorf("validity %s – %s, want %s – %s", c.NotBefore, c.NotAfter, testNow.Add(-clockSkew), testNow.Add(365*24*time.Hour))
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v is not a positive 128-bit number", c.SerialNumber)
	}
	if len(ca.Roots) != 1 || !ca.Roots[0].Equal(c) || len(ca.Chain) != 0 {
		t.Errorf("Roots = %d certs, Chain = %d certs; want the root alone and no chain", len(ca.Roots), len(ca.Chain))
	}
	if !publicKeysEqual(ca.Signer.Public(), c.PublicKey) {
		t.Error("Signer does not match the certificate")
	}
}

func TestNewRootCAInvalid(t *testing.T) {
	tests := []struct {
		name, td string
		validity time.Duration
		field    string
		want     string
	}{
		{"empty trust domain", "", time.Hour, "trust_domain", "empty"},
		{"uppercase trust domain", "Prod", time.Hour, "trust_domain", `contains 'P'`},
		{"port", "td:443", time.Hour, "trust_domain", `contains ':'`},
		{"zero validity", "td", 0, "validity", "must be positive"},
		{"negative validity", "td", -time.Hour, "validity", "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRootCA(tt.td, tt.validity, testNow)
			requireInvalid(t, err, tt.field, tt.want)
		})
	}
}

func TestRandomSerialUnique(t *testing.T) {
	seen := map[string]bool{}
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for range 1000 {
		s, err := randomSerial()
		if err != nil {
			t.Fatalf("randomSerial: %v", err)
		}
		if s.Sign() <= 0 || s.Cmp(limit) >= 0 {
			t.Fatalf("serial %v outside (0, 2^128)", s)
		}
		if seen[s.String()] {
			t.Fatalf("serial %v repeated", s)
		}
		seen[s.String()] = true
	}
}

func TestFingerprint(t *testing.T) {
	ca := newTestCA(t)
	fp := Fingerprint(ca.Cert)
	if len(fp) != 64 || fp != string(bytes.ToLower([]byte(fp))) {
		t.Fatalf("Fingerprint = %q, want 64 lowercase hex digits", fp)
	}
	var colon bytes.Buffer
	for i := 0; i < len(fp); i += 2 {
		if i > 0 {
			colon.WriteByte(':')
		}
		colon.WriteString(string(bytes.ToUpper([]byte(fp[i : i+2]))))
	}
	valid := []string{fp, string(bytes.ToUpper([]byte(fp))), colon.String(), "  " + fp + "\n"}
	for _, in := range valid {
		got, err := NormalizeFingerprint(in)
		if err != nil || got != fp {
			t.Errorf("NormalizeFingerprint(%q) = %q, %v; want %q", in, got, err, fp)
		}
	}
	invalid := []struct{ in, want string }{
		{"", "expected 64 hex digits"},
		{fp[:62], "expected 64 hex digits"},
		{fp + "00", "expected 64 hex digits"},
		{"zz" + fp[2:], "not hexadecimal"},
		{colon.String()[3:], "colon-separated bytes"},
		{"A:BB" + colon.String()[5:], "two hex digits per byte"},
	}
	for _, tt := range invalid {
		_, err := NormalizeFingerprint(tt.in)
		requireInvalid(t, err, "fingerprint", tt.want)
	}
}
