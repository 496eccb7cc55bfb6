package certsvc

import (
	"context"
	"crypto/x509"
	"log/slog"
	"strings"
	"sync"

	"github.com/warden-sec/warden/services/internal/fanout"
	"github.com/warden-sec/warden/services/internal/mirror"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/store"
)

// View is the read model of the cert namespace that every wardend replica keeps, whatever services it
// hosts: the trust bundle (for verifying client certificates), the revoked serials (refused at once by
// the interceptors) and the node registry (read by the secret, policy and mesh services through Nodes,
// never through the keys).
type View struct {
	m *mirror.Mirror
	// nodes mirrors only the registry, on a watch of its own: other services' snapshots wait for it
	// to be current (mirror.Fresh), and the whole namespace's watch carries every agent's
	// acknowledgements, which under a fleet-wide burst would hold their pushes back.
	nodes *mirror.Mirror
	log   *slog.Logger
	// Decoded records, shared by every snapshot build (read-only).
	nodeRecs *mirror.Decoded[nodeRecord]
	caStates *mirror.Decoded[caState]
	certRecs *mirror.Decoded[certRecord]
	crls     *mirror.Decoded[crlRecord]
	bundles  *mirror.Decoded[bundleRecord]
	// bundlePEMs is the trust bundle of the CA state, one string shared by every node's snapshot
	// (a copy per node was 6.5 KiB of wardend's memory per agent).
	bundlePEMs *mirror.Decoded[string]

	mu      sync.Mutex
	poolRev int64
	pool    *x509.CertPool
	bundle  []byte

	// all is the whole registry at the registry mirror's revision allRev: promotion checks and status
	// listings read all of it often, and it changes rarely.
	allMu  sync.Mutex
	allRev int64
	all    []Node
}

// Node is a registry entry as other services see it.
type Node struct {
	ID        string
	Role      string
	Zone      string
	Addresses []string
}

// NewView mirrors the cert namespace st.
func NewView(st *store.Store, log *slog.Logger) *View {
	v := &View{m: mirror.New(st, "", log), nodes: mirror.New(st, prefNodes, log), log: log,
		nodeRecs: mirror.NewDecoded(decode[nodeRecord]), caStates: mirror.NewDecoded(decode[caState]),
		certRecs: mirror.NewDecoded(decode[certRecord]), crls: mirror.NewDecoded(decode[crlRecord]),
		bundles: mirror.NewDecoded(decode[bundleRecord])}
	// From the decoded CA state the snapshot builds read anyway, not a second decode of it.
	v.bundlePEMs = mirror.NewDecoded(func(kv store.KV) (string, error) {
		st, err := v.caStates.Decode(kv)
		return string(st.trustBundle()), err
	})
	return v
}

// Run follows etcd until ctx is done.
func (v *View) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() { _ = v.nodes.Run(ctx); close(done) }()
	err := v.m.Run(ctx)
	<-done
	return err
}

// Registry exposes the registry's mirror, for mirror.Fresh in snapshots built from it.
func (v *View) Registry() *mirror.Mirror { return v.nodes }

// Mirror exposes the underlying mirror (the CertService builds snapshots from it).
func (v *View) Mirror() *mirror.Mirror { return v.m }

// WaitReady blocks until the first state is loaded.
func (v *View) WaitReady(ctx context.Context) error {
	if err := v.m.WaitReady(ctx); err != nil {
		return err
	}
	return v.nodes.WaitReady(ctx)
}

// IsRevoked implements authn.RevocationChecker.
func (v *View) IsRevoked(serial string) bool {
	_, ok := v.m.Get(keyRevoked(serial))
	return ok
}

// TrustPool returns the pool of trusted roots, rebuilt only when the CA state changes.
func (v *View) TrustPool() (*x509.CertPool, []byte) {
	kv, ok := v.m.Get(keyCAState)
	v.mu.Lock()
	defer v.mu.Unlock()
	if !ok {
		return x509.NewCertPool(), nil
	}
	if kv.ModRevision == v.poolRev && v.pool != nil {
		return v.pool, v.bundle
	}
	st, err := v.caStates.Decode(kv)
	if err != nil {
		v.log.Error("CA state unreadable; keeping the previous trust pool", "err", err)
		if v.pool == nil {
			return x509.NewCertPool(), nil
		}
		return v.pool, v.bundle
	}
	bundle := st.trustBundle()
	pool := x509.NewCertPool()
	if certs, err := pki.ParseCertsPEM(bundle); err == nil {
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	v.pool, v.bundle, v.poolRev = pool, bundle, kv.ModRevision
	return pool, bundle
}

// Node returns one registry entry.
func (v *View) Node(id string) (Node, bool) {
	kv, ok := v.nodes.Get(keyNode(id))
	if !ok {
		return Node{}, false
	}
	rec, err := v.nodeRecs.Decode(kv)
	if err != nil {
		return Node{}, false
	}
	return Node{ID: rec.ID, Role: rec.Role, Zone: rec.Zone, Addresses: rec.Addresses}, true
}

// Nodes lists the registry, optionally of one role ("" for all), sorted by id. The slice is shared
// between callers until the registry changes: read it, do not modify it.
func (v *View) Nodes(role string) []Node {
	rev := v.nodes.Revision()
	v.allMu.Lock()
	if v.all == nil || v.allRev != rev {
		all := []Node{}
		for _, kv := range v.nodes.List(prefNodes) {
			if rec, err := v.nodeRecs.Decode(kv); err == nil {
				all = append(all, Node{ID: rec.ID, Role: rec.Role, Zone: rec.Zone, Addresses: rec.Addresses})
			}
		}
		v.all, v.allRev = all, rev
	}
	all := v.all
	v.allMu.Unlock()
	if role == "" {
		return all
	}
	var out []Node
	for _, n := range all {
		if n.Role == role {
			out = append(out, n)
		}
	}
	return out
}

// FollowRegistry wakes hub for every registry change until ctx is done (and not for every change of the
// cert namespace, acknowledgements included): a node's registration, update or removal rebuilds that
// node's snapshots only (hub groups are node ids).
func FollowRegistry[T any](ctx context.Context, v *View, hub *fanout.Hub[T]) {
	hub.FollowChanges(ctx, v.nodes, []string{prefNodes}, func(key string) (string, bool) {
		id, _ := strings.CutPrefix(key, prefNodes)
		return id, false
	})
}

// NodeVersion is the revision of the last change to one node's entry.
func (v *View) NodeVersion(id string) int64 { return v.nodes.Version(keyNode(id)) }

// CAChanged returns a channel closed at the next change of the CA state (prepare, activate, retire).
func (v *View) CAChanged() <-chan struct{} { return v.m.ChangedUnder(keyCAState) }

// RevocationsChanged returns a channel closed at the next revocation (or pruning of one).
func (v *View) RevocationsChanged() <-chan struct{} { return v.m.ChangedUnder(prefRevoked) }

// IssuerID is the id (certificate fingerprint) of the CA that issues now; "" until the CA state is
// loaded. A holder of a certificate from the active CA (wardend's serving certificate) can renew when it
// changes, so that peers which dropped the previous root after a rotation still verify it.
func (v *View) IssuerID() string {
	kv, ok := v.m.Get(keyCAState)
	if !ok {
		return ""
	}
	st, err := v.caStates.Decode(kv)
	if err != nil {
		return ""
	}
	active, _ := st.byState(caActive)
	return active.ID
}
