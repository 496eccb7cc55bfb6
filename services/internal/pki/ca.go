package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
)

// clockSkew backdates NotBefore so that a peer whose clock runs slightly
// behind accepts a certificate issued a moment ago.
const clockSkew = time.Minute

// CA is an issuing certificate authority: Warden's own root, or an
// operator-uploaded root or intermediate. It is safe for concurrent use as
// long as its fields are not modified.
type CA struct {
	// Cert is the certificate that signs leaves.
	Cert *x509.Certificate
	// Signer holds the private key of Cert.
	Signer crypto.Signer
	// Chain holds the intermediates between Cert and the root, nearest to
	// Cert first, excluding both; empty when Cert is a root or is signed by
	// the root directly. Peers need it to build a path to Roots.
	Chain []*x509.Certificate
	// Roots is what goes into the trust bundle.
	Roots []*x509.Certificate
}

// ChainOf is leaf, issued by ca, with what a peer that holds only the root needs to verify it: the
// issuing CA and the intermediates above it, nearest first. Roots are left out (peers ignore a sent
// root), so a leaf of a root CA goes alone.
func (ca *CA) ChainOf(leaf *x509.Certificate) []*x509.Certificate {
	for _, r := range ca.Roots {
		if r.Equal(ca.Cert) {
			return []*x509.Certificate{leaf}
		}
	}
	return append([]*x509.Certificate{leaf, ca.Cert}, ca.Chain...)
}

// NewRootCA creates a self-signed ECDSA P-256 root for trustDomain, valid
// from now (less clock skew) for validity. MaxPathLen 1 leaves room for an
// intermediate should the root later be kept offline.
func NewRootCA(trustDomain string, validity time.Duration, now time.Time) (*CA, error) {
	if err := identity.ValidTrustDomain(trustDomain); err != nil {
		return nil, &InvalidError{Field: "trust_domain", Reason: err.Error(), Err: err}
	}
	if validity <= 0 {
		return nil, invalidf("validity", "must be positive, got %s", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Warden Root CA " + trustDomain, Organization: []string{"Warden"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	// CreateCertificate derives SubjectKeyId from the key for CA templates.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse root certificate: %w", err)
	}
	return &CA{Cert: cert, Signer: key, Roots: []*x509.Certificate{cert}}, nil
}

// LoadUploadedCA loads an operator's CA. certPEM holds exactly the signing
// certificate and keyPEM its key. For a self-signed root chainPEM is empty;
// for an intermediate it holds the certificates above it up to and including
// the offline root, in any order. The root becomes the trust bundle.
func LoadUploadedCA(certPEM, keyPEM, chainPEM []byte, now time.Time) (*CA, error) {
	certs, err := parseCertsPEM("cert_pem", certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, invalidf("cert_pem", "holds %d certificates, expected exactly one (put intermediates and the root in chain_pem)", len(certs))
	}
	cert := certs[0]
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, invalidf("key_pem", "key does not match the CA certificate")
	}
	if reason := checkForeignKey(cert.PublicKey); reason != "" {
		return nil, invalidf("cert_pem", "CA key: %s", reason)
	}
	if err := checkCACert("cert_pem", cert, now); err != nil {
		return nil, err
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, invalidf("cert_pem", "certificate lacks the keyCertSign key usage")
	}

	if isSelfSigned(cert) {
		if len(bytes.TrimSpace(chainPEM)) != 0 {
			return nil, invalidf("chain_pem", "must be empty for a self-signed root CA")
		}
		return &CA{Cert: cert, Signer: key, Roots: []*x509.Certificate{cert}}, nil
	}

	if len(bytes.TrimSpace(chainPEM)) == 0 {
		return nil, invalidf("chain_pem", "required: the certificate is not self-signed, so give its chain up to and including the root")
	}
	chain, err := parseCertsPEM("chain_pem", chainPEM)
	if err != nil {
		return nil, err
	}
	var root *x509.Certificate
	intermediates := x509.NewCertPool()
	for _, c := range chain {
		if isSelfSigned(c) {
			if root != nil {
				return nil, invalidf("chain_pem", "holds more than one self-signed root")
			}
			root = c
			continue
		}
		intermediates.AddCert(c)
	}
	if root == nil {
		return nil, invalidf("chain_pem", "does not include the self-signed root")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	paths, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, invalidErr("chain_pem", err, "CA certificate does not verify to the root %q", root.Subject.String())
	}
	path := paths[0]
	// The CA certificate verifies, but a leaf below it adds one more certificate under every CA above
	// it, which a path length constraint may forbid: everything Warden issued would then fail to verify.
	for below, c := range path[1:] {
		if limit := c.MaxPathLen; (limit > 0 || c.MaxPathLenZero) && below+1 > limit {
			return nil, invalidf("chain_pem", "%q allows %d CA certificates below it (pathLenConstraint) and this CA is number %d, so the certificates it issued would not verify", c.Subject.String(), limit, below+1)
		}
	}
	return &CA{
		Cert:   cert,
		Signer: key,
		Chain:  path[1 : len(path)-1],
		Roots:  []*x509.Certificate{root},
	}, nil
}

func checkCACert(field string, c *x509.Certificate, now time.Time) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return invalidf(field, "certificate %q is not a CA (basicConstraints CA:TRUE missing)", c.Subject.String())
	}
	return checkValidity(field, "certificate", c, now)
}

func checkValidity(field, what string, c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return invalidf(field, "%s %q is not valid until %s", what, c.Subject.String(), c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return invalidf(field, "%s %q expired at %s", what, c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// isSelfSigned reports a certificate that is its own issuer and verifies
// under its own key; a matching name alone is not enough.
func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// randomSerial returns a positive serial of 128 random bits, which RFC 5280
// and the CA/B Forum expect to be unpredictable.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
