package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/agent/node"
	"github.com/warden-sec/warden/services/internal/backoff"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/wardend"
)

// benchZone is the network zone of every node the bench registers.
const benchZone = "webapp"

// secretName is the secret the rotation step rotates: the built-in one every node holds.
const secretName = "wa-secret"

// Setup rates. wardend limits every identity (and every anonymous source address) to 200 requests/s
// with a burst of 400; the bench stays under it instead of measuring refusals. Bootstraps come from
// bootstrapSources distinct loopback addresses, as joins from that many hosts would.
const (
	adminRate        = 190
	bootstrapSources = 16
	bootstrapRate    = 190
	setupWorkers     = 32
)

// fleet is the population of simulated agents: each is a registered node with its own key and mTLS
// identity from Bootstrap, one TLS connection, and the three streams a Webapp agent holds
// (credentials, secrets, policy), acknowledging every snapshot as the real agent does.
type fleet struct {
	addr     string
	td       string
	pool     *x509.CertPool
	admin    *grpc.ClientConn
	adminLim *rate.Limiter
	anon     []*grpc.ClientConn
	anonLim  []*rate.Limiter
	log      *slog.Logger
	prefix   string
	// streamOpts are added to every stream an agent opens: as warden-agent (internal/agent/node), a
	// re-subscription waits for the connection to be ready instead of failing fast while it is down.
	streamOpts []grpc.CallOption

	ctx    context.Context // the agents' lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	agents []*simAgent

	policy, staged, active, creds *tracker
	// dbCAGen maps the fingerprint of a database CA the bench set to its generation number.
	dbCAGen sync.Map

	firstSnaps atomic.Int64 // first message of a stream after subscribing (3 per agent at start)
	reconnects atomic.Int64 // stream re-subscriptions after an error
	refused    atomic.Int64 // stream errors that refuse the node's identity or request
	ackFailed  atomic.Int64 // acknowledgements that failed and were retried
	lastErrMu  sync.Mutex
	lastErr    error
	// sample is a real policy snapshot, replayed by the baseline.
	sample atomic.Pointer[policyv1.WatchPolicyResponse]
}

func newFleet(ctx context.Context, addr string, admin wardend.AdminFiles, prefix string, log *slog.Logger) (*fleet, error) {
	pool, err := loadPool(admin.CA)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(admin.Cert, admin.Key)
	if err != nil {
		return nil, fmt.Errorf("admin credentials: %w", err)
	}
	id, err := identity.FromCertificate(pair.Leaf)
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}
	ac, err := dialTLS(addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}}, nil)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	f := &fleet{
		addr: addr, td: id.TrustDomain, pool: pool, admin: ac, log: log, prefix: prefix,
		adminLim: rate.NewLimiter(adminRate, 20),
		ctx:      actx, cancel: cancel,
		policy: newTracker(), staged: newTracker(), active: newTracker(), creds: newTracker(),
		streamOpts: []grpc.CallOption{grpc.WaitForReady(true)},
	}
	for i := range bootstrapSources {
		c, err := dialTLS(addr, f.serverTLS(), net.IPv4(127, 0, 1, byte(i+1)))
		if err != nil {
			f.close()
			return nil, err
		}
		f.anon = append(f.anon, c)
		f.anonLim = append(f.anonLim, rate.NewLimiter(bootstrapRate, 20))
	}
	return f, nil
}

