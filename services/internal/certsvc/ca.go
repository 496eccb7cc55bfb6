package certsvc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/store"
)

const maxCAValidity = 50 * 365 * 24 * time.Hour

// listFresh lists prefix from etcd and waits until the mirror has applied the newest of those keys'
// writes, so keys written in the same transactions (certs/ beside current/) can be read from memory.
// The mirror has no progress notifications, so only revisions of writes under the namespace can be
// waited for.
func (s *Service) listFresh(ctx context.Context, prefix string) ([]store.KV, error) {
	kvs, _, _, err := s.st.List(ctx, prefix, "", 0)
	if err != nil {
		return nil, err
	}
	var newest int64
	for _, kv := range kvs {
		newest = max(newest, kv.ModRevision)
	}
	if err := s.cfg.View.Mirror().WaitRevision(ctx, newest); err != nil {
		return nil, err
	}
	return kvs, nil
}

// revokedSet reads the revoked serials from etcd.
func (s *Service) revokedSet(ctx context.Context) (map[string]revokedRecord, error) {
	kvs, _, _, err := s.st.List(ctx, prefRevoked, "", 0)
	if err != nil {
		return nil, err
	}
	out := make(map[string]revokedRecord, len(kvs))
	for _, kv := range kvs {
		r, err := decode[revokedRecord](kv)
		if err != nil {
			return nil, err
		}
		out[r.Serial] = r
	}
	return out, nil
}

// checkVersion applies an optional expected_version to the revision just read.
func checkVersion(expected, actual int64) error {
	if expected != 0 && expected != actual {
		return store.ErrConflict
	}
	return nil
}

// stateAt reads the CA state for a rotation step and applies the caller's optional expected version.
func (s *Service) stateAt(ctx context.Context, expected int64) (caState, int64, error) {
	st, rev, err := s.cfg.Authority.State(ctx)
	if err != nil {
		return caState{}, 0, err
	}
	return st, rev, checkVersion(expected, rev)
}

// rootFingerprints are the fingerprints of the roots a CA puts into the trust bundle: what a node's ack
// must list before the CA may issue.
func rootFingerprints(c caRecord) []string {
	certs, err := pki.ParseCertsPEM([]byte(c.RootsPEM))
	if err != nil {
		return nil
	}
	out := make([]string, len(certs))
	for i, r := range certs {
		out[i] = pki.Fingerprint(r)
	}
	return out
}

// pinFingerprint is what an agent pins before it has a trust bundle: the active CA's root.
func pinFingerprint(st caState) string {
	active, ok := st.byState(caActive)
	if !ok {
		return ""
	}
	if fps := rootFingerprints(active); len(fps) > 0 {
		return fps[0]
	}
	return active.ID
}

// GetTrustBundle implements CertService.
func (s *Service) GetTrustBundle(ctx context.Context, _ *certv1.GetTrustBundleRequest) (*certv1.GetTrustBundleResponse, error) {
	st, rev, err := s.cfg.Authority.State(ctx)
	if err != nil {
		return nil, err
	}
	return &certv1.GetTrustBundleResponse{
		TrustBundlePem: string(st.trustBundle()),
		Cas:            casToPB(st),
		TrustDomain:    s.cfg.Authority.TrustDomain(),
		Version:        rev,
	}, nil
}

