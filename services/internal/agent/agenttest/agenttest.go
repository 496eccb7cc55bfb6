// Package agenttest mints CAs and node certificates for the agent's unit tests, and builds the live
// state the fronts read. Imported only by tests.
package agenttest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// TrustDomain is the trust domain of every test identity.
const TrustDomain = "test.warden"

// CA is a test CA.
type CA struct {
	*pki.CA
	T testing.TB
}

// NewCA creates a root CA valid for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := pki.NewRootCA(TrustDomain, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &CA{CA: ca, T: t}
}

// Pool is a pool holding the CA.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Cert)
	return p
}

// PEM is the CA certificate, PEM.
func (c *CA) PEM() []byte { return pki.EncodeCertsPEM(c.Cert) }

// Leaf is a minted certificate.
type Leaf struct {
	TLS     *tls.Certificate
	CertPEM []byte
	KeyPEM  []byte
	Cert    *x509.Certificate
}

// Mint issues a client+server certificate for id, valid for lifetime, for localhost and 127.0.0.1.
func (c *CA) Mint(id identity.ID, lifetime time.Duration) Leaf {
	c.T.Helper()
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		c.T.Fatal(err)
	}
	cert, _, err := c.Issue(pki.Template{
		ID: id, Lifetime: lifetime, Server: true, Client: true,
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
	}, key.Public(), time.Now())
	if err != nil {
		c.T.Fatal(err)
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		c.T.Fatal(err)
	}
	certPEM := pki.EncodeCertsPEM(cert)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		c.T.Fatal(err)
	}
	return Leaf{TLS: &pair, CertPEM: certPEM, KeyPEM: keyPEM, Cert: cert}
}

// Node is the identity of a test node.
func Node(role identity.Role, name string) identity.ID {
	return identity.NodeID(TrustDomain, role, name)
}

// Creds builds live credentials trusting ca and holding the given certificates.
func (c *CA) Creds(certs map[certv1.CertKind]Leaf) *live.Creds {
	out := &live.Creds{TrustDomain: TrustDomain, Roots: c.Pool(), Revoked: map[string]bool{}, Certs: map[certv1.CertKind]*tls.Certificate{}}
	for k, l := range certs {
		out.Certs[k] = l.TLS
	}
	return out
}