func (f *fleet) serverTLS() *tls.Config {
	return &tls.Config{RootCAs: f.pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
}

func (f *fleet) certs() certv1.CertServiceClient { return certv1.NewCertServiceClient(f.admin) }
func (f *fleet) policies() policyv1.PolicyServiceClient {
	return policyv1.NewPolicyServiceClient(f.admin)
}
func (f *fleet) secrets() secretv1.SecretServiceClient {
	return secretv1.NewSecretServiceClient(f.admin)
}

// adminCall runs an admin RPC under the client-side rate limit, retrying ResourceExhausted and
// Unavailable (a restarting wardend) until ctx ends.
func (f *fleet) adminCall(ctx context.Context, call func(ctx context.Context) error) error {
	return retry(ctx, f.adminLim, call)
}

func retry(ctx context.Context, lim *rate.Limiter, call func(ctx context.Context) error) error {
	b := backoff.Backoff{Initial: 20 * time.Millisecond, Max: time.Second, Jitter: 1}
	for {
		if err := lim.Wait(ctx); err != nil {
			return err
		}
		err := call(ctx)
		switch status.Code(err) {
		case codes.ResourceExhausted, codes.Unavailable:
		default:
			return err
		}
		if serr := backoff.Sleep(ctx, b.Next()); serr != nil {
			return fmt.Errorf("%w (last error: %v)", serr, err)
		}
	}
}

// register creates node id and bootstraps its identity with a locally generated key; it returns the
// TLS certificate the node authenticates with.
func (f *fleet) register(ctx context.Context, i int, id string) (tls.Certificate, error) {
	var created *certv1.CreateNodeResponse
	err := f.adminCall(ctx, func(ctx context.Context) (err error) {
		created, err = f.certs().CreateNode(ctx, &certv1.CreateNodeRequest{
			NodeId: id, Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: benchZone, Addresses: []string{id + ".bench.local"},
		})
		return err
	})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("CreateNode %s: %w", id, err)
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		return tls.Certificate{}, err
	}
	csr, err := pki.CreateCSR(key, identity.NodeID(f.td, identity.RoleWebapp, id))
	if err != nil {
		return tls.Certificate{}, err
	}
	src := i % len(f.anon)
	var boot *certv1.BootstrapResponse
	err = retry(ctx, f.anonLim[src], func(ctx context.Context) (err error) {
		boot, err = certv1.NewCertServiceClient(f.anon[src]).Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: created.GetJoinToken(), CsrPem: string(csr)})
		return err
	})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("Bootstrap %s: %w", id, err)
	}
	chain, err := pki.ParseCertsPEM([]byte(boot.GetCertificatePem()))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("Bootstrap %s: certificate: %w", id, err)
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

