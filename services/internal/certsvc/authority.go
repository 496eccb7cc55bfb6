package certsvc

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/store"
)

// DefaultCAValidity is the life of a generated root.
const DefaultCAValidity = 10 * 365 * 24 * time.Hour

// Authority loads the active CA (certificate from ca/state, key unsealed from ca/key/<id>) and creates
// the first root. It is used by the CertService handlers and by wardend itself for its own serving
// certificate and the admin credentials written on first start.
type Authority struct {
	st          *store.Store
	seal        *seal.Keyring
	trustDomain string
	now         func() time.Time

	mu     sync.Mutex
	cached map[string]*pki.CA // by CA id; keys never change for an id
}

// NewAuthority returns an Authority over the cert namespace st.
func NewAuthority(st *store.Store, keys *seal.Keyring, trustDomain string, now func() time.Time) *Authority {
	if now == nil {
		now = time.Now
	}
	return &Authority{st: st, seal: keys, trustDomain: trustDomain, now: now, cached: map[string]*pki.CA{}}
}

// TrustDomain is the trust domain of every identity the authority issues.
func (a *Authority) TrustDomain() string { return a.trustDomain }

// Ensure creates the self-signed root on the very first start. Replicas starting together race on a
// MustNotExist condition; the losers use the winner's CA. It reports whether it created the root.
func (a *Authority) Ensure(ctx context.Context) (bool, error) {
	if _, err := a.st.Get(ctx, keyCAState); err == nil {
		return false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("read CA state: %w", err)
	}
	ca, err := pki.NewRootCA(a.trustDomain, DefaultCAValidity, a.now())
	if err != nil {
		return false, fmt.Errorf("generate root CA: %w", err)
	}
	rec := newCARecord(ca, caActive, sourceGenerated, a.now())
	ops, err := a.caKeyOps(rec.ID, ca.Signer)
	if err != nil {
		return false, err
	}
	st := caState{Phase: phaseStable, CAs: []caRecord{rec}}
	ops = append(ops, store.PutOp(keyCAState, encode(st)))
	if _, err := a.st.Txn(ctx, []store.Cond{store.MustNotExist(keyCAState)}, ops); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return false, nil
		}
		return false, fmt.Errorf("store root CA: %w", err)
	}
	return true, nil
}

func newCARecord(ca *pki.CA, state, source string, now time.Time) caRecord {
	roots := ca.Roots
	if len(roots) == 0 {
		roots = []*x509.Certificate{ca.Cert}
	}
	return caRecord{
		ID:        pki.Fingerprint(ca.Cert),
		CertPEM:   string(pki.EncodeCertsPEM(ca.Cert)),
		ChainPEM:  string(pki.EncodeCertsPEM(ca.Chain...)),
		RootsPEM:  string(pki.EncodeCertsPEM(roots...)),
		State:     state,
		Source:    source,
		NotBefore: ca.Cert.NotBefore,
		NotAfter:  ca.Cert.NotAfter,
		CreatedAt: now,
	}
}

// caKeyOps seals a CA key under its own key name, so a sealed key copied to another CA's slot fails.
func (a *Authority) caKeyOps(id string, key crypto.Signer) ([]store.Op, error) {
	pemKey, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, fmt.Errorf("marshal CA key: %w", err)
	}
	sealed, err := a.seal.Seal(pemKey, Prefix+keyCAKey(id))
	if err != nil {
		return nil, fmt.Errorf("seal CA key: %w", err)
	}
	return []store.Op{store.PutOp(keyCAKey(id), sealed)}, nil
}

// State reads the CA state with its revision.
func (a *Authority) State(ctx context.Context) (caState, int64, error) {
	kv, err := a.st.Get(ctx, keyCAState)
	if err != nil {
		return caState{}, 0, fmt.Errorf("read CA state: %w", err)
	}
	st, err := decode[caState](kv)
	return st, kv.ModRevision, err
}

// Issuer returns the active CA with its key.
func (a *Authority) Issuer(ctx context.Context) (*pki.CA, error) {
	ca, _, _, err := a.active(ctx)
	return ca, err
}

