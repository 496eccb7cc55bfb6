// Package node is the core of warden-agent: it bootstraps the node's identity, holds the Watch streams
// of the control plane with the versions it last applied, applies every snapshot to <data-dir>/certs and
// the env file, renews certificates, acknowledges what it applied, and keeps the last applied state in a
// sealed cache so that it can start and serve while the control plane is unreachable.
//
// Concurrency: one goroutine per stream receives (and never blocks on applying: a mailbox of one keeps
// the newest snapshot), one goroutine per stream applies and acknowledges, and applyMu serialises every
// write to disk, since the env file combines secrets and policy.
package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/agent/cache"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// Defaults of the tunable Config fields.
const (
	DefaultRPCTimeout = 15 * time.Second
	// DefaultStreamIdle is how long a stream may stay silent before it is presumed dead: three of the
	// control plane's 30 s heartbeats.
	DefaultStreamIdle = 90 * time.Second
)

// Config configures an Agent.
type Config struct {
	Role    identity.Role
	NodeID  string
	DataDir string
	// Servers are control-plane host:port endpoints; RPCs are spread over them and fail over.
	Servers []string
	// JoinToken and CAFingerprint bootstrap an identity when none is on disk.
	JoinToken     string
	CAFingerprint string
	// CAFile optionally holds the pinned CA certificate, for servers that do not present their root.
	CAFile string
	// GroupID may read the files (materialize.NoGroup: only the agent's user).
	GroupID int
	// ControlAddress is the Coreapp's advertised control-service address; it joins the mesh when set.
	ControlAddress string
	MasterEligible bool
	// OnPeers receives every mesh snapshot (Coreapp).
	OnPeers func(*meshv1.WatchPeersResponse)

	State  *live.State
	Status *status.Tracker
	// Reload is called after files changed (the reloader debounces).
	Reload func()
	Log    *slog.Logger
	Now    func() time.Time

	RPCTimeout time.Duration
	StreamIdle time.Duration
}

// Agent runs one node's side of the control plane.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	certsDir string
	certs    *materialize.Writer
	env      *materialize.Writer
	cache    *cache.Cache
	id       identity.ID
	// bootstrapped is set once this process used the join token, which is single-use.
	bootstrapped atomic.Bool

	conns connHolder

	applyMu  sync.Mutex
	held     map[certv1.CertKind]*held
	creds    *certv1.WatchCredentialsResponse
	secrets  *secretv1.WatchSecretsResponse
	policy   *policyv1.WatchPolicyResponse
	versions sync.Map // stream name → int64 version applied

	trusted []string

	credsBox  *mailbox[*certv1.WatchCredentialsResponse]
	renewWake chan struct{}
	clock     clockTracker
}

// New validates cfg and prepares the directories and the cache.
func New(cfg Config) (*Agent, error) {
	if cfg.Role != identity.RoleWebapp && cfg.Role != identity.RoleCoreapp {
		return nil, fmt.Errorf("role must be %q or %q, got %q", identity.RoleWebapp, identity.RoleCoreapp, cfg.Role)
	}
	if err := identity.ValidName(cfg.NodeID); err != nil {
		return nil, fmt.Errorf("node id: %w", err)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("data dir is required")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("at least one server is required")
	}
	if cfg.CAFingerprint != "" {
		fp, err := pki.NormalizeFingerprint(cfg.CAFingerprint)
		if err != nil {
			return nil, fmt.Errorf("CA fingerprint: %w", err)
		}
		cfg.CAFingerprint = fp
	}
	if cfg.State == nil || cfg.Status == nil || cfg.Log == nil {
		return nil, errors.New("node: State, Status and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Reload == nil {
		cfg.Reload = func() {}
	}
	if cfg.RPCTimeout <= 0 {
		cfg.RPCTimeout = DefaultRPCTimeout
	}
	if cfg.StreamIdle <= 0 {
		cfg.StreamIdle = DefaultStreamIdle
	}
	a := &Agent{
		cfg:       cfg,
		log:       cfg.Log,
		certsDir:  filepath.Join(cfg.DataDir, "certs"),
		held:      map[certv1.CertKind]*held{},
		credsBox:  newMailbox[*certv1.WatchCredentialsResponse](),
		renewWake: make(chan struct{}, 1),
	}
	var err error
	if a.certs, err = materialize.NewWriter(materialize.Options{Dir: a.certsDir, GroupID: cfg.GroupID}); err != nil {
		return nil, err
	}
	if a.env, err = materialize.NewWriter(materialize.Options{Dir: cfg.DataDir, GroupID: cfg.GroupID, SharedDir: true}); err != nil {
		return nil, err
	}
	if a.cache, err = cache.Open(status.StateDir(cfg.DataDir)); err != nil {
		return nil, err
	}
	return a, nil
}

// Run bootstraps if needed and then holds the streams until ctx is done. It returns an error only for
// conditions a retry cannot fix (no identity and no way to get one, a pin mismatch, a refused token).
func (a *Agent) Run(ctx context.Context) error {
	if err := a.ensureIdentity(ctx); err != nil {
		return err
	}
	a.loadState()
	if err := a.conns.dial(a); err != nil {
		return err
	}
	defer a.conns.close()

	if a.creds != nil {
		// Finish what the cached snapshot asked for (a renewal may have failed before the restart);
		// it rewrites nothing that is already right.
		a.credsBox.put(a.creds)
	}
	var wg sync.WaitGroup
	start := func(fn func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx)
		}()
	}
	start(func(ctx context.Context) { runStream(ctx, a, a.credentialsSpec()) })
	start(func(ctx context.Context) { runStream(ctx, a, a.secretsSpec()) })
	start(func(ctx context.Context) { runStream(ctx, a, a.policySpec()) })
	if a.cfg.Role == identity.RoleCoreapp && a.cfg.ControlAddress != "" {
		start(func(ctx context.Context) { runStream(ctx, a, a.peersSpec()) })
	}
	start(a.renewLoop)
	wg.Wait()
	return nil
}

