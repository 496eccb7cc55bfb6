// Package policysvc implements warden.policy.v1.PolicyService.
package policysvc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/store"
)

// Prefix is the service's etcd namespace.
const Prefix = "/warden/policy/"

// Config are the service's dependencies.
type Config struct {
	Store     *store.Store // the service's namespace (Prefix)
	Client    *store.Client
	Certs     *certsvc.View // the node registry, read-only
	Audit     *audit.Log
	Log       *slog.Logger
	Now       func() time.Time
	ReplicaID string
}

// Service implements warden.policy.v1.PolicyService.
type Service struct {
	policyv1.UnimplementedPolicyServiceServer
	cfg Config
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Certs == nil || cfg.Audit == nil || cfg.Log == nil {
		return nil, errors.New("policysvc: Store, Certs, Audit and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg}, nil
}

// Register adds the service to s.
func (s *Service) Register(r grpc.ServiceRegistrar) { policyv1.RegisterPolicyServiceServer(r, s) }

// Run does the background work until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