// grow brings the fleet to n subscribed agents and returns how long the new ones took to register,
// connect and receive their first snapshot on every stream.
func (f *fleet) grow(ctx context.Context, n int) (time.Duration, error) {
	f.mu.Lock()
	have := len(f.agents)
	f.mu.Unlock()
	if n <= have {
		return 0, nil
	}
	start := time.Now()
	want := f.firstSnaps.Load() + int64(3*(n-have))
	jobs := make(chan int)
	errs := make(chan error, setupWorkers)
	var wg sync.WaitGroup
	for range min(setupWorkers, n-have) {
		wg.Go(func() {
			for i := range jobs {
				a, err := f.connect(ctx, i)
				if err != nil {
					errs <- err
					return
				}
				f.mu.Lock()
				f.agents = append(f.agents, a)
				k := len(f.agents)
				f.mu.Unlock()
				if step := max((n-have)/10, 1); (k-have)%step == 0 {
					f.log.Info("agents connected", "connected", k, "of", n, "first snapshots", f.firstSnaps.Load())
				}
			}
		})
	}
	var firstErr error
feed:
	for i := have; i < n; i++ {
		select {
		case jobs <- i:
		case firstErr = <-errs:
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil {
		select {
		case firstErr = <-errs:
		default:
		}
	}
	if firstErr != nil {
		return 0, firstErr
	}
	deadline := time.Now().Add(60*time.Second + time.Duration(n)*5*time.Millisecond)
	for next := time.Now().Add(10 * time.Second); f.firstSnaps.Load() < want; {
		if time.Now().After(next) {
			f.log.Info("waiting for first snapshots", "have", f.firstSnaps.Load(), "want", want, "last error", f.err())
			next = time.Now().Add(10 * time.Second)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("only %d of %d streams delivered their first snapshot (last error: %v)", f.firstSnaps.Load(), want, f.err())
		}
		if err := backoff.Sleep(ctx, 5*time.Millisecond); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func (f *fleet) connect(ctx context.Context, i int) (*simAgent, error) {
	id := fmt.Sprintf("%s-%05d", f.prefix, i)
	cert, err := f.register(ctx, i, id)
	if err != nil {
		return nil, err
	}
	tc := f.serverTLS()
	tc.Certificates = []tls.Certificate{cert}
	// As warden-agent: a reconnect resumes the TLS session.
	tc.ClientSessionCache = node.SessionCache(func() *tls.Certificate { return &cert })
	// warden-agent's balancing and reconnect back-off, so that the storm is the real agents' storm.
	conn, err := dialTLS(f.addr, tc, nil, node.ChannelOptions()...)
	if err != nil {
		return nil, err
	}
	a := &simAgent{f: f, id: id, conn: conn}
	a.start()
	return a, nil
}

func (f *fleet) size() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.agents)
}

func (f *fleet) setErr(err error) {
	f.lastErrMu.Lock()
	f.lastErr = err
	f.lastErrMu.Unlock()
}

func (f *fleet) err() error {
	f.lastErrMu.Lock()
	defer f.lastErrMu.Unlock()
	return f.lastErr
}

// closeAgents stops every simulated agent and closes its connection; admin calls still work.
func (f *fleet) closeAgents() {
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	for _, a := range f.agents {
		_ = a.conn.Close()
	}
	f.agents = nil
	f.mu.Unlock()
}

// close stops every agent and connection.
func (f *fleet) close() {
	f.closeAgents()
	for _, c := range f.anon {
		_ = c.Close()
	}
	_ = f.admin.Close()
}

// dbCAGeneration is the generation the bench assigned to the first certificate of a database CA
// bundle, 0 for bundles it did not set.
func (f *fleet) dbCAGeneration(bundle string) uint64 {
	certs, err := pki.ParseCertsPEM([]byte(bundle))
	if err != nil || len(certs) == 0 {
		return 0
	}
	if g, ok := f.dbCAGen.Load(pki.Fingerprint(certs[0])); ok {
		return g.(uint64)
	}
	return 0
}

func (f *fleet) setDBCAGeneration(fingerprint string, gen uint64) { f.dbCAGen.Store(fingerprint, gen) }

// simAgent is one simulated Webapp agent.
type simAgent struct {
	f    *fleet
	id   string
	conn *grpc.ClientConn

	// Last applied snapshot versions, passed on re-subscription as the agent does.
	policyVer, secretVer, credVer atomic.Int64
	// Highest change seen per tracker, so a repeated or older snapshot is not counted twice.
	policyNum, stagedNum, activeNum, credGen uint64
	trusted                                  []string
	trustedPEM, dbCAPEM                      string
}

func (a *simAgent) start() {
	for _, run := range []func(context.Context, func()) error{a.watchPolicy, a.watchSecrets, a.watchCredentials} {
		a.f.wg.Go(func() { a.loop(run) })
	}
}

// loop keeps one stream subscribed: on any error it waits backoff.Default's full-jitter delay (reset
// by every message) and subscribes again with the last applied version, like warden-agent, which
// never stops retrying. Refusals are counted: an agent that keeps getting them has in effect given up.
func (a *simAgent) loop(run func(context.Context, func()) error) {
	ctx := a.f.ctx
	b := backoff.Default()
	first := true
	for {
		err := run(ctx, func() {
			b.Reset()
			if first {
				first = false
				a.f.firstSnaps.Add(1)
			}
		})
		if ctx.Err() != nil {
			return
		}
		if refusal(err) {
			a.f.refused.Add(1)
		}
		a.f.setErr(fmt.Errorf("%s: %w", a.id, err))
		a.f.reconnects.Add(1)
		if backoff.Sleep(ctx, b.Next()) != nil {
			return
		}
	}
}

// ack sends an acknowledgement until it is recorded, retrying with backoff.Default as warden-agent
// does (the rotation and the status views wait for it).
func (a *simAgent) ack(ctx context.Context, send func(context.Context) error) error {
	b := backoff.Default()
	for {
		err := send(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		a.f.ackFailed.Add(1)
		a.f.setErr(fmt.Errorf("%s: ack: %w", a.id, err))
		if err := backoff.Sleep(ctx, b.Next()); err != nil {
			return err
		}
	}
}

// refusal errors are those retrying cannot cure: the node's identity or its request is refused.
func refusal(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.NotFound, codes.Unimplemented:
		return true
	}
	return false
}

// snapshotMsg is what every Watch response has.
type snapshotMsg interface {
	GetHeartbeat() bool
	GetVersion() int64
}

// follow receives one stream until it fails, as warden-agent does: every snapshot that is not a
// heartbeat is handled (handle records what it brought and returns its acknowledgement and what to
// mark once that succeeded), acknowledged with retries, and its version kept for re-subscribing.
func follow[M snapshotMsg](ctx context.Context, a *simAgent, recv func() (M, error), got func(), version *atomic.Int64,
	handle func(m M, now time.Time) (ack func(context.Context) error, acked func())) error {
	for {
		m, err := recv()
		if err != nil {
			return err
		}
		now := time.Now()
		got()
		if m.GetHeartbeat() {
			continue
		}
		ack, acked := handle(m, now)
		if err := a.ack(ctx, ack); err != nil {
			return err
		}
		if acked != nil {
			acked()
		}
		version.Store(m.GetVersion())
	}
}

func (a *simAgent) watchPolicy(ctx context.Context, got func()) error {
	c := policyv1.NewPolicyServiceClient(a.conn)
	st, err := c.WatchPolicy(ctx, &policyv1.WatchPolicyRequest{NodeId: a.id, LastVersion: a.policyVer.Load()}, a.f.streamOpts...)
	if err != nil {
		return err
	}
	return follow(ctx, a, st.Recv, got, &a.policyVer, func(m *policyv1.WatchPolicyResponse, now time.Time) (func(context.Context) error, func()) {
		n := m.GetRendered().GetPolicyNumber()
		var acked func()
		if n > a.policyNum {
			a.policyNum = n
			a.f.policy.markRecv(n, now)
			acked = func() { a.f.policy.markAck(n, time.Now()) }
		}
		a.f.sample.CompareAndSwap(nil, m)
		return func(ctx context.Context) error {
			_, err := c.AckPolicy(ctx, &policyv1.AckPolicyRequest{NodeId: a.id, Version: m.GetVersion(), PolicyNumber: n})
			return err
		}, acked
	})
}

func (a *simAgent) watchSecrets(ctx context.Context, got func()) error {
	c := secretv1.NewSecretServiceClient(a.conn)
	st, err := c.WatchSecrets(ctx, &secretv1.WatchSecretsRequest{NodeId: a.id, LastVersion: a.secretVer.Load()}, a.f.streamOpts...)
	if err != nil {
		return err
	}
	return follow(ctx, a, st.Recv, got, &a.secretVer, func(m *secretv1.WatchSecretsResponse, now time.Time) (func(context.Context) error, func()) {
		var acked func()
		held := make([]*secretv1.HeldSecret, 0, len(m.GetSecrets()))
		for _, s := range m.GetSecrets() {
			h := &secretv1.HeldSecret{Name: s.GetName()}
			for _, v := range s.GetVersions() {
				h.Numbers = append(h.Numbers, v.GetNumber())
				if s.GetName() != secretName {
					continue
				}
				switch n := v.GetNumber(); v.GetState() {
				case secretv1.VersionState_VERSION_STATE_STAGED:
					if n > a.stagedNum {
						a.stagedNum = n
						a.f.staged.markRecv(n, now)
						acked = func() { a.f.staged.markAck(n, time.Now()) }
					}
				case secretv1.VersionState_VERSION_STATE_ACTIVE:
					if n > a.activeNum {
						a.activeNum = n
						a.f.active.markRecv(n, now)
					}
				}
			}
			held = append(held, h)
		}
		return func(ctx context.Context) error {
			_, err := c.AckSecrets(ctx, &secretv1.AckSecretsRequest{NodeId: a.id, Version: m.GetVersion(), Held: held, AgentTime: timestamppb.Now()})
			return err
		}, acked
	})
}

func (a *simAgent) watchCredentials(ctx context.Context, got func()) error {
	c := certv1.NewCertServiceClient(a.conn)
	st, err := c.WatchCredentials(ctx, &certv1.WatchCredentialsRequest{NodeId: a.id, LastVersion: a.credVer.Load()}, a.f.streamOpts...)
	if err != nil {
		return err
	}
	return follow(ctx, a, st.Recv, got, &a.credVer, func(m *certv1.WatchCredentialsResponse, now time.Time) (func(context.Context) error, func()) {
		var acked func()
		if m.GetDatabaseCaPem() != a.dbCAPEM {
			a.dbCAPEM = m.GetDatabaseCaPem()
			if g := a.f.dbCAGeneration(a.dbCAPEM); g > a.credGen {
				a.credGen = g
				a.f.creds.markRecv(g, now)
				acked = func() { a.f.creds.markAck(g, time.Now()) }
			}
		}
		if m.GetTrustBundlePem() != a.trustedPEM {
			a.trustedPEM, a.trusted = m.GetTrustBundlePem(), fingerprints(m.GetTrustBundlePem())
		}
		return func(ctx context.Context) error {
			_, err := c.AckCredentials(ctx, &certv1.AckCredentialsRequest{NodeId: a.id, Version: m.GetVersion(), TrustedFingerprints: a.trusted, AgentTime: timestamppb.Now()})
			return err
		}, acked
	})
}

func fingerprints(bundle string) []string {
	certs, err := pki.ParseCertsPEM([]byte(bundle))
	if err != nil {
		return nil
	}
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = pki.Fingerprint(c)
	}
	return out
}
