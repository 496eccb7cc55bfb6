package certsvc

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/store"
)

// renewJitter is the largest shift of a renewal time, as a fraction of the certificate's life, so that
// nodes issued at the same moment do not all renew at the same moment.
const renewJitter = 0.05

// template is what the server puts into a node's certificate of a kind; nothing comes from the CSR.
func (s *Service) template(n nodeRecord, kind string) pki.Template {
	tpl := pki.Template{ID: identity.NodeID(s.cfg.Authority.TrustDomain(), identity.Role(n.Role), n.ID), Lifetime: s.cfg.ServerLifetime}
	switch kind {
	case kindIdentity:
		tpl.Lifetime, tpl.Client, tpl.Server = s.cfg.IdentityLifetime, true, true
	case kindWebappHTTPS, kindCoreappComm:
		tpl.Server = true
		tpl.DNSNames, tpl.IPs = splitAddresses(n.Addresses)
	case kindCoreappCtl:
		tpl.Server, tpl.Client = true, true
		tpl.DNSNames, tpl.IPs = splitAddresses(n.Addresses)
	case kindDBClient:
		tpl.Client = true
	}
	return tpl
}

func (s *Service) lifetime(kind string) time.Duration {
	if kind == kindIdentity {
		return s.cfg.IdentityLifetime
	}
	return s.cfg.ServerLifetime
}

func ipStrings(tpl pki.Template) []string {
	out := make([]string, len(tpl.IPs))
	for i, ip := range tpl.IPs {
		out[i] = ip.String()
	}
	return out
}

// sansMatch reports whether a stored certificate names exactly what the registry wants now.
func sansMatch(c certRecord, tpl pki.Template) bool {
	return slices.Equal(c.DNSNames, tpl.DNSNames) && slices.Equal(c.IPs, ipStrings(tpl))
}

func spkiID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// renewAfter is NotBefore plus the renew fraction of the life, shifted by a jitter derived from the
// serial: the same certificate always gets the same answer.
func (s *Service) renewAfter(c certRecord) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	sum := sha256.Sum256([]byte(c.Serial))
	f := float64(binary.BigEndian.Uint64(sum[:8])) / float64(^uint64(0))
	frac := s.cfg.RenewFraction + (2*f-1)*renewJitter
	return c.NotBefore.Add(time.Duration(float64(life) * frac))
}

// reusable reports whether c may be handed out again for the same key: from the issuing CA, not revoked,
// with the wanted SANs and more than half its life left.
func (s *Service) reusable(c certRecord, issuerID, pubID string, tpl pki.Template, now time.Time) bool {
	return c.PubKeyID == pubID && c.IssuerID == issuerID && sansMatch(c, tpl) &&
		c.NotAfter.Sub(now) > c.NotAfter.Sub(c.NotBefore)/2
}

// issuance is a signed certificate and the writes that record it.
type issuance struct {
	rec    certRecord
	reused bool
	ops    []store.Op
	conds  []store.Cond
}

// issueInputs is what an issuance depends on besides the node: the active CA, and the certificate last
// issued to the node for the same kind and key, each with the revision that pins it in the transaction.
type issueInputs struct {
	ca      *pki.CA
	caRec   caRecord
	caRev   int64
	prev    certRecord
	hasPrev bool
	prevRev int64 // of the by-key index entry (0: none)
	// fromMirror: read without etcd; handing prev out again needs a linearizable read first, since no
	// transaction pins a reuse.
	fromMirror bool
}

// inputsFunc loads the inputs of an issuance for the node's key of kind.
type inputsFunc func(ctx context.Context, node, kind, pubID string) (issueInputs, error)

// inputsFromEtcd reads the inputs with linearizable reads.
func (s *Service) inputsFromEtcd(ctx context.Context, node, kind, pubID string) (issueInputs, error) {
	var in issueInputs
	var err error
	if in.ca, in.caRec, in.caRev, err = s.cfg.Authority.active(ctx); err != nil {
		return in, err
	}
	kv, err := s.st.Get(ctx, keyByKey(node, kind, pubID))
	if errors.Is(err, store.ErrNotFound) {
		return in, nil
	} else if err != nil {
		return in, err
	}
	// The certificate was written in the same transaction as the index, so once the mirror has caught
	// up with the index it holds the certificate too.
	if err := s.cfg.View.Mirror().WaitRevision(ctx, kv.ModRevision); err != nil {
		return in, err
	}
	in.prev, in.hasPrev = s.certBySerial(string(kv.Value))
	in.prevRev = kv.ModRevision
	return in, nil
}

