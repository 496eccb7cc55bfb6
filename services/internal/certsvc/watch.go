package certsvc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/store"
)

const (
	maxAckFingerprints = 64
	maxAckHeld         = 32
	maxAckError        = 4096
)

// buildSnapshot computes node id's credentials snapshot from the mirror. Its version is the newest
// revision among the keys that feed this node's snapshot, so it moves only when something the node
// receives changed, and is the same on every replica.
func (s *Service) buildSnapshot(id string) (*certv1.WatchCredentialsResponse, int64, error) {
	m := s.cfg.View.Mirror()
	nkv, ok := m.Get(keyNode(id))
	if !ok {
		return nil, 0, apierr.NotFound("node " + id + " (decommissioned or never registered)")
	}
	n, err := s.cfg.View.nodeRecs.Decode(nkv)
	if err != nil {
		return nil, 0, err
	}
	version := max(nkv.ModRevision, m.Version(prefCurrent+id+"/"), m.Version(keyCAState), m.Version(keyCRL), m.Version(keyDBCA))
	switch n.Role {
	case roleWebapp:
		version = max(version, m.Version(keyExternal(id)), m.Version(keyExternal(allWebapps)))
	case roleCoreapp:
		version = max(version, m.Version(prefWebhook))
	}

	out := &certv1.WatchCredentialsResponse{Version: version}
	var activeID string
	if kv, ok := m.Get(keyCAState); ok {
		st, err := s.cfg.View.caStates.Decode(kv)
		if err != nil {
			return nil, 0, err
		}
		if out.TrustBundlePem, err = s.cfg.View.bundlePEMs.Decode(kv); err != nil {
			return nil, 0, err
		}
		if a, ok := st.byState(caActive); ok {
			activeID = a.ID
		}
	}
	if kv, ok := m.Get(keyCRL); ok {
		if crl, err := s.cfg.View.crls.Decode(kv); err == nil {
			out.CrlPem = crl.PEM
		}
	}
	if kv, ok := m.Get(keyDBCA); ok {
		if b, err := s.cfg.View.bundles.Decode(kv); err == nil {
			out.DatabaseCaPem = b.BundlePEM
		}
	}
	var ext *externalRecord
	if n.Role == roleWebapp {
		ext = s.externalFor(id)
	}
	if n.Role == roleCoreapp {
		var sb strings.Builder
		for _, kv := range m.List(prefWebhook) {
			if b, err := s.cfg.View.bundles.Decode(kv); err == nil {
				sb.WriteString(b.BundlePEM)
			}
		}
		out.WebhookCaBundlePem = sb.String()
	}
	now := s.cfg.Now()
	for _, kind := range roleKinds[n.Role] {
		tpl := s.template(n, kind)
		rc := &certv1.RequiredCertificate{
			Kind:          kindToPB[kind],
			DnsNames:      tpl.DNSNames,
			IpAddresses:   ipStrings(tpl),
			Lifetime:      dur(s.lifetime(kind)),
			RenewFraction: s.cfg.RenewFraction,
			KeyType:       certv1.KeyType_KEY_TYPE_ECDSA_P256,
			External:      kind == kindWebappHTTPS && ext != nil,
		}
		if skv, ok := m.Get(keyCurrent(id, kind)); ok {
			// Certificates of a CA that no longer issues are left out, so the agent re-issues them.
			if c, ok := s.certBySerial(string(skv.Value)); ok && c.IssuerID == activeID && c.NotAfter.After(now) &&
				sansMatch(c, tpl) && !s.cfg.View.IsRevoked(c.Serial) {
				rc.Current = certToPB(c, nil)
			}
		}
		out.Required = append(out.Required, rc)
	}
	if ext != nil {
		key := keyExternal(externalKey(ext.NodeID))
		keyPEM, err := s.cfg.Seal.Open(ext.SealedKey, Prefix+key)
		if err != nil {
			// Without its key the certificate is useless; the node keeps its issued one meanwhile.
			s.cfg.Log.Error("cannot unseal an external certificate key; not pushing it", "key", key, "err", err)
		} else {
			out.External = &certv1.ExternalCredential{ChainPem: ext.ChainPEM, KeyPem: string(keyPEM), Fingerprint: ext.Fingerprint}
		}
	}
	return out, version, nil
}

// externalFor returns the external certificate that applies to a Webapp: its own, else the one for
// every Webapp.
func (s *Service) externalFor(id string) *externalRecord {
	m := s.cfg.View.Mirror()
	for _, k := range []string{keyExternal(id), keyExternal(allWebapps)} {
		if kv, ok := m.Get(k); ok {
			if e, err := decode[externalRecord](kv); err == nil {
				return &e
			}
		}
	}
	return nil
}

