// Package adminsvc implements warden.admin.v1.AdminService.
package adminsvc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/store"
)

// Prefix is the service's etcd namespace.
const Prefix = "/warden/admin/"

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

// Service implements warden.admin.v1.AdminService.
type Service struct {
	adminv1.UnimplementedAdminServiceServer
	cfg Config
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Certs == nil || cfg.Audit == nil || cfg.Log == nil {
		return nil, errors.New("adminsvc: Store, Certs, Audit and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg}, nil
}

// Register adds the service to s.
func (s *Service) Register(r grpc.ServiceRegistrar) { adminv1.RegisterAdminServiceServer(r, s) }

// Run does the background work until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
