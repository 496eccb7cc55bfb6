package node

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcstatus "google.golang.org/grpc/status"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/backoff"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// errTokenRefused marks a bootstrap the control plane refused for good: retrying with the same
// single-use token cannot succeed.
var errTokenRefused = errors.New("join token refused")

// bootstrap obtains the node's identity with the join token: the key is generated here and never
// leaves the node; only a CSR is sent, and only to a server that proves it belongs to the pinned CA.
// Transient failures (no server reachable) are retried with back-off; a pin mismatch or a refused token
// ends the agent with an error saying what to do.
func (a *Agent) bootstrap(ctx context.Context) error {
	if a.cfg.JoinToken == "" || a.cfg.CAFingerprint == "" {
		return fmt.Errorf("no identity in %s: start the agent once with --join-token and --ca-fingerprint (from CreateNode or CreateJoinToken) to bootstrap one", a.certsDir)
	}
	if a.bootstrapped.Load() {
		return fmt.Errorf("%w: this process already used its single-use join token; create a new one (CreateJoinToken) and restart with it", errTokenRefused)
	}
	candidates, err := a.caFileCandidates()
	if err != nil {
		return err
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		return fmt.Errorf("generate identity key: %w", err)
	}
	bo := backoff.Default()
	for {
		servers := append([]string(nil), a.cfg.Servers...)
		rand.Shuffle(len(servers), func(i, j int) { servers[i], servers[j] = servers[j], servers[i] })
		var errs []error
		for _, server := range servers {
			h, bundle, err := a.bootstrapWith(ctx, server, key, candidates)
			if err == nil {
				return a.saveBootstrap(h, bundle)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrPinMismatch) || errors.Is(err, errTokenRefused) {
				a.cfg.Status.SetError("bootstrap", err.Error())
				return fmt.Errorf("bootstrap via %s: %w", server, err)
			}
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
		}
		err := errors.Join(errs...)
		a.cfg.Status.SetError("bootstrap", err.Error())
		d := bo.Next()
		a.log.Warn("bootstrap failed; retrying", "in", d.Round(time.Millisecond), "err", err)
		if backoff.Sleep(ctx, d) != nil {
			return ctx.Err()
		}
	}
}

func (a *Agent) caFileCandidates() ([]*x509.Certificate, error) {
	if a.cfg.CAFile == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(a.cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	certs, err := pki.ParseCertsPEM(raw)
	if err != nil {
		return nil, fmt.Errorf("--ca-file %s: %w", a.cfg.CAFile, err)
	}
	return certs, nil
}

func (a *Agent) bootstrapWith(ctx context.Context, server string, key crypto.Signer, candidates []*x509.Certificate) (*held, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RPCTimeout)
	defer cancel()
	cp, err := probePinned(ctx, server, a.cfg.CAFingerprint, candidates)
	if err != nil {
		return nil, nil, err
	}
	want := identity.NodeID(cp.TrustDomain, a.cfg.Role, a.cfg.NodeID)
	csr, err := pki.CreateCSR(key, want)
	if err != nil {
		return nil, nil, fmt.Errorf("CSR: %w", err)
	}
	conn, err := grpc.NewClient(server, grpc.WithTransportCredentials(credentials.NewTLS(pinnedTLS(a.cfg.CAFingerprint, candidates, nil))))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	resp, err := certv1.NewCertServiceClient(conn).Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: a.cfg.JoinToken, CsrPem: string(csr)})
	if err != nil {
		switch grpcstatus.Code(err) {
		case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition:
			a.bootstrapped.Store(true)
			return nil, nil, fmt.Errorf("%w: %s (the token is wrong, expired or already used: create a new one with CreateJoinToken)",
				errTokenRefused, grpcstatus.Convert(err).Message())
		}
		return nil, nil, err
	}
	a.bootstrapped.Store(true)
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	h, err := parseHeld(certv1.CertKind_CERT_KIND_IDENTITY, []byte(resp.GetCertificatePem()), keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the identity returned does not match the key sent: %v", errTokenRefused, err)
	}
	got, err := identity.FromCertificate(h.leaf())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: identity returned: %v", errTokenRefused, err)
	}
	if got != want {
		return nil, nil, fmt.Errorf("%w: the token belongs to %s, but the agent runs as %s (check --role and --node-id)", errTokenRefused, got, want)
	}
	pool, _, err := parseBundle([]byte(resp.GetTrustBundlePem()))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errTokenRefused, err)
	}
	inter := x509.NewCertPool()
	for _, c := range h.chain[1:] {
		inter.AddCert(c)
	}
	if _, err := h.leaf().Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, nil, fmt.Errorf("%w: the identity does not verify against the trust bundle returned: %v", errTokenRefused, err)
	}
	return h, []byte(resp.GetTrustBundlePem()), nil
}

// saveBootstrap writes the identity and the bundle (the key 0600) and adopts them.
func (a *Agent) saveBootstrap(h *held, bundle []byte) error {
	_, err := a.certs.Apply([]materialize.File{
		{Name: KeyFile(h.kind), Data: h.keyPEM, Secret: true},
		{Name: CertFile(h.kind), Data: h.certPEM},
		{Name: FileTrustBundle, Data: bundle},
	})
	if err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	id, err := identity.FromCertificate(h.leaf())
	if err != nil {
		return err
	}
	a.id = id
	a.applyMu.Lock()
	a.held[h.kind] = h
	a.applyMu.Unlock()
	a.cfg.Status.SetError("bootstrap", "")
	a.cfg.Status.SetError("identity", "")
	a.log.Info("bootstrapped", "identity", id, "serial", h.serial(), "expires", h.leaf().NotAfter)
	return nil
}
