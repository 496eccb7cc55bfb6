package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

func (a *Agent) credentialsSpec() streamSpec[*certv1.WatchCredentialsResponse] {
	return streamSpec[*certv1.WatchCredentialsResponse]{
		name: status.StreamCredentials,
		open: func(ctx context.Context, conn *grpc.ClientConn, last int64, opts ...grpc.CallOption) (receiver[*certv1.WatchCredentialsResponse], error) {
			return recvOf(certv1.NewCertServiceClient(conn).WatchCredentials(ctx, &certv1.WatchCredentialsRequest{NodeId: a.cfg.NodeID, LastVersion: last}, opts...))
		},
		apply: a.applyCredentials,
		ack:   a.ackCredentials,
		box:   a.credsBox,
	}
}

// requirements returns the kinds to hold for snap, restricted to the node's role, with the identity
// always included (checkSANs false when the agent made the requirement up).
func (a *Agent) requirements(snap *certv1.WatchCredentialsResponse) ([]*certv1.RequiredCertificate, map[certv1.CertKind]bool) {
	var out []*certv1.RequiredCertificate
	checkSANs := map[certv1.CertKind]bool{}
	seen := map[certv1.CertKind]bool{}
	for _, r := range snap.GetRequired() {
		k := r.GetKind()
		if seen[k] {
			continue
		}
		if !roleHolds(a.cfg.Role, k) {
			a.log.Warn("ignoring a certificate kind this role does not hold", "kind", k)
			continue
		}
		seen[k] = true
		checkSANs[k] = true
		out = append(out, r)
	}
	if !seen[certv1.CertKind_CERT_KIND_IDENTITY] {
		out = append([]*certv1.RequiredCertificate{{Kind: certv1.CertKind_CERT_KIND_IDENTITY}}, out...)
	}
	return out, checkSANs
}

