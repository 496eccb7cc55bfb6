// Package live holds what the agent has applied, in the form its fronts and its mesh prober read on every
// connection: the node's certificates with the trust bundle and CRL, and the rendered policy. Each is an
// immutable value behind an atomic pointer, so a new snapshot takes effect for the next handshake or
// request without a restart and without dropping connections already open.
package live

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/netzone"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/tlsprofile"
)

// Creds are the node's credentials as last applied.
type Creds struct {
	// TrustDomain of every identity the node deals with.
	TrustDomain string
	// Roots is the trust bundle.
	Roots *x509.CertPool
	// Revoked holds the serials (lowercase hex) of the current CRL.
	Revoked map[string]bool
	// Certs holds one certificate with its key per kind the node holds.
	Certs map[certv1.CertKind]*tls.Certificate
}

// Cert returns the certificate of kind, or nil.
func (c *Creds) Cert(kind certv1.CertKind) *tls.Certificate {
	if c == nil {
		return nil
	}
	return c.Certs[kind]
}

// VerifyPeer verifies a presented chain (leaf first, DER) against the trust bundle for usage, refuses a
// revoked leaf and returns the leaf's identity, which must be in the node's trust domain.
func (c *Creds) VerifyPeer(rawCerts [][]byte, usage x509.ExtKeyUsage) (identity.ID, error) {
	if c == nil || c.Roots == nil {
		return identity.ID{}, errors.New("no trust bundle applied yet")
	}
	if len(rawCerts) == 0 {
		return identity.ID{}, errors.New("no certificate presented")
	}
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for i, raw := range rawCerts {
		cert, err := x509.ParseCertificate(raw)
		if err != nil {
			return identity.ID{}, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		certs = append(certs, cert)
	}
	inter := x509.NewCertPool()
	for _, cert := range certs[1:] {
		inter.AddCert(cert)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.Roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return identity.ID{}, fmt.Errorf("verify certificate: %w", err)
	}
	if serial := pki.Serial(leaf.SerialNumber); c.Revoked[serial] {
		return identity.ID{}, fmt.Errorf("certificate %s is revoked", serial)
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return identity.ID{}, err
	}
	if id.TrustDomain != c.TrustDomain {
		return identity.ID{}, fmt.Errorf("identity %s is outside trust domain %q", id, c.TrustDomain)
	}
	return id, nil
}

// Policy is the node's rendered policy as the fronts enforce it.
type Policy struct {
	// Number is the policy version.
	Number uint64
	// Profile is the Webapp TLS profile.
	Profile tlsprofile.Name
	// Headers are the Web Admin headers.
	Headers map[string]string
	// APIPrefix separates API paths from Web Admin paths; "" means the default.
	APIPrefix string
	// Allow holds one allowlist per endpoint the policy names; a missing endpoint admits nobody.
	Allow map[policyv1.Endpoint]*netzone.Allowlist
	// NoZones is true when no allowlist has any network: every front endpoint then refuses everyone.
	NoZones bool
}

// Allows reports whether addr may reach endpoint ep.
func (p *Policy) Allows(ep policyv1.Endpoint, addr netip.Addr) bool {
	if p == nil {
		return false
	}
	return p.Allow[ep].Allows(addr)
}

// DefaultPolicy is what fronts enforce before any policy was applied: the strongest profile, the
// recommended headers of the default prefix, and nobody admitted.
func DefaultPolicy() *Policy {
	return &Policy{Profile: tlsprofile.Modern, NoZones: true}
}

// ProfileName maps the API's profile to the tlsprofile name; unspecified means MODERN.
func ProfileName(p policyv1.TLSProfile) tlsprofile.Name {
	switch p {
	case policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE:
		return tlsprofile.Intermediate
	case policyv1.TLSProfile_TLS_PROFILE_OLD:
		return tlsprofile.Old
	default:
		return tlsprofile.Modern
	}
}

// PolicyFrom converts a rendered policy. CIDRs that do not parse are skipped (the server validated
// them); skipping can only narrow an allowlist.
func PolicyFrom(r *policyv1.RenderedPolicy) *Policy {
	p := &Policy{
		Number:    r.GetPolicyNumber(),
		Profile:   ProfileName(r.GetTls().GetProfile()),
		Headers:   map[string]string{},
		APIPrefix: r.GetApiPathPrefix(),
		Allow:     map[policyv1.Endpoint]*netzone.Allowlist{},
		NoZones:   true,
	}
	for k, v := range r.GetAdminHeaders() {
		p.Headers[k] = v
	}
	byEndpoint := map[policyv1.Endpoint][]netip.Prefix{}
	for _, al := range r.GetAllowlists() {
		for _, c := range al.GetCidrs() {
			if pfx, err := netip.ParsePrefix(c); err == nil {
				byEndpoint[al.GetEndpoint()] = append(byEndpoint[al.GetEndpoint()], pfx)
				p.NoZones = false
			}
		}
	}
	for ep, pfx := range byEndpoint {
		p.Allow[ep] = netzone.NewAllowlist(pfx)
	}
	return p
}

// State is the agent's published state. The zero value holds nothing and the default policy.
type State struct {
	creds  atomic.Pointer[Creds]
	policy atomic.Pointer[Policy]
}

// Creds returns the applied credentials, or nil before any.
func (s *State) Creds() *Creds { return s.creds.Load() }

// SetCreds publishes new credentials.
func (s *State) SetCreds(c *Creds) { s.creds.Store(c) }

// Policy returns the applied policy, or DefaultPolicy before any.
func (s *State) Policy() *Policy {
	if p := s.policy.Load(); p != nil {
		return p
	}
	return DefaultPolicy()
}

// SetPolicy publishes a new policy.
func (s *State) SetPolicy(p *Policy) { s.policy.Store(p) }
