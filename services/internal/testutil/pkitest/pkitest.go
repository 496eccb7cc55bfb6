// Package pkitest makes what operators bring to Warden from their own PKI, for tests: CA certificates
// and the external certificate bundles they upload. Imported only by tests.
package pkitest

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/pki"
)

// CA makes a CA certificate signed by parent (self-signed when parent is nil): a root allows one CA
// below it, an intermediate none.
func CA(t testing.TB, cn string, kt pki.KeyType, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	pathLen := 0
	if parent == nil {
		pathLen = 1
	}
	return CAPathLen(t, cn, kt, parent, parentKey, pathLen)
}

// CAPathLen is CA with the given pathLenConstraint (-1: none).
func CAPathLen(t testing.TB, cn string, kt pki.KeyType, parent *x509.Certificate, parentKey crypto.Signer, pathLen int) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := pki.GenerateKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Operator"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	return create(t, tmpl, parent, key.Public(), parentKey), key
}

// KeyPEM is k as PKCS#8 PEM.
func KeyPEM(t testing.TB, k crypto.Signer) string {
	t.Helper()
	b, err := pki.MarshalKeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ExternalBundle is what an operator uploads for a Webapp's HTTPS: key, a server certificate for names
// and the CA that signed it, in one PEM. keyOverride, if not nil, is put in place of the certificate's
// key (a bundle whose key does not match).
func ExternalBundle(t testing.TB, names []string, notAfter time.Time, keyOverride crypto.Signer) (string, *x509.Certificate) {
	t.Helper()
	ca, caKey := CA(t, "Operator Web CA", pki.KeyECDSAP256, nil, nil)
	key, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	leaf := create(t, &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: names,
	}, ca, key.Public(), caKey)
	if keyOverride != nil {
		key = keyOverride
	}
	return KeyPEM(t, key) + string(pki.EncodeCertsPEM(leaf, ca)), leaf
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
