package scaleout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/agent"
	"github.com/warden-sec/warden/services/internal/agent/agenttest"
	agentstatus "github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/cliconfig"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/testutil/etcdcluster"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
	"github.com/warden-sec/warden/services/internal/wardend"
)

const (
	trustDomain = "scale.test"
	// etcdTimeout bounds every etcd request of a replica, so that a write against a cluster without
	// quorum fails quickly with Unavailable instead of after the 5 s default.
	etcdTimeout = 2 * time.Second
	// bound is the generous limit of every poll: it is never a speed assertion.
	bound = 30 * time.Second
	// electionPrefix is where store.RunElected keeps its elections.
	electionPrefix = "/warden/election/"
)

// elections are the names the services pass to RunElected (certsvc, secretsvc, adminsvc).
var elections = []string{"cert-crl", "secret-rotation", "audit-retention"}

// startReplica runs one wardend replica on the cluster. Every replica reads the same key-encryption key:
// the CA key the first replica creates is sealed with it, so a replica with its own dev key could not
// open it.
func startReplica(t *testing.T, cl *etcdcluster.Cluster, sealKey, id string) *wardentest.Env {
	t.Helper()
	return wardentest.Start(t, wardentest.Options{Configure: func(c *wardend.Config) {
		c.EtcdEndpoints = cliconfig.List(cl.Endpoints())
		c.ReplicaID = id
		c.TrustDomain = trustDomain
		c.EtcdTimeout = etcdTimeout
		c.SealKeyFile = sealKey
	}})
}

// dial connects to addr trusting pool, presenting cert (nil: none).
func dial(t *testing.T, addr string, pool *x509.CertPool, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	tc := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// bootstrap redeems a join token on conn (anonymous) with a fresh key, as an agent's first start does.
func bootstrap(ctx context.Context, t *testing.T, conn *grpc.ClientConn, token string, id identity.ID) *tls.Certificate {
	t.Helper()
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := certv1.NewCertServiceClient(conn).Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: token, CsrPem: string(csr)})
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	certs, err := pki.ParseCertsPEM([]byte(resp.GetCertificatePem()))
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// leader is the id leading election name, read straight from etcd ("" when none).
func leader(ctx context.Context, c *store.Client, name string) string {
	id, err := c.Leader(ctx, name)
	if err != nil {
		return ""
	}
	return id
}

