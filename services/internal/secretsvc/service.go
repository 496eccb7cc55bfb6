// Package secretsvc implements warden.secret.v1.SecretService.
package secretsvc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/store"
)

// Prefix is the service's etcd namespace.
const Prefix = "/warden/secret/"

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

// Service implements warden.secret.v1.SecretService.
type Service struct {
	secretv1.UnimplementedSecretServiceServer
	cfg Config
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Certs == nil || cfg.Audit == nil || cfg.Log == nil {
		return nil, errors.New("secretsvc: Store, Certs, Audit and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg}, nil
}

// Register adds the service to s.
func (s *Service) Register(r grpc.ServiceRegistrar) { secretv1.RegisterSecretServiceServer(r, s) }

// Run does the background work until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
