// Package policysvc implements warden.policy.v1.PolicyService: the versioned security policy (TLS
// profile, Web Admin headers, database SSL, network segregation), its validation and downgrade
// control, and its rendering for nodes.
//
// A node missing from the registry (certsvc.View) is rendered with the role of its identity (the
// caller's authn role, webapp or coreapp) and no zone, so that an agent gets its policy before or
// without a registry entry; once registered, the registry's role and zone apply.
package policysvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/fanout"
	"github.com/warden-sec/warden/services/internal/mirror"
	"github.com/warden-sec/warden/services/internal/store"
)

// Prefix is the service's etcd namespace. Layout (relative keys):
//
//	versions/<number, 20 digits>  PolicyVersion (protobuf), immutable; its ModRevision is the revision
//	                              at which it became current (it is written with the pointer)
//	current                       currentRecord: the number of the current version
//	acks/<node-id>                ackRecord: what the node last applied
const Prefix = "/warden/policy/"

const (
	keyCurrent   = "current"
	prefVersions = "versions/"
	prefAcks     = "acks/"
)

func keyVersion(n uint64) string { return fmt.Sprintf("%s%020d", prefVersions, n) }
func keyAck(node string) string  { return prefAcks + node }

type currentRecord struct {
	Number uint64 `json:"number"`
}

type ackRecord struct {
	Node         string    `json:"node"`
	Version      int64     `json:"version"`
	PolicyNumber uint64    `json:"policy_number"`
	Error        string    `json:"error,omitempty"`
	AckedAt      time.Time `json:"acked_at"`
}

// heartbeat keeps idle WatchPolicy streams alive so that dead ones are noticed.
const heartbeat = 30 * time.Second

// Config are the service's dependencies.
type Config struct {
	Store     *store.Store // the service's namespace (Prefix)
	Client    *store.Client
	Certs     *certsvc.View // the node registry, read-only
	Audit     *audit.Log
	Log       *slog.Logger
	Now       func() time.Time
	ReplicaID string
	// TrustDomain names the control plane in audit events of automatic changes.
	TrustDomain string
	// Metrics registers the rollout gauges; nil for none.
	Metrics prometheus.Registerer
}

// Service implements warden.policy.v1.PolicyService.
type Service struct {
	policyv1.UnsafePolicyServiceServer
	cfg Config

	cur  *mirror.Mirror // the current pointer
	acks *mirror.Mirror
	// ackWrites commits a fleet's acknowledgements together.
	ackWrites *store.Batcher
	curRecs   *mirror.Decoded[currentRecord]
	hub       *fanout.Hub[*policyv1.RenderedPolicy]
	ready     chan struct{} // closed once version 1 exists and the mirrors are loaded

	vmu      sync.Mutex
	versions map[uint64]*policyv1.PolicyVersion // immutable once stored

	rmu     sync.Mutex
	renders map[renderKey]*policyv1.RenderedPolicy
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Certs == nil || cfg.Audit == nil || cfg.Log == nil {
		return nil, errors.New("policysvc: Store, Certs, Audit and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{
		cfg:      cfg,
		cur:      mirror.New(cfg.Store, keyCurrent, cfg.Log.With("component", "policy-mirror")),
		acks:     mirror.New(cfg.Store, prefAcks, cfg.Log.With("component", "policy-acks")),
		ready:    make(chan struct{}),
		versions: map[uint64]*policyv1.PolicyVersion{},
		renders:  map[renderKey]*policyv1.RenderedPolicy{},
	}
	s.ackWrites = cfg.Store.Batcher(0)
	s.curRecs = mirror.NewDecoded(decodeCurrent)
	s.hub = fanout.New(s.build, fanout.Options{Name: "policy", GroupOf: nodeOfHubKey})
	if cfg.Metrics != nil {
		if err := s.registerMetrics(cfg.Metrics); err != nil {
			return nil, fmt.Errorf("policysvc: metrics: %w", err)
		}
	}
	return s, nil
}

// Register adds the service to s.
func (s *Service) Register(r grpc.ServiceRegistrar) { policyv1.RegisterPolicyServiceServer(r, s) }

// Run creates version 1 if there is none yet, then follows etcd and feeds WatchPolicy streams until
// ctx is done.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, m := range []*mirror.Mirror{s.cur, s.acks} {
		wg.Go(func() { _ = m.Run(ctx) })
	}
	for {
		err := s.ensureInitial(ctx)
		if err == nil {
			break
		}
		s.cfg.Log.Warn("cannot create policy version 1 yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	if s.cur.WaitReady(ctx) != nil || s.acks.WaitReady(ctx) != nil {
		return nil
	}
	close(s.ready)
	wg.Go(func() { s.hub.FollowAll(ctx, s.cur) })
	wg.Go(func() { certsvc.FollowRegistry(ctx, s.cfg.Certs, s.hub) })
	return s.hub.Run(ctx)
}

