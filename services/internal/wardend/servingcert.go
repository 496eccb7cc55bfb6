package wardend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// servingLifetime is the life of wardend's own serving certificate; it is renewed at two thirds. It is
// short because nothing outside this process holds it: the key never leaves memory.
const servingLifetime = 24 * time.Hour

// servingCert keeps wardend's TLS certificate fresh. Each replica makes its own key in memory and has
// it signed by the active CA, so no control-plane key is stored anywhere and CA rotation reaches the
// control plane by the same renewal.
type servingCert struct {
	auth  *certsvc.Authority
	names []string
	log   *slog.Logger
	cur   atomic.Pointer[tls.Certificate]
}

func newServingCert(ctx context.Context, auth *certsvc.Authority, names []string, log *slog.Logger) (*servingCert, error) {
	s := &servingCert{auth: auth, names: names, log: log}
	if err := s.renew(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *servingCert) renew(ctx context.Context) error {
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		return fmt.Errorf("serving key: %w", err)
	}
	tpl := pki.Template{Lifetime: servingLifetime, Server: true, Client: true}
	for _, n := range append([]string{"localhost", "127.0.0.1", "::1"}, s.names...) {
		if ip := net.ParseIP(n); ip != nil {
			tpl.IPs = append(tpl.IPs, ip)
		} else {
			tpl.DNSNames = append(tpl.DNSNames, n)
		}
	}
	certPEM, err := s.auth.IssueLocal(ctx, identity.ControlPlaneID(s.auth.TrustDomain()), key.Public(), tpl)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	certs, err := pki.ParseCertsPEM(certPEM)
	if err != nil {
		return err
	}
	// The chain sent in the handshake ends with the issuing root: an agent that bootstraps pins the CA
	// by fingerprint and has nothing else to verify the server with (TLS clients ignore a sent root).
	ca, err := s.auth.Issuer(ctx)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range append(certs, ca.Roots...) {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	s.cur.Store(&tc)
	return nil
}

// Run renews the certificate at two thirds of its life, whenever the issuing CA changes (after a CA
// rotation's activation, agents that trust only the new root must still be able to verify wardend) and
// as soon as the certificate is revoked (agents refuse a revoked server certificate at their next
// handshake, so keeping it would lock them out until the renewal), retrying every 30 s on failure.
// onChange runs after each CA change and each revocation: the admin files follow both.
func (s *servingCert) Run(ctx context.Context, view *certsvc.View, onChange func(context.Context)) error {
	issuer := view.IssuerID()
	// Each channel is asked for again only once it fired (an unfired one stays registered with the
	// mirror), and before the revocation check below, so that a revocation in between still wakes us.
	caChanged, revoked := view.CAChanged(), view.RevocationsChanged()
	for {
		leaf := s.cur.Load().Leaf
		if serial := pki.Serial(leaf.SerialNumber); view.IsRevoked(serial) {
			s.log.Warn("wardend's serving certificate was revoked; replacing it", "serial", serial)
		} else {
			wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(max(wait, 0)):
			case <-caChanged:
				caChanged = view.CAChanged()
				onChange(ctx)
				id := view.IssuerID()
				if id == issuer {
					continue
				}
				issuer = id
			case <-revoked:
				revoked = view.RevocationsChanged()
				onChange(ctx)
				continue
			}
		}
		if err := s.renew(ctx); err != nil {
			s.log.Error("renewing wardend serving certificate failed; retrying in 30s", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(30 * time.Second):
			}
		}
	}
}

// tlsConfig serves the current certificate and verifies client certificates against the current trust
// bundle (both change at run time). Client certificates are optional at the TLS layer because Bootstrap,
// Login and health are called without one; the interceptors decide per method.
//
// Sessions resume with tickets under the keys every replica shares (package ticketkeys; applied with
// SetSessionTicketKeys on the returned config). On resumption crypto/tls checks that the client chain is
// still within its validity and rooted in the current bundle; the ticket also names the client
// certificate's serial, so a session of a since-revoked certificate falls back to a full handshake (which
// then fails to authenticate) instead of resuming. Every call is checked for revocation anyway.
func (s *servingCert) tlsConfig(pool func() *x509.CertPool, revoked func(serial string) bool) *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
	}
	base.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		if len(cs.PeerCertificates) > 0 {
			ss.Extra = append(ss.Extra, []byte(ticketSerialPrefix+pki.Serial(cs.PeerCertificates[0].SerialNumber)))
		}
		return base.EncryptTicket(cs, ss)
	}
	base.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := base.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			return ss, err
		}
		for _, e := range ss.Extra {
			if serial, ok := strings.CutPrefix(string(e), ticketSerialPrefix); ok && revoked(serial) {
				return nil, nil // not resumed: a full handshake instead
			}
		}
		return ss, nil
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{*s.cur.Load()}
		c.ClientCAs = pool()
		c.ClientAuth = tls.VerifyClientCertIfGiven
		return c, nil
	}
	return base
}

// ticketSerialPrefix marks the client certificate's serial among a session ticket's extra data.
const ticketSerialPrefix = "warden-client-serial:"
