// Package meshsvc implements warden.mesh.v1.MeshService: Multiconnect membership held by leases, the
// peer list pushed to every Coreapp, the who-sees-whom matrix with partition detection, and an
// optional master election.
package meshsvc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/fanout"
	"github.com/warden-sec/warden/services/internal/mirror"
	"github.com/warden-sec/warden/services/internal/store"
)

// DefaultHeartbeat is the idle interval after which WatchPeers repeats the last snapshot.
const DefaultHeartbeat = 30 * time.Second

// Config are the service's dependencies.
type Config struct {
	Store     *store.Store // the service's namespace (Prefix)
	Client    *store.Client
	Certs     *certsvc.View // the node registry, read-only
	Audit     *audit.Log
	Log       *slog.Logger
	Now       func() time.Time
	ReplicaID string
	Heartbeat time.Duration // default DefaultHeartbeat
}

// Service implements warden.mesh.v1.MeshService.
type Service struct {
	meshv1.UnsafeMeshServiceServer
	cfg    Config
	mirror *mirror.Mirror
	hub    *fanout.Hub[*meshv1.WatchPeersResponse]
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Certs == nil || cfg.Audit == nil || cfg.Log == nil {
		return nil, errors.New("meshsvc: Store, Certs, Audit and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	s := &Service{cfg: cfg, mirror: mirror.New(cfg.Store, "", cfg.Log.With("component", "mesh-mirror"))}
	s.hub = fanout.New(s.buildPeers, fanout.Options{Name: "peers"})
	return s, nil
}

// Register adds the service to s.
func (s *Service) Register(r grpc.ServiceRegistrar) { meshv1.RegisterMeshServiceServer(r, s) }

// Run follows the mesh namespace and feeds the peer streams until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{}, 2)
	go func() { _ = s.mirror.Run(ctx); done <- struct{}{} }()
	go func() { s.hub.FollowAll(ctx, s.mirror); done <- struct{}{} }()
	err := s.hub.Run(ctx)
	cancel()
	<-done
	<-done
	return err
}