// inputsFromMirror reads the inputs from the service's mirror, without a round trip to etcd: under load
// every linearizable read waits for the pending writes to apply, a disk sync each. A stale value fails
// the transaction's conditions; errStale says the mirror cannot answer (no CA state yet).
func (s *Service) inputsFromMirror(ctx context.Context, node, kind, pubID string) (issueInputs, error) {
	in := issueInputs{fromMirror: true}
	m := s.cfg.View.Mirror()
	stKV, ok := m.Get(keyCAState)
	if !ok {
		return in, errStale
	}
	st, err := s.cfg.View.caStates.Decode(stKV)
	if err != nil {
		return in, err
	}
	rec, ok := st.byState(caActive)
	if !ok {
		return in, errStale
	}
	if in.ca, err = s.cfg.Authority.load(ctx, rec); err != nil {
		return in, err
	}
	in.caRec, in.caRev = rec, stKV.ModRevision
	if kv, ok := m.Get(keyByKey(node, kind, pubID)); ok {
		in.prev, in.hasPrev = s.certBySerial(string(kv.Value))
		in.prevRev = kv.ModRevision
	}
	return in, nil
}

// stillCurrent reports, from etcd, whether serial is the node's current certificate of kind and not
// revoked: only then is handing it out again the same as what the node's snapshot says.
func (s *Service) stillCurrent(ctx context.Context, node, kind, serial string) (bool, error) {
	kv, err := s.st.Get(ctx, keyCurrent(node, kind))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if string(kv.Value) != serial {
		return false, nil
	}
	if _, err := s.st.Get(ctx, keyRevoked(serial)); errors.Is(err, store.ErrNotFound) {
		return true, nil
	} else if err != nil {
		return false, err
	}
	return false, nil
}

// errStale: the mirror cannot answer (or its answer would hand out an existing certificate); read
// from etcd instead.
var errStale = errors.New("mirror not current")

// prepareIssue signs (or finds) the certificate of kind for node n and returns the writes that record
// it; the caller adds its own writes and the audit event and commits them in one transaction. The
// conditions fail the transaction if the node, the CA state or the certificate last issued for the key
// changed meanwhile, so requests for different keys of one node never conflict with each other.
func (s *Service) prepareIssue(ctx context.Context, n nodeRecord, nodeRev int64, kind string, pub crypto.PublicKey, load inputsFunc, now time.Time) (issuance, error) {
	kt, err := pki.KeyTypeOf(pub)
	if err != nil {
		return issuance{}, pki.WithField(err, "csr_pem")
	}
	pubID, err := spkiID(pub)
	if err != nil {
		return issuance{}, err
	}
	in, err := load(ctx, n.ID, kind, pubID)
	if err != nil {
		return issuance{}, err
	}
	tpl := s.template(n, kind)
	if in.hasPrev && s.reusable(in.prev, in.caRec.ID, pubID, tpl, now) {
		if in.fromMirror {
			return issuance{}, errStale
		}
		ok, err := s.stillCurrent(ctx, n.ID, kind, in.prev.Serial)
		if err != nil {
			return issuance{}, err
		}
		if ok {
			return issuance{rec: in.prev, reused: true}, nil
		}
	}
	cert, _, err := in.ca.Issue(tpl, pub, now)
	if err != nil {
		return issuance{}, err
	}
	rec := recordOf(cert, pki.EncodeCertsPEM(in.ca.ChainOf(cert)...), n.ID, kind, tpl.ID, in.caRec.ID, kt, pubID)
	return issuance{
		rec: rec,
		ops: []store.Op{
			store.PutOp(keyCert(rec.Serial), encode(rec)),
			store.PutOp(keyCurrent(n.ID, kind), []byte(rec.Serial)),
			store.PutOp(keyNodeCert(n.ID, rec.Serial), []byte{}),
			store.PutOp(keyByKey(n.ID, kind, pubID), []byte(rec.Serial)),
		},
		conds: []store.Cond{store.AtRevision(keyNode(n.ID), nodeRev), store.AtRevision(keyCAState, in.caRev),
			store.AtRevision(keyByKey(n.ID, kind, pubID), in.prevRev)},
	}, nil
}

