// Package secretsvc implements warden.secret.v1.SecretService: named, scoped, versioned secrets sealed
// at rest, pushed to the nodes in scope, and rotated in stages driven by the nodes' acknowledgements.
//
// Rotation: RotateSecret stages version N+1. Every replica pushes it to the nodes in scope, which
// acknowledge holding it (AckSecrets). Once every in-scope node holds N+1 it becomes active and N
// retiring; after the grace period N retires and its value is deleted. Promotion is evaluated by the
// AckSecrets handler as soon as an acknowledgement arrives, and by a periodic loop on one elected
// replica, which also retires versions and runs scheduled rotations. Every transition is a Txn guarded by
// the record's revision, so replicas evaluating the same transition at once commit it once.
package secretsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/backoff"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/fanout"
	"github.com/warden-sec/warden/services/internal/mirror"
	"github.com/warden-sec/warden/services/internal/rungroup"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/store"
)

// Prefix is the service's etcd namespace.
const Prefix = "/warden/secret/"

// Defaults of the Config fields and of secret settings.
const (
	DefaultInterval        = 2 * time.Second
	DefaultHeartbeat       = 30 * time.Second
	DefaultReplayWindow    = 10 * time.Second
	DefaultGracePeriod     = 10 * time.Minute
	DefaultRotationTimeout = 15 * time.Minute
)

// RotationElection is the etcd election of the replica that runs the rotation loop.
const RotationElection = "secret-rotation"

// Config are the service's dependencies.
type Config struct {
	Store     *store.Store // the service's namespace (Prefix)
	Client    *store.Client
	Certs     *certsvc.View // the node registry, read-only
	Audit     *audit.Log
	Seal      *seal.Keyring
	Metrics   prometheus.Registerer // nil: no metrics
	Log       *slog.Logger
	Now       func() time.Time
	ReplicaID string
	// TrustDomain names the control plane in audit events of automatic transitions; may be empty.
	TrustDomain string
	// Interval is how often the elected replica retires versions, runs scheduled rotations and
	// re-evaluates promotions. Default DefaultInterval.
	Interval time.Duration
	// Heartbeat is the idle interval after which WatchSecrets repeats the last snapshot.
	Heartbeat time.Duration
	// ReplayWindow is the total width of the envelope's timestamp window (±half); a node whose clock
	// skew exceeds half of it is flagged. Default DefaultReplayWindow.
	ReplayWindow time.Duration
}

// Service implements warden.secret.v1.SecretService.
type Service struct {
	secretv1.UnsafeSecretServiceServer
	cfg Config
	log *slog.Logger
	// secrets mirrors secrets/ (metadata and sealed values); acks mirrors acks/.
	secrets *mirror.Mirror
	acks    *mirror.Mirror
	// ackWrites commits a fleet's acknowledgements together.
	ackWrites *store.Batcher
	// records and ackRecs decode once per change what every snapshot build and every promotion check
	// reads (read-only).
	records *mirror.Decoded[secretRecord]
	ackRecs *mirror.Decoded[ackRecord]
	hub     *fanout.Hub[[]*secretv1.NodeSecret]
	values  valueCache
	// builtin is closed once this replica's mirror holds "wa-secret", which the API promises exists
	// from the first start: handlers wait for it rather than answer without it.
	builtin chan struct{}
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Client == nil || cfg.Certs == nil || cfg.Audit == nil || cfg.Seal == nil || cfg.Log == nil {
		return nil, errors.New("secretsvc: Store, Client, Certs, Audit, Seal and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.ReplayWindow <= 0 {
		cfg.ReplayWindow = DefaultReplayWindow
	}
	s := &Service{
		builtin: make(chan struct{}),
		cfg:     cfg,
		log:     cfg.Log,
		secrets: mirror.New(cfg.Store, prefSecrets, cfg.Log.With("component", "secret-mirror")),
		acks:    mirror.New(cfg.Store, prefAcks, cfg.Log.With("component", "ack-mirror")),
		values:  valueCache{m: map[string]cachedValue{}},
	}
	s.ackWrites = cfg.Store.Batcher(0)
	s.records = mirror.NewDecoded(decode[secretRecord])
	s.ackRecs = mirror.NewDecoded(decode[ackRecord])
	s.hub = fanout.New(s.buildSnapshot, fanout.Options{Name: "secrets"})
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(newCollector(s)); err != nil {
			return nil, fmt.Errorf("secretsvc: register metrics: %w", err)
		}
	}
	return s, nil
}

// Register adds the service to s.
func (s *Service) Register(r grpc.ServiceRegistrar) { secretv1.RegisterSecretServiceServer(r, s) }

// Run does the background work until ctx is done: the mirrors, the snapshot hub, the built-in secret
// and, on the elected replica, the rotation loop.
func (s *Service) Run(ctx context.Context) error {
	g := rungroup.New(ctx)
	g.Go("secret mirror", s.secrets.Run)
	g.Go("ack mirror", s.acks.Run)
	g.Go("snapshot hub", s.hub.Run)
	g.Go("follow secrets", func(ctx context.Context) error { s.hub.FollowAll(ctx, s.secrets); return nil })
	g.Go("follow node registry", func(ctx context.Context) error { certsvc.FollowRegistry(ctx, s.cfg.Certs, s.hub); return nil })
	g.Go("value cache", func(ctx context.Context) error { s.pruneValues(ctx); return nil })
	g.Go("built-in secret", func(ctx context.Context) error { s.ensureBuiltin(ctx); <-ctx.Done(); return nil })
	g.Go("rotation loop", func(ctx context.Context) error {
		return s.cfg.Client.RunElected(ctx, RotationElection, s.cfg.ReplicaID, s.rotationLoop)
	})
	return g.Wait()
}