// candidates are the ids campaigning in election name, oldest first: the first leads, the others wait.
func candidates(ctx context.Context, c *store.Client, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	resp, err := c.Raw().Get(ctx, electionPrefix+name+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, kv := range resp.Kvs {
		ids = append(ids, string(kv.Value))
	}
	return ids, nil
}

// etcdLeader is the index of the member that leads the raft group, -1 if none answers.
func etcdLeader(ctx context.Context, c *store.Client, endpoints []string) int {
	for i, ep := range endpoints {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.Raw().Status(sctx, ep)
		cancel()
		if err == nil && st.Leader == st.Header.GetMemberId() {
			return i
		}
	}
	return -1
}

// retryUnavailable repeats a write while it fails with Unavailable (an etcd leader election in
// progress), up to bound, and returns how many attempts it took.
func retryUnavailable(t *testing.T, what string, fn func(ctx context.Context) error) int {
	t.Helper()
	deadline := time.Now().Add(bound)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := fn(ctx)
		cancel()
		if err == nil {
			return attempt
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("%s (attempt %d): %v", what, attempt, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// setPolicy stores the current document changed by edit as a new version; a non-empty downgrade is
// the reason that accepts a weaker policy.
func setPolicy(ctx context.Context, c policyv1.PolicyServiceClient, msg, downgrade string, edit func(*policyv1.PolicyDocument)) (*policyv1.PolicyVersion, error) {
	cur, err := c.GetPolicy(ctx, &policyv1.GetPolicyRequest{})
	if err != nil {
		return nil, err
	}
	doc := cur.GetPolicy().GetDocument()
	edit(doc)
	resp, err := c.SetPolicy(ctx, &policyv1.SetPolicyRequest{Document: doc, Message: msg, AllowDowngrade: downgrade != "", DowngradeReason: downgrade})
	if err != nil {
		return nil, err
	}
	return resp.GetPolicy(), nil
}

// openLoopback lets loopback clients reach the Webapp API, so that the agent's front serves the test.
func openLoopback(doc *policyv1.PolicyDocument) {
	for _, z := range doc.GetDefaults().GetNetwork().GetZones() {
		if z.GetName() == "clients" {
			z.Cidrs = []string{"127.0.0.0/8"}
		}
	}
}

// markHeader sets an extra Web Admin header: a harmless change that makes a new version.
func markHeader(value string) func(*policyv1.PolicyDocument) {
	return func(doc *policyv1.PolicyDocument) {
		h := doc.GetDefaults().GetHeaders()
		if h.Extra == nil {
			h.Extra = map[string]string{}
		}
		h.Extra["X-Scaleout-Step"] = value
	}
}

// runningAgent is a real warden-agent (agent.Run, fronts included) in this process.
type runningAgent struct {
	dataDir, front string
	cancel         context.CancelFunc
	done           chan error
	tap            *resubscribes
}

// resubscribes taps the agent's log for its "stream ended; resubscribing" warnings, so the test can
// report which of the agent's streams a stopped replica held (round robin decides where they land).
type resubscribes struct {
	mu      sync.Mutex
	streams []string
}

func (r *resubscribes) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.streams
	r.streams = nil
	return out
}

type tapHandler struct {
	slog.Handler
	r *resubscribes
}

func (h tapHandler) Handle(ctx context.Context, rec slog.Record) error {
	if strings.Contains(rec.Message, "resubscribing") {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "stream" {
				h.r.mu.Lock()
				h.r.streams = append(h.r.streams, a.Value.String())
				h.r.mu.Unlock()
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, rec)
}

func (h tapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return tapHandler{h.Handler.WithAttrs(attrs), h.r}
}

func (h tapHandler) WithGroup(name string) slog.Handler {
	return tapHandler{h.Handler.WithGroup(name), h.r}
}

// forwarder relays TCP connections to a replica once started; until then its address refuses them.
// The agent's round robin can only use the endpoints that answer, so starting the forwarders late puts
// every stream of the agent on the one replica reached directly.
type forwarder struct {
	addr, target string
	accepted     atomic.Int64
}

func newForwarder(t *testing.T, target string) *forwarder {
	return &forwarder{addr: etcdtest.FreeAddr(t), target: target}
}

func (f *forwarder) start(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			f.accepted.Add(1)
			out, err := net.Dial("tcp", f.target)
			if err != nil {
				_ = in.Close()
				continue
			}
			track(in)
			track(out)
			go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
			go func() { _, _ = io.Copy(in, out); _ = in.Close() }()
		}
	}()
}

// startAgent runs a Webapp agent with every replica as --server and an HTTPS front proxying to a
// stand-in Webapp.
func startAgent(t *testing.T, nodeID string, servers []string, token, fingerprint string) *runningAgent {
	t.Helper()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("upstream ok"))
	}))
	t.Cleanup(upstream.Close)
	up, _ := url.Parse(upstream.URL)
	cfg := agent.Defaults()
	cfg.Role = string(identity.RoleWebapp)
	cfg.NodeID = nodeID
	cfg.DataDir = t.TempDir()
	cfg.Servers = cliconfig.List(servers)
	cfg.JoinToken, cfg.CAFingerprint = token, fingerprint
	cfg.FrontListen, cfg.Upstream = etcdtest.FreeAddr(t), up.String()
	cfg.StatusInterval = time.Second
	cfg.StreamIdle = 10 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	a := &runningAgent{dataDir: cfg.DataDir, front: cfg.FrontListen, cancel: cancel, done: make(chan error, 1), tap: &resubscribes{}}
	log := slog.New(tapHandler{etcdtest.Logger(t).Handler(), a.tap})
	go func() { a.done <- agent.Run(ctx, cfg, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-a.done:
			if err != nil {
				t.Errorf("agent stopped with %v", err)
			}
		case <-time.After(bound):
			t.Error("agent did not stop")
		}
	})
	return a
}

// status is the agent's status file, as `warden-agent status` reads it.
func (a *runningAgent) status() *agentstatus.Status {
	st, err := agentstatus.Read(a.dataDir)
	if err != nil {
		return nil
	}
	return st
}

// policyVersion is the policy snapshot version the agent applied, per its status file.
func (a *runningAgent) policyVersion() int64 {
	st := a.status()
	if st == nil || st.Streams[agentstatus.StreamPolicy] == nil {
		return 0
	}
	return st.Streams[agentstatus.StreamPolicy].Version
}

// files hashes every file the agent materialised (agenttest.Files).
func (a *runningAgent) files(t *testing.T) map[string]string { return agenttest.Files(t, a.dataDir) }

// frontGet fetches an API path through the agent's HTTPS front, verifying its certificate.
func (a *runningAgent) frontGet(pool *x509.CertPool) (string, *x509.Certificate, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + a.front + "/v1/ping")
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	n, _ := resp.Body.Read(buf)
	if resp.StatusCode != http.StatusOK {
		return "", nil, errors.New(resp.Status + ": " + string(buf[:n]))
	}
	return string(buf[:n]), resp.TLS.PeerCertificates[0], nil
}