// waitReady holds handlers until Run has loaded the state.
func (s *Service) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("policy service starting: %w", errors.Join(ctx.Err(), store.ErrUnavailable))
	}
}

// ensureInitial stores version 1, the built-in defaults, unless some replica already did.
func (s *Service) ensureInitial(ctx context.Context) error {
	if _, err := s.cfg.Store.Get(ctx, keyCurrent); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	doc := defaultDocument()
	pv := &policyv1.PolicyVersion{
		Number: 1, Document: doc, Author: "wardend", Message: "built-in defaults",
		CreatedAt: timestamppb.New(s.cfg.Now()), Warnings: issuesPB(evaluate(doc, nil, nil).allWarnings()),
	}
	val, err := marshalVersion(pv)
	if err != nil {
		return err
	}
	cur, _ := json.Marshal(currentRecord{Number: 1})
	actx := audit.System(ctx, s.cfg.TrustDomain, s.cfg.ReplicaID)
	_, err = s.cfg.Store.Txn(ctx,
		[]store.Cond{store.MustNotExist(keyCurrent), store.MustNotExist(keyVersion(1))},
		[]store.Op{
			store.PutOp(keyVersion(1), val), store.PutOp(keyCurrent, cur),
			s.cfg.Audit.Op(actx, audit.Event{Target: "policy/versions/1", Outcome: audit.Success, Reason: "built-in defaults",
				Details: map[string]string{"number": "1", "author": "wardend"}}),
		})
	if errors.Is(err, store.ErrConflict) {
		return nil // another replica won the race
	}
	if err != nil {
		return fmt.Errorf("create policy version 1: %w", err)
	}
	s.cfg.Log.Info("created policy version 1 (built-in defaults)")
	return nil
}

func marshalVersion(pv *policyv1.PolicyVersion) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(pv)
	if err != nil {
		return nil, fmt.Errorf("marshal policy version %d: %w", pv.GetNumber(), err)
	}
	return b, nil
}

// readCurrent reads the current pointer from etcd (not the mirror: writers need its latest revision).
func (s *Service) readCurrent(ctx context.Context) (number uint64, modRev int64, err error) {
	kv, err := s.cfg.Store.Get(ctx, keyCurrent)
	if err != nil {
		return 0, 0, fmt.Errorf("read current policy: %w", err)
	}
	rec, err := decodeCurrent(kv)
	if err != nil {
		return 0, 0, err
	}
	return rec.Number, kv.ModRevision, nil
}

func decodeCurrent(kv store.KV) (currentRecord, error) {
	var rec currentRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return rec, fmt.Errorf("decode current policy pointer: %w", err)
	}
	return rec, nil
}

// currentFromMirror is the current number and the snapshot version it contributes. Every snapshot
// build reads it, so the pointer is decoded once per change.
func (s *Service) currentFromMirror() (uint64, int64, bool) {
	kv, ok := s.cur.Get(keyCurrent)
	if !ok {
		return 0, 0, false
	}
	rec, err := s.curRecs.Decode(kv)
	if err != nil {
		return 0, 0, false
	}
	return rec.Number, s.cur.Version(keyCurrent), true
}

// maxCachedVersions bounds the version cache; rendering needs only the current one and the history
// RPCs read what they page through.
const maxCachedVersions = 64

// version returns stored version n (revision filled in). The result is shared: do not modify it.
func (s *Service) version(ctx context.Context, n uint64) (*policyv1.PolicyVersion, error) {
	s.vmu.Lock()
	pv, ok := s.versions[n]
	s.vmu.Unlock()
	if ok {
		return pv, nil
	}
	kv, err := s.cfg.Store.Get(ctx, keyVersion(n))
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.NotFound(fmt.Sprintf("policy version %d", n))
	}
	if err != nil {
		return nil, fmt.Errorf("read policy version %d: %w", n, err)
	}
	pv, err = decodeVersion(kv)
	if err != nil {
		return nil, err
	}
	s.remember(pv)
	return pv, nil
}

func decodeVersion(kv store.KV) (*policyv1.PolicyVersion, error) {
	pv := &policyv1.PolicyVersion{}
	if err := proto.Unmarshal(kv.Value, pv); err != nil {
		return nil, fmt.Errorf("decode policy version %s: %w", kv.Key, err)
	}
	pv.Revision = kv.ModRevision
	return pv, nil
}

func (s *Service) remember(pv *policyv1.PolicyVersion) {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	if len(s.versions) >= maxCachedVersions {
		clear(s.versions)
	}
	s.versions[pv.GetNumber()] = pv
}

// roleOf is the registry's role of a node ("" when it is not registered).
func (s *Service) roleOf(node string) string {
	n, ok := s.cfg.Certs.Node(node)
	if !ok {
		return ""
	}
	return n.Role
}