// PrepareCA implements CertService.
func (s *Service) PrepareCA(ctx context.Context, req *certv1.PrepareCARequest) (*certv1.PrepareCAResponse, error) {
	now := s.cfg.Now()
	var (
		ca     *pki.CA
		source string
		err    error
	)
	if up := req.GetUpload(); up != nil {
		if req.GetValidity() != nil {
			return nil, apierr.InvalidArg("validity", "applies to a generated CA only, not to an upload")
		}
		ca, source, err = s.loadUpload(up, now)
	} else {
		var validity time.Duration
		if validity, err = ttlOf("validity", req.GetValidity(), DefaultCAValidity, 24*time.Hour, maxCAValidity); err == nil {
			ca, err = pki.NewRootCA(s.cfg.Authority.TrustDomain(), validity, now)
		}
		source = sourceGenerated
	}
	if err != nil {
		return nil, err
	}
	st, rev, err := s.stateAt(ctx, req.GetExpectedVersion())
	if err != nil {
		return nil, err
	}
	if st.Phase != phaseStable {
		return nil, apierr.FailedPrecondition("a CA rotation is already in progress (phase %s): activate or retire it first", st.Phase)
	}
	rec := newCARecord(ca, caPrepared, source, now)
	for _, c := range st.CAs {
		if c.ID == rec.ID {
			return nil, apierr.AlreadyExists("CA " + rec.ID)
		}
	}
	nodes, _, _, err := s.st.List(ctx, prefNodes, "", 1)
	if err != nil {
		return nil, err
	}
	ops, err := s.cfg.Authority.caKeyOps(rec.ID, ca.Signer)
	if err != nil {
		return nil, err
	}
	next := caState{Phase: phasePrepared, CAs: append(slices.Clone(st.CAs), rec)}
	conds := []store.Cond{store.AtRevision(keyCAState, rev)}
	details := map[string]string{"ca": rec.ID, "source": source}
	if len(nodes) == 0 {
		// Nobody has to learn the new root first, so the rotation skips straight to issuing.
		next = activated(next, rec.ID, now)
		crlOps, crlConds, _, err := s.nextCRL(ctx, next, []*pki.CA{ca}, nil, now)
		if err != nil {
			return nil, err
		}
		ops, conds = append(ops, crlOps...), append(conds, crlConds...)
		details["activated"] = "no node registered"
	}
	ops = append(ops, store.PutOp(keyCAState, encode(next)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "ca/" + rec.ID, Outcome: audit.Success, Reason: "CA prepared", Details: details}))
	newRev, err := s.st.Txn(ctx, conds, ops)
	if err != nil {
		return nil, err
	}
	out := &certv1.PrepareCAResponse{Phase: phaseToPB(next.Phase), Version: newRev}
	for _, c := range next.CAs {
		if c.ID == rec.ID {
			out.Ca = caToPB(c)
		}
	}
	return out, nil
}

