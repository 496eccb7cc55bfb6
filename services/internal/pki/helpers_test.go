package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// testNow is the fixed clock of every test, so expiry cases are exact.
var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

const testTD = "prod.example"

var (
	keyCacheMu sync.Mutex
	keyCache   = map[KeyType]crypto.Signer{}
)

// testKey returns one key per type for the whole test binary, because
// generating RSA-3072 keys under -race costs seconds.
func testKey(t testing.TB, kt KeyType) crypto.Signer {
	t.Helper()
	keyCacheMu.Lock()
	defer keyCacheMu.Unlock()
	if k, ok := keyCache[kt]; ok {
		return k
	}
	k, err := GenerateKey(kt)
	if err != nil {
		t.Fatalf("GenerateKey(%q): %v", kt, err)
	}
	keyCache[kt] = k
	return k
}

// freshKey returns a new P-256 key, for tests that need distinct keys.
func freshKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := GenerateKey(KeyECDSAP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return k
}

func newTestCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewRootCA(testTD, 365*24*time.Hour, testNow)
	if err != nil {
		t.Fatalf("NewRootCA: %v", err)
	}
	return ca
}

// certSpec describes a certificate built directly with crypto/x509, for
// material Warden did not issue: offline roots, operators' certificates,
// deliberately broken ones.
type certSpec struct {
	cn        string
	ca        bool
	keyUsage  x509.KeyUsage
	extUsage  []x509.ExtKeyUsage
	dns       []string
	ips       []net.IP
	notBefore time.Time
	notAfter  time.Time
	key       crypto.Signer
	// pathLen is the CA's pathLenConstraint (nil: none).
	pathLen *int
	// parent and parentKey sign the certificate; nil means self-signed.
	parent    *x509.Certificate
	parentKey crypto.Signer
}

func makeCert(t testing.TB, s certSpec) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	if s.key == nil {
		s.key = freshKey(t)
	}
	if s.notBefore.IsZero() {
		s.notBefore = testNow.Add(-24 * time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = testNow.Add(30 * 24 * time.Hour)
	}
	if s.keyUsage == 0 {
		s.keyUsage = x509.KeyUsageDigitalSignature
		if s.ca {
			s.keyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatalf("serial: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.cn},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		KeyUsage:              s.keyUsage,
		ExtKeyUsage:           s.extUsage,
		BasicConstraintsValid: true,
		IsCA:                  s.ca,
		DNSNames:              s.dns,
		IPAddresses:           s.ips,
	}
	if s.pathLen != nil {
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = *s.pathLen, *s.pathLen == 0
	}
	parent, parentKey := tmpl, s.key
	if s.parent != nil {
		parent, parentKey = s.parent, s.parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, s.key.Public(), parentKey)
	if err != nil {
		t.Fatalf("create certificate %q: %v", s.cn, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate %q: %v", s.cn, err)
	}
	return c, s.key
}

func mustKeyPEM(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	b, err := MarshalKeyPEM(k)
	if err != nil {
		t.Fatalf("MarshalKeyPEM: %v", err)
	}
	return b
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// requireInvalid fails unless err is an *InvalidError for field whose
// message contains want.
func requireInvalid(t testing.TB, err error, field, want string) {
	t.Helper()
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("error = %v (%T), want *InvalidError for %q containing %q", err, err, field, want)
	}
	if inv.Field != field {
		t.Fatalf("error field = %q (%v), want %q", inv.Field, err, field)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %q, want it to contain %q", err.Error(), want)
	}
}