// applyCredentials reconciles what the node holds with snap: the trust bundle first (so that
// certificates from a newly prepared CA verify), then every required certificate that is missing,
// due for renewal, from a CA that no longer issues, revoked, or with outdated names is requested with
// a key generated here. Everything is written as one set. Certificates that could not be obtained
// keep their old files; the error makes the applier retry.
func (a *Agent) applyCredentials(ctx context.Context, snap *certv1.WatchCredentialsResponse) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	now := a.cfg.Now()
	pool, fps, err := parseBundle([]byte(snap.GetTrustBundlePem()))
	if err != nil {
		return err
	}
	revoked, err := parseCRL([]byte(snap.GetCrlPem()))
	if err != nil {
		return err
	}
	files := []materialize.File{{Name: FileTrustBundle, Data: []byte(snap.GetTrustBundlePem())}}
	if crl := snap.GetCrlPem(); crl != "" {
		files = append(files, materialize.File{Name: FileCRL, Data: []byte(crl)})
	}
	if wh := snap.GetWebhookCaBundlePem(); wh != "" && a.cfg.Role == identity.RoleCoreapp {
		files = append(files, materialize.File{Name: FileWebhookCA, Data: []byte(wh)})
	}
	if db := snap.GetDatabaseCaPem(); db != "" {
		files = append(files, materialize.File{Name: FileDBCA, Data: []byte(db)})
	}

	check := issueCheck{roots: pool, revoked: revoked, activeIssuer: activeIssuer(snap), now: now}
	required, checkSANs := a.requirements(snap)
	next := maps.Clone(a.held)
	var errs []error
	renewedIdentity := false
	for _, r := range required {
		kind := r.GetKind()
		if r.GetExternal() {
			h, err := externalHeld(kind, snap.GetExternal())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if cur := a.held[kind]; cur == nil || !bytes.Equal(cur.certPEM, h.certPEM) || !bytes.Equal(cur.keyPEM, h.keyPEM) {
				next[kind] = h
			}
			continue
		}
		cur := a.held[kind]
		reason := issueReason(cur, r, checkSANs[kind], check)
		if reason == "" && cur.external {
			reason = "external certificate withdrawn"
		}
		if reason == "" {
			continue
		}
		a.log.Info("requesting certificate", "kind", KindName(kind), "reason", reason)
		h, err := a.issue(ctx, kind, r.GetKeyType(), pool)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s certificate (%s): %w", KindName(kind), reason, err))
			continue
		}
		if reason == reasonNoCurrent {
			h.noCurrentAt = now
		}
		next[kind] = h
		if kind == certv1.CertKind_CERT_KIND_IDENTITY {
			renewedIdentity = true
		}
	}
	for _, kind := range slices.Sorted(maps.Keys(next)) {
		h := next[kind]
		files = append(files,
			materialize.File{Name: KeyFile(kind), Data: h.keyPEM, Secret: true},
			materialize.File{Name: CertFile(kind), Data: h.certPEM})
	}
	changed, err := a.certs.Apply(files)
	if err != nil {
		if len(changed) > 0 {
			// Some files were replaced: keep memory in line with the disk and let the app reload.
			a.reloadHeldFromDisk()
			a.cfg.Reload()
		}
		return errors.Join(append(errs, err)...)
	}
	a.held = next
	a.creds = snap
	a.trusted = fps
	a.publishCreds(pool, revoked)
	a.setVersion(status.StreamCredentials, snap.GetVersion(), now)
	a.saveCached(status.StreamCredentials, snap)
	a.cfg.Status.Update(func(s *status.Status) { s.TrustedFingerprints = fps })
	a.certStatus()
	if len(changed) > 0 {
		a.log.Info("credentials applied", "version", snap.GetVersion(), "changed", changed)
		a.cfg.Reload()
	}
	a.wakeRenewal()
	if renewedIdentity {
		// New connections must present the new identity: the old one may come from a CA being retired.
		if err := a.conns.dial(a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// externalHeld takes the operator-uploaded certificate from the snapshot.
func externalHeld(kind certv1.CertKind, ext *certv1.ExternalCredential) (*held, error) {
	if ext == nil || ext.GetChainPem() == "" || ext.GetKeyPem() == "" {
		return nil, fmt.Errorf("%s: marked external but the snapshot carries no external certificate", KindName(kind))
	}
	h, err := parseHeld(kind, []byte(ext.GetChainPem()), []byte(ext.GetKeyPem()))
	if err != nil {
		return nil, fmt.Errorf("external %w", err)
	}
	h.external = true
	return h, nil
}

// issue requests a certificate of kind for a key generated here.
func (a *Agent) issue(ctx context.Context, kind certv1.CertKind, kt certv1.KeyType, pool *x509.CertPool) (*held, error) {
	pkt, err := keyType(kt)
	if err != nil {
		return nil, err
	}
	key, err := pki.GenerateKey(pkt)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := pki.CreateCSR(key, a.id)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	conn, _ := a.conns.current()
	if conn == nil {
		return nil, errors.New("not connected")
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RPCTimeout)
	defer cancel()
	resp, err := certv1.NewCertServiceClient(conn).IssueCertificate(ctx, &certv1.IssueCertificateRequest{
		NodeId: a.cfg.NodeID, Kind: kind, CsrPem: string(csr),
	}, grpc.WaitForReady(true))
	if err != nil {
		return nil, fmt.Errorf("IssueCertificate: %w", err)
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	h, err := parseHeld(kind, []byte(resp.GetCertificate().GetCertificatePem()), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate returned: %w", err)
	}
	inter := x509.NewCertPool()
	for _, c := range h.chain[1:] {
		inter.AddCert(c)
	}
	if _, err := h.leaf().Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("certificate returned does not verify against the trust bundle: %w", err)
	}
	a.log.Info("certificate obtained", "kind", KindName(kind), "serial", h.serial(), "expires", h.leaf().NotAfter)
	return h, nil
}

// reloadHeldFromDisk re-reads every certificate after a partly failed write.
func (a *Agent) reloadHeldFromDisk() {
	for _, kind := range Kinds(a.cfg.Role) {
		if h, err := loadHeld(a.certsDir, kind); err == nil {
			a.held[kind] = h
		}
	}
	if a.held[certv1.CertKind_CERT_KIND_IDENTITY] != nil {
		a.publishCreds(a.cfg.State.Creds().Roots, a.cfg.State.Creds().Revoked)
	}
}

// publishCreds makes the held certificates and the bundle live for the fronts and new connections.
// Callers hold applyMu (or run before the streams start).
func (a *Agent) publishCreds(pool *x509.CertPool, revoked map[string]bool) {
	certs := make(map[certv1.CertKind]*tls.Certificate, len(a.held))
	for k, h := range a.held {
		certs[k] = h.tls
	}
	a.cfg.State.SetCreds(&live.Creds{TrustDomain: a.id.TrustDomain, Roots: pool, Revoked: revoked, Certs: certs})
}

// certStatus reports the held certificates. Callers hold applyMu.
func (a *Agent) certStatus() {
	fractions := map[certv1.CertKind]float64{}
	for _, r := range a.creds.GetRequired() {
		fractions[r.GetKind()] = r.GetRenewFraction()
	}
	var certs []status.Cert
	for _, kind := range slices.Sorted(maps.Keys(a.held)) {
		h := a.held[kind]
		c := status.Cert{
			Kind: KindName(kind), File: CertFile(kind), Serial: h.serial(), Issuer: h.leaf().Issuer.String(),
			NotBefore: h.leaf().NotBefore, NotAfter: h.leaf().NotAfter, External: h.external,
		}
		if !h.external {
			c.RenewAt = renewAt(h.leaf(), fractions[kind])
		}
		certs = append(certs, c)
	}
	a.cfg.Status.Update(func(s *status.Status) { s.Certs = certs })
}

// heldList is what AckCredentials reports. Callers hold applyMu.
func (a *Agent) heldList() []*certv1.HeldCertificate {
	out := make([]*certv1.HeldCertificate, 0, len(a.held))
	for _, kind := range slices.Sorted(maps.Keys(a.held)) {
		h := a.held[kind]
		out = append(out, &certv1.HeldCertificate{Kind: kind, Serial: h.serial(), NotAfter: timestamppb.New(h.leaf().NotAfter)})
	}
	return out
}

func (a *Agent) ackCredentials(ctx context.Context, snap *certv1.WatchCredentialsResponse, applyErr error) error {
	a.applyMu.Lock()
	req := &certv1.AckCredentialsRequest{
		NodeId:              a.cfg.NodeID,
		Version:             snap.GetVersion(),
		TrustedFingerprints: slices.Clone(a.trusted),
		Held:                a.heldList(),
	}
	a.applyMu.Unlock()
	if applyErr != nil {
		req.Error = applyErr.Error()
	}
	return a.unary(ctx, func(ctx context.Context, conn *grpc.ClientConn, sent time.Time) (*timestamppb.Timestamp, error) {
		req.AgentTime = timestamppb.New(sent)
		resp, err := certv1.NewCertServiceClient(conn).AckCredentials(ctx, req, grpc.WaitForReady(true))
		return resp.GetServerTime(), err
	})
}

// unary makes one call on the current connection with the RPC timeout, records contact, and feeds the
// returned server time into the skew estimate.
func (a *Agent) unary(ctx context.Context, call func(ctx context.Context, conn *grpc.ClientConn, sent time.Time) (*timestamppb.Timestamp, error)) error {
	conn, _ := a.conns.current()
	if conn == nil {
		return errors.New("not connected")
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RPCTimeout)
	defer cancel()
	sent := a.cfg.Now()
	serverTime, err := call(ctx, conn, sent)
	if err != nil {
		return err
	}
	rtt := a.cfg.Now().Sub(sent)
	a.contact("")
	a.clock.observeAck(a, sent, rtt, serverTime)
	return nil
}