// loadUpload validates an operator's CA: besides what pki checks, it must be able to sign CRLs and must
// not name another trust domain (wardend refuses to start with a CA of another trust domain).
func (s *Service) loadUpload(up *certv1.UploadedCA, now time.Time) (*pki.CA, string, error) {
	ca, err := pki.LoadUploadedCA([]byte(up.GetCertPem()), []byte(up.GetKeyPem()), []byte(up.GetChainPem()), now)
	if err != nil {
		var inv *pki.InvalidError
		if errors.As(err, &inv) && !strings.HasPrefix(inv.Field, "upload.") {
			err = pki.WithField(err, "upload."+inv.Field)
		}
		return nil, "", err
	}
	if ca.Cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, "", apierr.InvalidArg("upload.cert_pem", "the CA certificate lacks the cRLSign key usage, so it could not sign the CRL")
	}
	for _, u := range ca.Cert.URIs {
		if u.Scheme == "spiffe" && u.Host != s.cfg.Authority.TrustDomain() {
			return nil, "", apierr.InvalidArg("upload.cert_pem", "the CA names trust domain %q, this deployment is %q", u.Host, s.cfg.Authority.TrustDomain())
		}
	}
	if !ca.Cert.NotAfter.After(now.Add(s.cfg.IdentityLifetime)) {
		return nil, "", apierr.InvalidArg("upload.cert_pem", "the CA expires at %s, before an identity certificate issued now would", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(ca.Chain) == 0 && ca.Cert.CheckSignatureFrom(ca.Cert) == nil {
		return ca, sourceRoot, nil
	}
	return ca, sourceIntermediate, nil
}

// activated makes id the issuer and the previous issuer retiring.
func activated(st caState, id string, now time.Time) caState {
	out := caState{Phase: phaseActivated, CAs: slices.Clone(st.CAs)}
	for i := range out.CAs {
		switch {
		case out.CAs[i].ID == id:
			out.CAs[i].State = caActive
			out.CAs[i].ActivatedAt = now
		case out.CAs[i].State == caActive:
			out.CAs[i].State = caRetiring
		}
	}
	return out
}

// ActivateCA implements CertService.
func (s *Service) ActivateCA(ctx context.Context, req *certv1.ActivateCARequest) (*certv1.ActivateCAResponse, error) {
	now := s.cfg.Now()
	st, rev, err := s.stateAt(ctx, req.GetExpectedVersion())
	if err != nil {
		return nil, err
	}
	prepared, ok := st.byState(caPrepared)
	if st.Phase != phasePrepared || !ok {
		return nil, apierr.FailedPrecondition("no prepared CA to activate (phase %s): call PrepareCA first", st.Phase)
	}
	lagging, err := s.lagBehindPrepared(ctx, prepared)
	if err != nil {
		return nil, err
	}
	details := map[string]string{"ca": prepared.ID}
	if len(lagging) > 0 {
		names := make([]string, len(lagging))
		for i, l := range lagging {
			names[i] = l.GetNodeId()
		}
		if !req.GetForce() {
			return nil, apierr.FailedPrecondition("%d node(s) have not acknowledged a trust bundle with the new CA: %s (wait for them, or set force)", len(names), strings.Join(names, ", "))
		}
		details["forced"] = "true"
		details["lagging"] = strings.Join(names, ",")
	}
	ca, err := s.cfg.Authority.load(ctx, prepared)
	if err != nil {
		return nil, err
	}
	next := activated(st, prepared.ID, now)
	ops, conds, _, err := s.nextCRL(ctx, next, []*pki.CA{ca}, nil, now)
	if err != nil {
		return nil, err
	}
	ops = append(ops, store.PutOp(keyCAState, encode(next)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "ca/" + prepared.ID, Outcome: audit.Success, Reason: "CA activated", Details: details}))
	newRev, err := s.st.Txn(ctx, append(conds, store.AtRevision(keyCAState, rev)), ops)
	if err != nil {
		return nil, err
	}
	active, _ := next.byState(caActive)
	return &certv1.ActivateCAResponse{Ca: caToPB(active), Version: newRev}, nil
}

// lagBehindPrepared lists bootstrapped nodes whose last ack does not trust every root of the prepared
// CA. Nodes that never bootstrapped do not block: they receive the current bundle when they do.
func (s *Service) lagBehindPrepared(ctx context.Context, prepared caRecord) ([]*certv1.NodeLag, error) {
	nodes, _, _, err := s.st.List(ctx, prefNodes, "", 0)
	if err != nil {
		return nil, err
	}
	ackKVs, _, _, err := s.st.List(ctx, prefAcks, "", 0)
	if err != nil {
		return nil, err
	}
	acks := map[string]ackRecord{}
	for _, kv := range ackKVs {
		if a, err := decode[ackRecord](kv); err == nil {
			acks[strings.TrimPrefix(kv.Key, prefAcks)] = a
		}
	}
	want := rootFingerprints(prepared)
	var out []*certv1.NodeLag
	for _, kv := range nodes {
		n, err := decode[nodeRecord](kv)
		if err != nil || n.BootstrappedAt.IsZero() {
			continue
		}
		ack, ok := acks[n.ID]
		if !ok {
			out = append(out, &certv1.NodeLag{NodeId: n.ID, Reason: "no acknowledgement yet"})
			continue
		}
		for _, fp := range want {
			if !slices.Contains(ack.TrustedFingerprints, fp) {
				out = append(out, &certv1.NodeLag{NodeId: n.ID, Reason: "trust bundle without the new CA"})
				break
			}
		}
	}
	return out, nil
}