// WatchCredentials implements CertService.
func (s *Service) WatchCredentials(req *certv1.WatchCredentialsRequest, stream certv1.CertService_WatchCredentialsServer) error {
	ctx := stream.Context()
	id := req.GetNodeId()
	if err := validNodeID("node_id", id); err != nil {
		return err
	}
	if req.GetLastVersion() < 0 {
		return apierr.InvalidArg("last_version", "must not be negative")
	}
	caller := authn.FromContext(ctx)
	// From the mirror when it has the node (every re-subscription after a restart): a read from etcd
	// per subscription showed in the reconnect storm's profile.
	n, rev, err := s.nodeFromMirror(ctx, id)
	if err != nil {
		return err
	}
	if caller.IsNode() && string(caller.Role) != n.Role {
		return fmt.Errorf("%w: identity role %s does not match the registered role %s", apierr.ErrPermission, caller.Role, n.Role)
	}
	// A node that has just bootstrapped must find its entry in the mirror the snapshots are built from.
	if err := s.cfg.View.Mirror().WaitRevision(ctx, rev); err != nil {
		return err
	}
	sub := s.hub.Subscribe(id, req.GetLastVersion())
	defer sub.Close()
	for {
		snap, _, heartbeat, err := sub.Next(ctx, s.cfg.Heartbeat)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if caller.Serial != "" && s.cfg.View.IsRevoked(caller.Serial) {
			return fmt.Errorf("%w: certificate %s was revoked", apierr.ErrUnauthenticated, caller.Serial)
		}
		// Subscribers of one node share the snapshot; the per-send fields go on a copy.
		msg := proto.CloneOf(snap)
		msg.ServerTime = ts(s.cfg.Now())
		msg.Heartbeat = heartbeat
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

// AckCredentials implements CertService.
func (s *Service) AckCredentials(ctx context.Context, req *certv1.AckCredentialsRequest) (*certv1.AckCredentialsResponse, error) {
	if err := validNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if req.GetVersion() < 0 {
		return nil, apierr.InvalidArg("version", "must not be negative")
	}
	if len(req.GetTrustedFingerprints()) > maxAckFingerprints {
		return nil, apierr.InvalidArg("trusted_fingerprints", "at most %d", maxAckFingerprints)
	}
	if len(req.GetHeld()) > maxAckHeld {
		return nil, apierr.InvalidArg("held", "at most %d", maxAckHeld)
	}
	if len(req.GetError()) > maxAckError || !utf8.ValidString(req.GetError()) {
		return nil, apierr.InvalidArg("error", "at most %d bytes of UTF-8", maxAckError)
	}
	rec := ackRecord{Version: req.GetVersion(), Held: map[string]string{}, Error: req.GetError(), At: s.cfg.Now().UTC()}
	for i, fp := range req.GetTrustedFingerprints() {
		norm, err := pki.NormalizeFingerprint(fp)
		if err != nil {
			return nil, pki.WithField(err, fmt.Sprintf("trusted_fingerprints[%d]", i))
		}
		rec.TrustedFingerprints = append(rec.TrustedFingerprints, norm)
	}
	for i, h := range req.GetHeld() {
		kind := kindFromPB(h.GetKind())
		if kind == "" {
			return nil, apierr.InvalidArg(fmt.Sprintf("held[%d].kind", i), "must be a certificate kind")
		}
		serial, err := normalizeSerial(h.GetSerial())
		if err != nil {
			return nil, apierr.InvalidArg(fmt.Sprintf("held[%d].serial", i), "%v", err)
		}
		rec.Held[kind] = serial
	}
	if t := req.GetAgentTime(); t != nil && t.IsValid() {
		rec.AgentTime = t.AsTime()
	}
	// Acks are status reports sent on every applied snapshot, not changes an operator made: they are
	// not audited, or the audit log would fill with them. The condition keeps a removed node from
	// being acknowledged; the node's revision comes from the mirror first and, if that was behind,
	// from etcd.
	put := []store.Op{store.PutOp(keyAck(req.GetNodeId()), encode(rec))}
	_, rev, err := s.nodeFromMirror(ctx, req.GetNodeId())
	if err != nil {
		return nil, err
	}
	_, err = s.ackWrites.Txn(ctx, []store.Cond{store.AtRevision(keyNode(req.GetNodeId()), rev)}, put)
	if errors.Is(err, store.ErrConflict) {
		if _, rev, err = s.readNode(ctx, req.GetNodeId()); err != nil {
			return nil, err
		}
		_, err = s.ackWrites.Txn(ctx, []store.Cond{store.AtRevision(keyNode(req.GetNodeId()), rev)}, put)
	}
	if errors.Is(err, store.ErrConflict) {
		return nil, apierr.FailedPrecondition("node %s changed while the ack was recorded; send it again", req.GetNodeId())
	} else if err != nil {
		return nil, err
	}
	return &certv1.AckCredentialsResponse{ServerTime: ts(s.cfg.Now())}, nil
}