// ensureBuiltin creates "wa-secret" unless it exists, retrying while etcd is unavailable. Replicas
// starting together race on MustNotExist; the losers see ErrConflict and are done.
func (s *Service) ensureBuiltin(ctx context.Context) {
	b := backoff.Default()
	for {
		err := s.createBuiltin(ctx)
		if err == nil || errors.Is(err, store.ErrConflict) {
			for {
				changed := s.secrets.Changed()
				if _, ok := s.secrets.Get(keyMeta(BuiltinName)); ok {
					close(s.builtin)
					return
				}
				select {
				case <-changed:
				case <-ctx.Done():
					return
				}
			}
		}
		s.log.Warn("create the built-in secret; retrying", "secret", BuiltinName, "err", err)
		if backoff.Sleep(ctx, b.Next()) != nil {
			return
		}
	}
}

func (s *Service) createBuiltin(ctx context.Context) error {
	if _, ok := s.secrets.Get(keyMeta(BuiltinName)); ok {
		return nil
	}
	now := s.cfg.Now()
	rec := secretRecord{
		Name: BuiltinName, Type: typeWASecret, GracePeriod: DefaultGracePeriod, RotationTimeout: DefaultRotationTimeout,
		CreatedAt: now,
	}
	value, err := generateValue()
	if err != nil {
		return err
	}
	ops, err := s.newSecretOps(&rec, value, false, now)
	if err != nil {
		return err
	}
	ops = append(ops, s.cfg.Audit.Op(s.systemContext(ctx), audit.Event{
		Target: target(BuiltinName), Outcome: audit.Success, Reason: "built-in secret created at first start",
		Details: map[string]string{"version": "1"},
	}))
	if _, err := s.cfg.Store.Txn(ctx, []store.Cond{store.MustNotExist(keyMeta(BuiltinName))}, ops); err != nil {
		return fmt.Errorf("create %s: %w", BuiltinName, err)
	}
	s.log.Info("created the built-in secret", "secret", BuiltinName)
	return nil
}

// rotationLoop runs on the elected replica until ctx is done.
func (s *Service) rotationLoop(ctx context.Context) error {
	if err := s.waitReady(ctx); err != nil {
		return nil
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	s.tick(ctx)
	acked := s.acks.Changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.tick(ctx)
		case <-acked:
			// Acknowledgements arrive from every node at once after a rotation step: one evaluation per
			// burst, on this (elected) replica, instead of one per acknowledgement on every replica,
			// which made a fleet's acks quadratic.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(ackCoalesce):
			}
			acked = s.acks.Changed()
			s.promoteReady(ctx)
		}
	}
}

// ackCoalesce is how long the rotation loop lets a burst of acknowledgements gather.
const ackCoalesce = 50 * time.Millisecond

// waitReady blocks until both mirrors hold the current state.
func (s *Service) waitReady(ctx context.Context) error {
	if err := s.secrets.WaitReady(ctx); err != nil {
		return fmt.Errorf("secret mirror: %w", errors.Join(err, store.ErrUnavailable))
	}
	if err := s.acks.WaitReady(ctx); err != nil {
		return fmt.Errorf("ack mirror: %w", errors.Join(err, store.ErrUnavailable))
	}
	select {
	case <-s.builtin:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("built-in secret %s: %w", BuiltinName, errors.Join(ctx.Err(), store.ErrUnavailable))
	}
}

// valueCache holds unsealed values by key and revision, so building a snapshot per node and change does
// not open every sealed value again. Values under a key never change (a version's value is written
// once), so the revision only guards against a key deleted and recreated.
type valueCache struct {
	mu sync.Mutex
	m  map[string]cachedValue
}

type cachedValue struct {
	rev int64
	val []byte
}

// value returns the plaintext of a sealed value kv.
func (s *Service) value(kv store.KV) ([]byte, error) {
	s.values.mu.Lock()
	c, ok := s.values.m[kv.Key]
	s.values.mu.Unlock()
	if ok && c.rev == kv.ModRevision {
		return c.val, nil
	}
	val, err := s.cfg.Seal.Open(kv.Value, aad(kv.Key))
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", kv.Key, err)
	}
	s.values.mu.Lock()
	s.values.m[kv.Key] = cachedValue{rev: kv.ModRevision, val: val}
	s.values.mu.Unlock()
	return val, nil
}

// pruneValues forgets cached values whose key changed or disappeared, after every mirror change.
func (s *Service) pruneValues(ctx context.Context) {
	for {
		ch := s.secrets.Changed()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		s.values.mu.Lock()
		for k, c := range s.values.m {
			// Not cleared: snapshots handed to streams may still share the bytes.
			if kv, ok := s.secrets.Get(k); !ok || kv.ModRevision != c.rev {
				delete(s.values.m, k)
			}
		}
		s.values.mu.Unlock()
	}
}