// recordOf is what etcd keeps of an issued certificate; pemChain is the certificate and its chain.
func recordOf(cert *x509.Certificate, pemChain []byte, node, kind string, id identity.ID, issuerID string, kt pki.KeyType, pubID string) certRecord {
	return certRecord{
		Serial:    pki.Serial(cert.SerialNumber),
		NodeID:    node,
		Kind:      kind,
		SPIFFEID:  id.String(),
		DNSNames:  cert.DNSNames,
		IPs:       ipStrings(pki.Template{IPs: cert.IPAddresses}),
		NotBefore: cert.NotBefore,
		NotAfter:  cert.NotAfter,
		IssuerID:  issuerID,
		KeyType:   string(kt),
		PubKeyID:  pubID,
		PEM:       string(pemChain),
	}
}

func issuedEvent(rec certRecord, reason string) audit.Event {
	return audit.Event{Target: "node/" + rec.NodeID, Outcome: audit.Success, Reason: reason,
		Details: map[string]string{"serial": rec.Serial, "kind": rec.Kind, "issuer": rec.IssuerID, "not_after": rec.NotAfter.UTC().Format(time.RFC3339)}}
}

// readNode reads a registry entry from etcd with its revision.
func (s *Service) readNode(ctx context.Context, id string) (nodeRecord, int64, error) {
	kv, err := s.st.Get(ctx, keyNode(id))
	if errors.Is(err, store.ErrNotFound) {
		return nodeRecord{}, 0, apierr.NotFound("node " + id)
	} else if err != nil {
		return nodeRecord{}, 0, err
	}
	n, err := decode[nodeRecord](kv)
	return n, kv.ModRevision, err
}

// nodeFromMirror reads a registry entry from the mirror, and from etcd when the mirror does not have
// it (a node created a moment ago). The caller pins the revision in its transaction.
func (s *Service) nodeFromMirror(ctx context.Context, id string) (nodeRecord, int64, error) {
	kv, ok := s.cfg.View.Mirror().Get(keyNode(id))
	if !ok {
		return s.readNode(ctx, id)
	}
	n, err := s.cfg.View.nodeRecs.Decode(kv)
	return n, kv.ModRevision, err
}

// IssueCertificate implements CertService.
func (s *Service) IssueCertificate(ctx context.Context, req *certv1.IssueCertificateRequest) (*certv1.IssueCertificateResponse, error) {
	if err := validNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	kind := kindFromPB(req.GetKind())
	if kind == "" {
		return nil, apierr.InvalidArg("kind", "must be a certificate kind, got %s", req.GetKind())
	}
	csr, err := pki.ParseCSR([]byte(req.GetCsrPem()))
	if err != nil {
		return nil, err
	}
	caller := authn.FromContext(ctx)
	var out *certv1.IssueCertificateResponse
	// The first attempt reads everything from the mirror; after a conflict the mirror is first brought
	// up to the revision that refused the write. A mirror that cannot answer, or an answer that would
	// hand out an existing certificate (which no condition pins), is read again from etcd.
	var waitFor int64
	err = retryConflicts(ctx, func() error {
		if waitFor > 0 {
			if err := s.cfg.View.Mirror().WaitRevision(ctx, waitFor); err != nil {
				return err
			}
		}
		now := s.cfg.Now()
		n, rev, err := s.nodeFromMirror(ctx, req.GetNodeId())
		if err != nil {
			return err
		}
		if caller.IsNode() && string(caller.Role) != n.Role {
			return fmt.Errorf("%w: identity role %s does not match the registered role %s", apierr.ErrPermission, caller.Role, n.Role)
		}
		if !roleHolds(n.Role, kind) {
			if caller.IsNode() {
				return fmt.Errorf("%w: a %s node does not hold %s certificates", apierr.ErrPermission, n.Role, req.GetKind())
			}
			return apierr.InvalidArg("kind", "a %s node does not hold %s certificates", n.Role, req.GetKind())
		}
		is, err := s.prepareIssue(ctx, n, rev, kind, csr.PublicKey, s.inputsFromMirror, now)
		if errors.Is(err, errStale) {
			is, err = s.prepareIssue(ctx, n, rev, kind, csr.PublicKey, s.inputsFromEtcd, now)
		}
		if err != nil {
			return err
		}
		if !is.reused {
			ops := append(is.ops, s.cfg.Audit.Op(ctx, issuedEvent(is.rec, "certificate issued")))
			if _, err := s.issueWrites.Txn(ctx, is.conds, ops); err != nil {
				waitFor = store.ConflictRevision(err)
				return err
			}
		}
		out = &certv1.IssueCertificateResponse{Certificate: certToPB(is.rec, nil), RenewAfter: ts(s.renewAfter(is.rec))}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