// ensureIdentity loads the identity from disk, or bootstraps one.
func (a *Agent) ensureIdentity(ctx context.Context) error {
	h, err := loadHeld(a.certsDir, certv1.CertKind_CERT_KIND_IDENTITY)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		a.log.Info("no identity on disk; bootstrapping", "dir", a.certsDir)
		return a.bootstrap(ctx)
	case err != nil:
		return fmt.Errorf("identity on disk is unusable (remove %s and %s and bootstrap with a new join token): %w",
			CertFile(certv1.CertKind_CERT_KIND_IDENTITY), KeyFile(certv1.CertKind_CERT_KIND_IDENTITY), err)
	}
	id, err := identity.FromCertificate(h.leaf())
	if err != nil {
		return fmt.Errorf("identity on disk: %w", err)
	}
	if want := identity.NodeID(id.TrustDomain, a.cfg.Role, a.cfg.NodeID); id != want {
		return fmt.Errorf("identity on disk is %s, but the agent runs as %s (check --role and --node-id)", id, want)
	}
	a.id = id
	a.held[h.kind] = h
	if now := a.cfg.Now(); !now.Before(h.leaf().NotAfter) {
		if a.cfg.JoinToken != "" && a.cfg.CAFingerprint != "" {
			a.log.Warn("identity expired; bootstrapping again with the join token", "expired", h.leaf().NotAfter)
			return a.bootstrap(ctx)
		}
		a.reportExpiredIdentity(h.leaf().NotAfter)
	}
	return nil
}

// reportExpiredIdentity says what the operator must do: an expired identity cannot renew itself,
// since renewal authenticates with it.
func (a *Agent) reportExpiredIdentity(notAfter time.Time) {
	msg := fmt.Sprintf("identity certificate expired at %s; the control plane refuses this node and it cannot renew. "+
		"Create a join token (CreateJoinToken) and restart the agent with --join-token and --ca-fingerprint",
		notAfter.Format(time.RFC3339))
	a.log.Error(msg)
	a.cfg.Status.SetError("identity", msg)
}

// loadState publishes what is on disk and in the cache, so that the fronts serve at once and the streams
// resume from the cached versions.
func (a *Agent) loadState() {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	for _, kind := range Kinds(a.cfg.Role) {
		if kind == certv1.CertKind_CERT_KIND_IDENTITY {
			continue
		}
		h, err := loadHeld(a.certsDir, kind)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				a.log.Warn("certificate on disk is unusable; it will be replaced", "kind", KindName(kind), "err", err)
			}
			continue
		}
		a.held[kind] = h
	}
	bundle, err := readOptional(filepath.Join(a.certsDir, FileTrustBundle))
	if err != nil {
		a.log.Warn("reading the trust bundle", "err", err)
	}
	crl, err := readOptional(filepath.Join(a.certsDir, FileCRL))
	if err != nil {
		a.log.Warn("reading the CRL", "err", err)
	}
	pool, fps, err := parseBundle(bundle)
	if err != nil {
		a.log.Warn("trust bundle on disk is unusable", "err", err)
		pool = x509.NewCertPool()
	}
	revoked, err := parseCRL(crl)
	if err != nil {
		a.log.Warn("CRL on disk is unusable", "err", err)
		revoked = map[string]bool{}
	}
	a.publishCreds(pool, revoked)
	a.cfg.Status.Update(func(s *status.Status) {
		s.TrustDomain = a.id.TrustDomain
		s.TrustedFingerprints = fps
	})

	fromCache := false
	var creds certv1.WatchCredentialsResponse
	if at, ok := a.loadCached(status.StreamCredentials, &creds); ok {
		a.creds = &creds
		a.setVersion(status.StreamCredentials, creds.GetVersion(), at)
		fromCache = true
	}
	var secrets secretv1.WatchSecretsResponse
	if at, ok := a.loadCached(status.StreamSecrets, &secrets); ok {
		a.secrets = &secrets
		a.setVersion(status.StreamSecrets, secrets.GetVersion(), at)
		a.secretsStatus(&secrets)
		fromCache = true
	}
	var policy policyv1.WatchPolicyResponse
	if at, ok := a.loadCached(status.StreamPolicy, &policy); ok {
		a.policy = &policy
		a.setVersion(status.StreamPolicy, policy.GetVersion(), at)
		a.publishPolicy(policy.GetRendered())
		fromCache = true
	}
	if a.cfg.Role == identity.RoleCoreapp && a.cfg.ControlAddress != "" {
		var peers meshv1.WatchPeersResponse
		if at, ok := a.loadCached(status.StreamPeers, &peers); ok {
			a.setVersion(status.StreamPeers, peers.GetVersion(), at)
			if a.cfg.OnPeers != nil {
				a.cfg.OnPeers(&peers)
			}
		}
	}
	a.certStatus()
	if fromCache {
		a.cfg.Status.Update(func(s *status.Status) { s.FromCache = true })
		a.log.Info("started from the cached state; serving it until the control plane answers")
	}
}