// oldCAHolders lists current certificates signed by the retiring CA that are neither expired nor
// revoked, and when the last of them expires.
func (s *Service) oldCAHolders(ctx context.Context, retiring caRecord, now time.Time) ([]*certv1.NodeLag, time.Time, error) {
	current, err := s.listFresh(ctx, prefCurrent)
	if err != nil {
		return nil, time.Time{}, err
	}
	revoked, err := s.revokedSet(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	var (
		out  []*certv1.NodeLag
		last time.Time
	)
	for _, kv := range current {
		c, ok := s.certBySerial(string(kv.Value))
		if _, gone := revoked[c.Serial]; !ok || gone || c.IssuerID != retiring.ID || !c.NotAfter.After(now) {
			continue
		}
		if c.NotAfter.After(last) {
			last = c.NotAfter
		}
		out = append(out, &certv1.NodeLag{NodeId: c.NodeID, Reason: c.Kind + " certificate from the old CA"})
	}
	return out, last, nil
}

func (s *Service) certBySerial(serial string) (certRecord, bool) {
	kv, ok := s.cfg.View.Mirror().Get(keyCert(serial))
	if !ok {
		return certRecord{}, false
	}
	c, err := s.cfg.View.certRecs.Decode(kv)
	return c, err == nil
}

// RetireCA implements CertService.
func (s *Service) RetireCA(ctx context.Context, req *certv1.RetireCARequest) (*certv1.RetireCAResponse, error) {
	now := s.cfg.Now()
	st, rev, err := s.stateAt(ctx, req.GetExpectedVersion())
	if err != nil {
		return nil, err
	}
	retiring, ok := st.byState(caRetiring)
	if st.Phase != phaseActivated || !ok {
		return nil, apierr.FailedPrecondition("no retiring CA (phase %s): activate a prepared CA first", st.Phase)
	}
	holders, last, err := s.oldCAHolders(ctx, retiring, now)
	if err != nil {
		return nil, err
	}
	details := map[string]string{"ca": retiring.ID}
	if len(holders) > 0 {
		if !req.GetForce() {
			return nil, apierr.FailedPrecondition("%d certificate(s) signed by the old CA are still current, the last expires at %s (retire_after); wait for the nodes to re-issue, or set force",
				len(holders), last.UTC().Format(time.RFC3339))
		}
		details["forced"] = "true"
		details["still_current"] = fmt.Sprint(len(holders))
	}
	next := caState{Phase: phaseStable}
	for _, c := range st.CAs {
		if c.ID != retiring.ID {
			next.CAs = append(next.CAs, c)
		}
	}
	// The retired CA's CRL goes with it: nothing it signed is trusted any more.
	ops, conds, _, err := s.nextCRL(ctx, next, nil, nil, now)
	if err != nil {
		return nil, err
	}
	ops = append(ops,
		store.PutOp(keyCAState, encode(next)),
		store.DeleteOp(keyCAKey(retiring.ID)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "ca/" + retiring.ID, Outcome: audit.Success, Reason: "CA retired", Details: details}),
	)
	newRev, err := s.st.Txn(ctx, append(conds, store.AtRevision(keyCAState, rev)), ops)
	if err != nil {
		return nil, err
	}
	retiring.State = caRetiring
	return &certv1.RetireCAResponse{Retired: caToPB(retiring), Version: newRev}, nil
}

// GetCAStatus implements CertService.
func (s *Service) GetCAStatus(ctx context.Context, _ *certv1.GetCAStatusRequest) (*certv1.GetCAStatusResponse, error) {
	now := s.cfg.Now()
	st, rev, err := s.cfg.Authority.State(ctx)
	if err != nil {
		return nil, err
	}
	out := &certv1.GetCAStatusResponse{Phase: phaseToPB(st.Phase), Cas: casToPB(st), Version: rev}
	switch st.Phase {
	case phasePrepared:
		if prepared, ok := st.byState(caPrepared); ok {
			if out.Lagging, err = s.lagBehindPrepared(ctx, prepared); err != nil {
				return nil, err
			}
		}
	case phaseActivated:
		if retiring, ok := st.byState(caRetiring); ok {
			var last time.Time
			if out.Lagging, last, err = s.oldCAHolders(ctx, retiring, now); err != nil {
				return nil, err
			}
			if last.IsZero() {
				last = now
			}
			out.RetireAfter = ts(last)
		}
	}
	return out, nil
}