// active loads the issuing CA with its key, its record, and the CA state's revision it was read at.
func (a *Authority) active(ctx context.Context) (*pki.CA, caRecord, int64, error) {
	st, rev, err := a.State(ctx)
	if err != nil {
		return nil, caRecord{}, 0, err
	}
	rec, ok := st.byState(caActive)
	if !ok {
		return nil, caRecord{}, 0, errors.New("no active CA")
	}
	ca, err := a.load(ctx, rec)
	if err != nil {
		return nil, caRecord{}, 0, err
	}
	return ca, rec, rev, nil
}

func (a *Authority) load(ctx context.Context, rec caRecord) (*pki.CA, error) {
	a.mu.Lock()
	ca, ok := a.cached[rec.ID]
	a.mu.Unlock()
	if ok {
		return ca, nil
	}
	kv, err := a.st.Get(ctx, keyCAKey(rec.ID))
	if err != nil {
		return nil, fmt.Errorf("read CA key %s: %w", rec.ID, err)
	}
	keyPEM, err := a.seal.Open(kv.Value, Prefix+keyCAKey(rec.ID))
	if err != nil {
		return nil, fmt.Errorf("unseal CA key %s: %w", rec.ID, err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA key %s: %w", rec.ID, err)
	}
	certs, err := pki.ParseCertsPEM([]byte(rec.CertPEM))
	if err != nil {
		return nil, fmt.Errorf("parse CA cert %s: %w", rec.ID, err)
	}
	ca = &pki.CA{Cert: certs[0], Signer: key}
	if rec.ChainPEM != "" {
		if ca.Chain, err = pki.ParseCertsPEM([]byte(rec.ChainPEM)); err != nil {
			return nil, fmt.Errorf("parse CA chain %s: %w", rec.ID, err)
		}
	}
	if ca.Roots, err = pki.ParseCertsPEM([]byte(rec.RootsPEM)); err != nil {
		return nil, fmt.Errorf("parse CA roots %s: %w", rec.ID, err)
	}
	a.mu.Lock()
	a.cached[rec.ID] = ca
	a.mu.Unlock()
	return ca, nil
}

// TrustBundle returns every root the CA state trusts, PEM.
func (st caState) trustBundle() []byte {
	var out []byte
	seen := map[string]bool{}
	for _, c := range st.CAs {
		if !seen[c.RootsPEM] {
			seen[c.RootsPEM] = true
			out = append(out, c.RootsPEM...)
		}
	}
	return out
}

// IssueLocal issues a certificate for a control-plane or operator identity straight from the active CA
// (wardend's serving certificate, the first admin's client certificate) and records it like a node's,
// without a node: ListCertificates shows it, and RevokeCertificate can revoke it by serial, which the
// TLS handshake and authn then refuse.
func (a *Authority) IssueLocal(ctx context.Context, id identity.ID, pub crypto.PublicKey, tpl pki.Template) ([]byte, error) {
	kt, err := pki.KeyTypeOf(pub)
	if err != nil {
		return nil, err
	}
	pubID, err := spkiID(pub)
	if err != nil {
		return nil, err
	}
	ca, rec, _, err := a.active(ctx)
	if err != nil {
		return nil, err
	}
	tpl.ID = id
	cert, _, err := ca.Issue(tpl, pub, a.now())
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", id, err)
	}
	certPEM := pki.EncodeCertsPEM(ca.ChainOf(cert)...)
	// A certificate without its record could not be revoked, so a failed write fails the issuance.
	r := recordOf(cert, certPEM, "", kindIdentity, id, rec.ID, kt, pubID)
	if _, err := a.st.Put(ctx, keyCert(r.Serial), encode(r), store.Any()); err != nil {
		return nil, fmt.Errorf("record certificate %s of %s: %w", r.Serial, id, err)
	}
	return certPEM, nil
}

// CheckTrustDomain refuses to start with a --trust-domain other than the one the CA was created for:
// every identity already issued would stop matching.
func (a *Authority) CheckTrustDomain(ctx context.Context) error {
	ca, err := a.Issuer(ctx)
	if err != nil {
		return err
	}
	for _, u := range ca.Cert.URIs {
		if u.Scheme == "spiffe" && u.Host != a.trustDomain {
			return fmt.Errorf("--trust-domain %q differs from the trust domain %q this deployment was created with", a.trustDomain, u.Host)
		}
	}
	return nil
}