func (a *Agent) version(stream string) int64 {
	v, _ := a.versions.Load(stream)
	n, _ := v.(int64)
	return n
}

func (a *Agent) setVersion(stream string, v int64, at time.Time) {
	a.versions.Store(stream, v)
	a.cfg.Status.Stream(stream, func(s *status.Stream) {
		s.Version = v
		s.AppliedAt = at
		s.Error = ""
	})
}

// contact records that the control plane answered.
func (a *Agent) contact(server string) {
	now := a.cfg.Now()
	a.cfg.Status.Update(func(s *status.Status) {
		s.LastContact = now
		s.FromCache = false
		if server != "" {
			s.Server = server
		}
	})
}

// wakeRenewal makes the renewal loop recompute its next deadline.
func (a *Agent) wakeRenewal() {
	select {
	case a.renewWake <- struct{}{}:
	default:
	}
}

// renewLoop re-runs the credentials reconciliation when the earliest certificate reaches its renewal
// time. The reconciliation itself decides what to renew and retries failures.
func (a *Agent) renewLoop(ctx context.Context) {
	for {
		a.applyMu.Lock()
		id := a.held[certv1.CertKind_CERT_KIND_IDENTITY]
		a.applyMu.Unlock()
		if id != nil && !a.cfg.Now().Before(id.leaf().NotAfter) {
			a.reportExpiredIdentity(id.leaf().NotAfter)
		} else {
			a.cfg.Status.SetError("identity", "")
		}
		next := a.nextRenewal()
		wait := time.Until(next)
		if next.IsZero() {
			wait = time.Hour
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-a.renewWake:
			t.Stop()
			continue
		case <-t.C:
		}
		a.applyMu.Lock()
		snap := a.creds
		a.applyMu.Unlock()
		if snap == nil {
			snap = &certv1.WatchCredentialsResponse{}
		}
		a.log.Info("certificate renewal due", "at", next)
		a.credsBox.put(snap)
		// Give the reconciliation time to run before looking again; it wakes us when it applied.
		select {
		case <-ctx.Done():
			return
		case <-a.renewWake:
		case <-time.After(time.Minute):
		}
	}
}

// nextRenewal is the earliest renewal time among held certificates (zero if none).
func (a *Agent) nextRenewal() time.Time {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	fractions := map[certv1.CertKind]float64{}
	for _, r := range a.creds.GetRequired() {
		fractions[r.GetKind()] = r.GetRenewFraction()
	}
	var next time.Time
	for kind, h := range a.held {
		if h.external {
			continue
		}
		at := renewAt(h.leaf(), fractions[kind])
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

func (a *Agent) loadCached(name string, into proto.Message) (time.Time, bool) {
	raw, at, err := a.cache.Load(name)
	if err != nil {
		if !errors.Is(err, cache.ErrNotFound) {
			a.log.Warn("cache entry unusable; waiting for the control plane", "entry", name, "err", err)
		}
		return time.Time{}, false
	}
	if err := proto.Unmarshal(raw, into); err != nil {
		a.log.Warn("cache entry does not decode; waiting for the control plane", "entry", name, "err", err)
		return time.Time{}, false
	}
	return at, true
}

func (a *Agent) saveCached(name string, msg proto.Message) {
	raw, err := proto.Marshal(msg)
	if err == nil {
		err = a.cache.Save(name, raw)
	}
	if err != nil {
		a.log.Warn("saving the cache failed; a restart without the control plane would lose this snapshot", "entry", name, "err", err)
	}
}
