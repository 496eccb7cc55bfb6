package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
)

// ErrCAExpired is returned by Issue when the CA certificate is outside its
// validity period, so nothing it signs would verify; the CA must be rotated.
var ErrCAExpired = errors.New("CA certificate is not valid at this time")

// Template says what to put into a leaf certificate. The server fills it
// from its registry; nothing in it comes from the CSR.
type Template struct {
	ID       identity.ID
	DNSNames []string
	IPs      []net.IP
	Lifetime time.Duration
	// Server and Client select the serverAuth and clientAuth extended key
	// usages; at least one must be set.
	Server, Client bool
}

// Issue signs a leaf certificate for pub as described by tpl. The validity
// starts a minute before now, to absorb clock skew, and never extends beyond
// the CA's own validity.
func (ca *CA) Issue(tpl Template, pub crypto.PublicKey, now time.Time) (*x509.Certificate, []byte, error) {
	if err := tpl.validate(); err != nil {
		return nil, nil, err
	}
	if _, reason := keyTypeOf(pub); reason != "" {
		return nil, nil, invalidf("public_key", "%s", reason)
	}
	if now.Before(ca.Cert.NotBefore) || now.After(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("issue for %s: %w (valid %s to %s)", tpl.ID, ErrCAExpired,
			ca.Cert.NotBefore.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	notBefore := now.Add(-clockSkew)
	if notBefore.Before(ca.Cert.NotBefore) {
		notBefore = ca.Cert.NotBefore
	}
	notAfter := now.Add(tpl.Lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		// RSA key exchange in TLS 1.0–1.2 (the OLD profile) encrypts to the key.
		usage |= x509.KeyUsageKeyEncipherment
	}
	var extUsage []x509.ExtKeyUsage
	if tpl.Server {
		extUsage = append(extUsage, x509.ExtKeyUsageServerAuth)
	}
	if tpl.Client {
		extUsage = append(extUsage, x509.ExtKeyUsageClientAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: tpl.ID.Name, Organization: []string{"Warden"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           extUsage,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{tpl.ID.URL()},
		DNSNames:              tpl.DNSNames,
		IPAddresses:           tpl.IPs,
		// AuthorityKeyId is taken from ca.Cert.SubjectKeyId by CreateCertificate.
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Signer)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", tpl.ID, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate issued for %s: %w", tpl.ID, err)
	}
	return cert, der, nil
}

func (tpl Template) validate() error {
	if err := tpl.ID.Validate(); err != nil {
		return &InvalidError{Field: "id", Reason: err.Error(), Err: err}
	}
	if tpl.Lifetime <= 0 {
		return invalidf("lifetime", "must be positive, got %s", tpl.Lifetime)
	}
	if !tpl.Server && !tpl.Client {
		return invalidf("usage", "certificate must allow server or client authentication")
	}
	for _, name := range tpl.DNSNames {
		if err := validDNSName(name); err != nil {
			return invalidf("dns_names", "%q: %s", name, err)
		}
	}
	for _, ip := range tpl.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return invalidf("ips", "%q is not an IPv4 or IPv6 address", ip.String())
		}
	}
	return nil
}

// validDNSName accepts lowercase host names only: no wildcards, since Warden
// names concrete nodes, and no uppercase, so that SANs compare bytewise.
func validDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("must be 1 to 253 characters")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("labels must be 1 to 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("labels cannot start or end with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z') && !('0' <= c && c <= '9') && c != '-' {
				return fmt.Errorf("contains %q; allowed are a-z, 0-9, '-' and '.'", c)
			}
		}
	}
	return nil
}
