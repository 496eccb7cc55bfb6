package certsvc

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/grpcserver"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

const testTD = "test.warden"

// env is the CertService served the way wardend serves it: embedded etcd, the View, the real gRPC
// server with its TLS, authentication, authorisation table and error mapping. It does not start the
// other services, so these tests do not depend on them.
type env struct {
	t       testing.TB
	client  *store.Client
	st      *store.Store
	auth    *Authority
	view    *View
	audit   *audit.Log
	svc     *Service
	addr    string
	clock   *clock
	serving atomic.Pointer[tls.Certificate]
	admin   *tls.Certificate
	// roots the test's clients trust for the server; grows across a CA rotation like an agent's would.
	rootsMu sync.Mutex
	roots   *x509.CertPool
}

// clock is real time shifted by an offset tests can advance.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }
func testKeyring(t testing.TB) *seal.Keyring {
	k, err := seal.NewKeyring(seal.KEK{ID: "test", Key: [32]byte{1, 2, 3, 4, 5, 6, 7, 8}})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func start(t testing.TB, configure ...func(*Config)) *env {
	t.Helper()
	log := etcdtest.Logger(t)
	client := etcdtest.Start(t)
	ns := client.Namespace(Prefix)
	keys := testKeyring(t)
	e := &env{t: t, client: client, st: ns, clock: &clock{}, roots: x509.NewCertPool()}
	e.auth = NewAuthority(ns, keys, testTD, time.Now)
	if _, err := e.auth.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	e.view = NewView(ns, log)
	wg.Go(func() { _ = e.view.Run(ctx) })
	if err := e.view.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.audit = audit.New(client, log)
	cfg := Config{Store: ns, Client: client, Authority: e.auth, View: e.view, Audit: e.audit, Seal: keys, Log: log,
		Now: e.clock.Now, ReplicaID: "test", CRLCheck: 50 * time.Millisecond}
	for _, f := range configure {
		f(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	wg.Go(func() {
		if err := svc.Run(ctx); err != nil {
			t.Errorf("service Run: %v", err)
		}
	})
	e.renewServing()
	_, bundle := e.view.TrustPool()
	e.trust(bundle)
	srv, err := grpcserver.New(grpcserver.Config{TLS: e.tlsConfig(), Auth: &authn.Authenticator{TrustDomain: testTD, Revoked: e.view}, Denials: e.audit, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	svc.Register(srv.GRPC)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	wg.Go(func() { _ = srv.Serve(ctx, lis) })
	e.admin = e.mintLocal(identity.AdminID(testTD, "admin"), pki.Template{Lifetime: time.Hour, Client: true})
	// The CRL exists once the elected job ran; tests compare etcd dumps and must not see it appear.
	etcdtest.Eventually(t, 20*time.Second, func() bool { _, ok := e.view.Mirror().Get(keyCRL); return ok }, "first CRL published")
	return e
}

// renewServing gives the server a fresh certificate from the active CA, as wardend's serving
// certificate renewal does.
func (e *env) renewServing() {
	e.t.Helper()
	tc := e.mintLocal(identity.ControlPlaneID(testTD), pki.Template{Lifetime: time.Hour, Server: true, Client: true,
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	e.serving.Store(tc)
}

func (e *env) mintLocal(id identity.ID, tpl pki.Template) *tls.Certificate {
	e.t.Helper()
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		e.t.Fatal(err)
	}
	certPEM, err := e.auth.IssueLocal(context.Background(), id, key.Public(), tpl)
	if err != nil {
		e.t.Fatal(err)
	}
	return tlsCert(e.t, key, certPEM)
}

func tlsCert(t testing.TB, key crypto.Signer, certPEM []byte) *tls.Certificate {
	t.Helper()
	certs, err := pki.ParseCertsPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

func (e *env) tlsConfig() *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{*e.serving.Load()}
		c.ClientCAs, _ = e.view.TrustPool()
		c.ClientAuth = tls.VerifyClientCertIfGiven
		return c, nil
	}
	return base
}

// trust adds roots the test clients accept for the server.
func (e *env) trust(bundle []byte) {
	e.rootsMu.Lock()
	defer e.rootsMu.Unlock()
	e.roots.AppendCertsFromPEM(bundle)
}

func (e *env) dial(cert *tls.Certificate) *grpc.ClientConn {
	e.t.Helper()
	e.rootsMu.Lock()
	tc := &tls.Config{RootCAs: e.roots.Clone(), ServerName: "localhost", MinVersion: tls.VersionTLS13}
	e.rootsMu.Unlock()
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (e *env) adminClient() certv1.CertServiceClient {
	return certv1.NewCertServiceClient(e.dial(e.admin))
}
func (e *env) anonClient() certv1.CertServiceClient { return certv1.NewCertServiceClient(e.dial(nil)) }

// node is an agent: its key and identity, obtained through CreateNode and Bootstrap.
type node struct {
	id   string
	role certv1.NodeRole
	key  crypto.Signer
	cert *tls.Certificate
	resp *certv1.BootstrapResponse
}

func (e *env) createNode(id string, role certv1.NodeRole, addrs ...string) *certv1.CreateNodeResponse {
	e.t.Helper()
	resp, err := e.adminClient().CreateNode(e.t.Context(), &certv1.CreateNodeRequest{NodeId: id, Role: role, Zone: "dmz", Addresses: addrs})
	if err != nil {
		e.t.Fatalf("CreateNode %s: %v", id, err)
	}
	return resp
}

func roleOf(r certv1.NodeRole) identity.Role {
	if r == certv1.NodeRole_NODE_ROLE_COREAPP {
		return identity.RoleCoreapp
	}
	return identity.RoleWebapp
}

func newCSR(t testing.TB, kt pki.KeyType, id string) (crypto.Signer, string) {
	t.Helper()
	key, err := pki.GenerateKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, identity.NodeID(testTD, identity.RoleWebapp, id))
	if err != nil {
		t.Fatal(err)
	}
	return key, string(csr)
}

// bootstrapNode registers a node and bootstraps it.
func (e *env) bootstrapNode(id string, role certv1.NodeRole, addrs ...string) *node {
	e.t.Helper()
	created := e.createNode(id, role, addrs...)
	key, csr := newCSR(e.t, pki.DefaultKeyType, id)
	resp, err := e.anonClient().Bootstrap(e.t.Context(), &certv1.BootstrapRequest{JoinToken: created.JoinToken, CsrPem: csr})
	if err != nil {
		e.t.Fatalf("Bootstrap %s: %v", id, err)
	}
	return &node{id: id, role: role, key: key, cert: tlsCert(e.t, key, []byte(resp.CertificatePem)), resp: resp}
}

func (e *env) nodeClient(n *node) certv1.CertServiceClient {
	return certv1.NewCertServiceClient(e.dial(n.cert))
}

// dump is every key and value under the cert namespace.
func (e *env) dump(prefix string) map[string]string {
	e.t.Helper()
	resp, err := e.client.Raw().Get(e.t.Context(), Prefix+prefix, clientv3.WithPrefix())
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

func diffDumps(a, b map[string]string) []string {
	var diffs []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			diffs = append(diffs, "removed "+k)
		} else if w != v {
			diffs = append(diffs, "changed "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, "added "+k)
		}
	}
	sort.Strings(diffs)
	return diffs
}

// auditEvents returns the audit log.
func (e *env) auditEvents() []*adminv1.AuditEvent {
	e.t.Helper()
	resp, err := e.client.Raw().Get(e.t.Context(), audit.Prefix, clientv3.WithPrefix())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*adminv1.AuditEvent
	for _, kv := range resp.Kvs {
		ev := &adminv1.AuditEvent{}
		if err := proto.Unmarshal(kv.Value, ev); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func wantCode(t testing.TB, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got %v (%v), want %v", got, err, want)
	}
}

// recvUntil reads snapshots until cond holds.
func recvUntil(t testing.TB, stream certv1.CertService_WatchCredentialsClient, cond func(*certv1.WatchCredentialsResponse) bool) *certv1.WatchCredentialsResponse {
	t.Helper()
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("WatchCredentials: %v", err)
		}
		if cond(msg) {
			return msg
		}
	}
}

func bundlePool(t testing.TB, pemText string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pemText)) {
		t.Fatal("no certificate in bundle")
	}
	return pool
}

func bundleFingerprints(t testing.TB, pemText string) []string {
	t.Helper()
	certs, err := pki.ParseCertsPEM([]byte(pemText))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range certs {
		out = append(out, pki.Fingerprint(c))
	}
	return out
}

// verifyChain verifies a certificate PEM (leaf first, then intermediates) against roots.
func verifyChain(t testing.TB, certPEM string, roots *x509.CertPool, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	certs, err := pki.ParseCertsPEM([]byte(certPEM))
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Fatalf("certificate does not verify: %v", err)
	}
	return certs[0]
}

// onlyCRL parses a CRL PEM outside a CA rotation, where it holds exactly one CRL.
func onlyCRL(t testing.TB, pemText string) *x509.RevocationList {
	t.Helper()
	crls, err := pki.ParseCRLs([]byte(pemText))
	if err != nil {
		t.Fatal(err)
	}
	if len(crls) != 1 {
		t.Fatalf("%d CRLs, want 1 (one CA trusted)", len(crls))
	}
	return crls[0]
}

func equalPEM(a, b string) bool {
	return bytes.Equal(bytes.TrimSpace([]byte(a)), bytes.TrimSpace([]byte(b)))
}
