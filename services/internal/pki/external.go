package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"time"
)

// ExternalBundle is an operator-supplied HTTPS certificate with its key.
type ExternalBundle struct {
	Key  crypto.Signer
	Leaf *x509.Certificate
	// Intermediates is the verified path from Leaf towards the root, nearest
	// first, without Leaf and without the root: what a server sends after
	// the leaf.
	Intermediates []*x509.Certificate
	// SelfAnchored is set when the chain was accepted only because it ends
	// in a self-signed certificate the bundle itself contains (see
	// ParseExternalBundle); clients must be given that root out of band.
	SelfAnchored bool
}

// ParseExternalBundle parses one PEM holding a private key, a leaf
// certificate and its intermediates in any order, as the original product's
// API took it, and checks that it can serve HTTPS at now: exactly one
// unencrypted key and one non-CA certificate, the key matches the leaf, the
// leaf is within its validity and names at least one DNS or IP SAN, and the
// chain verifies for serverAuth.
//
// The chain is verified against roots. If roots is nil the system pool is
// used, and when that fails for want of a known root the bundle may bring
// its own anchor: a chain ending in a self-signed certificate included in
// the bundle is accepted and SelfAnchored is set. This keeps self-signed and
// private-PKI deployments of the original product working; whoever uploads
// the bundle is an administrator, so the anchor is theirs to choose. With an
// explicit roots pool there is no such fallback.
func ParseExternalBundle(pemBytes []byte, roots *x509.CertPool, now time.Time) (*ExternalBundle, error) {
	const field = "bundle_pem"
	blocks, err := splitPEM(field, pemBytes, maxBundlePEM)
	if err != nil {
		return nil, err
	}
	var (
		keys  []crypto.Signer
		certs []*x509.Certificate
	)
	for i, block := range blocks {
		switch {
		case block.Type == blockCertificate:
			c, err := parseCertBlock(field, i, block)
			if err != nil {
				return nil, err
			}
			certs = append(certs, c)
		case isKeyBlock(block.Type):
			k, err := parseKeyBlock(field, block)
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
		case block.Type == blockECParameters:
			// Written by `openssl ecparam -genkey` before the key; the key
			// itself names its curve.
		default:
			return nil, invalidf(field, "PEM block %d is %q, expected a certificate or private key", i+1, block.Type)
		}
	}
	switch {
	case len(keys) == 0:
		return nil, invalidf(field, "no private key found")
	case len(keys) > 1:
		return nil, invalidf(field, "found %d private keys, expected exactly one", len(keys))
	case len(certs) == 0:
		return nil, invalidf(field, "no certificate found")
	}
	var leaf *x509.Certificate
	others := x509.NewCertPool()
	for _, c := range certs {
		if c.IsCA {
			others.AddCert(c)
			continue
		}
		if leaf != nil {
			return nil, invalidf(field, "found more than one leaf (non-CA) certificate: %q and %q", leaf.Subject.String(), c.Subject.String())
		}
		leaf = c
	}
	if leaf == nil {
		return nil, invalidf(field, "no leaf certificate found: every certificate is a CA")
	}
	key := keys[0]
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, invalidf(field, "key does not match leaf certificate")
	}
	if reason := checkForeignKey(leaf.PublicKey); reason != "" {
		return nil, invalidf(field, "leaf certificate key: %s", reason)
	}
	if err := checkValidity(field, "leaf certificate", leaf, now); err != nil {
		return nil, err
	}
	if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
		return nil, invalidf(field, "leaf certificate has no DNS or IP subject alternative name")
	}

	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: others,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	paths, verr := leaf.Verify(opts)
	selfAnchored := false
	if verr != nil && roots == nil && isUnknownAuthority(verr) {
		if anchors := selfSignedPool(certs); anchors != nil {
			opts.Roots = anchors
			paths, verr = leaf.Verify(opts)
			selfAnchored = verr == nil
		}
	}
	if verr != nil {
		return nil, invalidErr(field, verr, "certificate chain does not verify")
	}
	path := paths[0]
	var intermediates []*x509.Certificate
	if len(path) > 2 {
		intermediates = path[1 : len(path)-1]
	}
	return &ExternalBundle{Key: key, Leaf: leaf, Intermediates: intermediates, SelfAnchored: selfAnchored}, nil
}

func isUnknownAuthority(err error) bool {
	var ua x509.UnknownAuthorityError
	var sys x509.SystemRootsError
	return errors.As(err, &ua) || errors.As(err, &sys)
}

func selfSignedPool(certs []*x509.Certificate) *x509.CertPool {
	var pool *x509.CertPool
	for _, c := range certs {
		if isSelfSigned(c) {
			if pool == nil {
				pool = x509.NewCertPool()
			}
			pool.AddCert(c)
		}
	}
	return pool
}

// ValidateCABundle checks a CA bundle that Warden will trust for outgoing
// connections (webhooks, databases): at least one certificate, each a CA or
// self-signed (some servers pin a self-signed leaf), none expired at now.
// Certificates not yet valid are accepted, so a bundle can be staged before
// a rotation.
func ValidateCABundle(pemBytes []byte, now time.Time) ([]*x509.Certificate, error) {
	const field = "ca_bundle_pem"
	certs, err := parseCertsPEM(field, pemBytes)
	if err != nil {
		return nil, err
	}
	for i, c := range certs {
		if !(c.BasicConstraintsValid && c.IsCA) && !isSelfSigned(c) {
			return nil, invalidf(field, "certificate %d (%q) is neither a CA nor self-signed", i+1, c.Subject.String())
		}
		if now.After(c.NotAfter) {
			return nil, invalidf(field, "certificate %d (%q) expired at %s", i+1, c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return certs, nil
}
