package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// ErrPinMismatch means the server's chain does not lead to the pinned CA: the agent refuses to send
// its join token to it.
var ErrPinMismatch = errors.New("server certificate does not chain to the pinned CA")

// verifyPinned is the bootstrap's server check. Before the agent has an identity it trusts exactly one
// CA: the one whose SHA-256 fingerprint the operator pinned. The anchor is looked up among the
// certificates the server presents and the operator's optional CA file (candidates); the server's leaf
// must then verify up to it for server auth and carry the control-plane identity. Anything else is
// refused, so the join token never reaches a server that cannot prove it belongs to the pinned CA.
// It returns the control plane's identity, which tells the agent its trust domain.
func verifyPinned(rawCerts [][]byte, pin string, candidates []*x509.Certificate) (identity.ID, error) {
	if len(rawCerts) == 0 {
		return identity.ID{}, fmt.Errorf("%w: no certificate presented", ErrPinMismatch)
	}
	presented := make([]*x509.Certificate, 0, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return identity.ID{}, fmt.Errorf("%w: certificate %d does not parse: %v", ErrPinMismatch, i+1, err)
		}
		presented = append(presented, c)
	}
	var anchor *x509.Certificate
	for _, c := range append(append([]*x509.Certificate(nil), presented...), candidates...) {
		if pki.Fingerprint(c) == pin && c.IsCA {
			anchor = c
			break
		}
	}
	if anchor == nil {
		var seen []string
		for _, c := range presented {
			seen = append(seen, pki.Fingerprint(c)[:16]+"…")
		}
		return identity.ID{}, fmt.Errorf("%w: no CA certificate with fingerprint %s among the %d presented (%s) or in --ca-file; "+
			"if the server does not present its root, pass the CA certificate with --ca-file",
			ErrPinMismatch, pin, len(presented), strings.Join(seen, ", "))
	}
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	inter := x509.NewCertPool()
	for _, c := range presented[1:] {
		inter.AddCert(c)
	}
	leaf := presented[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return identity.ID{}, fmt.Errorf("%w: %v", ErrPinMismatch, err)
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return identity.ID{}, fmt.Errorf("%w: server identity: %v", ErrPinMismatch, err)
	}
	if id.Kind != identity.KindControlPlane {
		return identity.ID{}, fmt.Errorf("%w: server identity %s is not the control plane", ErrPinMismatch, id)
	}
	return id, nil
}

// pinnedTLS returns a client config that accepts only a server passing verifyPinned and reports the
// control plane's identity to onVerified.
func pinnedTLS(pin string, candidates []*x509.Certificate, onVerified func(identity.ID)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The standard verification needs the root up front; verifyPinned replaces it entirely.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection against the pinned CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			id, err := verifyPinned(raw, pin, candidates)
			if err != nil {
				return err
			}
			if onVerified != nil {
				onVerified(id)
			}
			return nil
		},
	}
}

// probePinned makes one TLS handshake with addr under the pin, so that a wrong fingerprint is reported
// as such (and not as a gRPC transport error) and the trust domain is known before the CSR is made.
func probePinned(ctx context.Context, addr, pin string, candidates []*x509.Certificate) (identity.ID, error) {
	var id identity.ID
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: pinnedTLS(pin, candidates, func(v identity.ID) { id = v })}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return identity.ID{}, err
	}
	_ = conn.Close()
	return id, nil
}
