package certsvc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/store"
)

// Config are the CertService's dependencies.
type Config struct {
	Store     *store.Store // the cert namespace (Prefix)
	Client    *store.Client
	Authority *Authority
	View      *View
	Audit     *audit.Log
	Seal      *seal.Keyring
	Log       *slog.Logger
	Now       func() time.Time
	ReplicaID string
}

// Service implements warden.cert.v1.CertService.
type Service struct {
	certv1.UnimplementedCertServiceServer
	cfg Config
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Authority == nil || cfg.View == nil || cfg.Audit == nil || cfg.Seal == nil || cfg.Log == nil {
		return nil, errors.New("certsvc: Store, Authority, View, Audit, Seal and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg}, nil
}

// Register adds the service to s.
func (s *Service) Register(r grpc.ServiceRegistrar) { certv1.RegisterCertServiceServer(r, s) }

// Run does the background work until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
