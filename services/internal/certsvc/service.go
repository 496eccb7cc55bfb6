package certsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/fanout"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/store"
)

// Defaults of the tunable Config fields.
const (
	DefaultIdentityLifetime = 24 * time.Hour
	DefaultServerLifetime   = 30 * 24 * time.Hour
	DefaultRenewFraction    = 2.0 / 3.0
	DefaultCRLValidity      = 24 * time.Hour
	DefaultCRLCheck         = time.Minute
	DefaultHeartbeat        = 30 * time.Second
	DefaultRetention        = 7 * 24 * time.Hour
	DefaultTidyEvery        = time.Hour
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
	// Metrics receives warden_cert_expiry_seconds; nil registers nothing.
	Metrics prometheus.Registerer

	// IdentityLifetime is the life of node identity certificates (default 24h).
	IdentityLifetime time.Duration
	// ServerLifetime is the life of every other kind (default 30 days).
	ServerLifetime time.Duration
	// RenewFraction of a certificate's life after which its holder renews (default 2/3); each
	// certificate gets up to 5% of its life of jitter around it.
	RenewFraction float64
	// CRLValidity is the distance between a CRL's this_update and next_update (default 24h); the CRL is
	// re-signed once half of it has passed.
	CRLValidity time.Duration
	// CRLCheck is how often the elected replica checks whether the CRL needs re-signing (default 1m).
	CRLCheck time.Duration
	// Heartbeat is the idle interval after which WatchCredentials repeats the last snapshot (default 30s).
	Heartbeat time.Duration
	// Retention is how long the records of an expired certificate are kept (GetCertificate and
	// ListCertificates still show it) before the elected replica removes them (default 7 days); it
	// checks every TidyEvery (default 1h).
	Retention time.Duration
	TidyEvery time.Duration
	// tidyMax bounds one tidy run (default defaultTidyMax); tests lower it.
	tidyMax int
}

// Service implements warden.cert.v1.CertService.
type Service struct {
	certv1.UnsafeCertServiceServer
	cfg Config
	st  *store.Store
	hub *fanout.Hub[*certv1.WatchCredentialsResponse]
	// ackWrites commits a fleet's acknowledgements together; issueWrites the certificates of
	// concurrent IssueCertificate calls (a batch whose condition fails is retried request by request).
	ackWrites   *store.Batcher
	issueWrites *store.Batcher

	// crlMu serialises this replica's CRL re-signs; replicas are kept apart by the CRL's revision compare.
	crlMu sync.Mutex
	// pruned counts the certificates tidy removed.
	pruned prometheus.Counter
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Client == nil || cfg.Authority == nil || cfg.View == nil || cfg.Audit == nil || cfg.Seal == nil || cfg.Log == nil {
		return nil, errors.New("certsvc: Store, Client, Authority, View, Audit, Seal and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReplicaID == "" {
		cfg.ReplicaID = "certsvc"
	}
	durations := []struct {
		d   *time.Duration
		def time.Duration
		min time.Duration
		nm  string
	}{
		{&cfg.IdentityLifetime, DefaultIdentityLifetime, 10 * time.Minute, "IdentityLifetime"},
		{&cfg.ServerLifetime, DefaultServerLifetime, 10 * time.Minute, "ServerLifetime"},
		{&cfg.CRLValidity, DefaultCRLValidity, 10 * time.Minute, "CRLValidity"},
		{&cfg.CRLCheck, DefaultCRLCheck, 10 * time.Millisecond, "CRLCheck"},
		{&cfg.Heartbeat, DefaultHeartbeat, 10 * time.Millisecond, "Heartbeat"},
		{&cfg.Retention, DefaultRetention, time.Hour, "Retention"},
		{&cfg.TidyEvery, DefaultTidyEvery, 10 * time.Millisecond, "TidyEvery"},
	}
	for _, d := range durations {
		if *d.d == 0 {
			*d.d = d.def
		}
		if *d.d < d.min {
			return nil, fmt.Errorf("certsvc: %s %s is shorter than %s", d.nm, *d.d, d.min)
		}
	}
	if cfg.tidyMax == 0 {
		cfg.tidyMax = defaultTidyMax
	}
	if cfg.RenewFraction == 0 {
		cfg.RenewFraction = DefaultRenewFraction
	}
	// Jitter is ±5% of the life, so the fraction must leave room for it on both sides.
	if cfg.RenewFraction < 0.1 || cfg.RenewFraction > 0.9 {
		return nil, fmt.Errorf("certsvc: RenewFraction %v is outside [0.1, 0.9]", cfg.RenewFraction)
	}
	s := &Service{cfg: cfg, st: cfg.Store, ackWrites: cfg.Store.Batcher(0), issueWrites: cfg.Store.Batcher(0),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warden_cert_records_pruned_total",
			Help: "Records of expired certificates this replica removed once Retention had passed since their expiry.",
		})}
	s.hub = fanout.New(s.buildSnapshot, fanout.Options{Name: "credentials"})
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{newExpiryCollector(cfg.View.Mirror(), cfg.Now), newPhaseCollector(cfg.View.Mirror()), s.pruned} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("certsvc: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// CRLElection is the etcd election of the replica that keeps the CRL fresh.
const CRLElection = "cert-crl"

// Register adds the service to s.
func (s *Service) Register(r grpc.ServiceRegistrar) { certv1.RegisterCertServiceServer(r, s) }

// routeCredentials names the node whose credentials snapshot a changed key feeds, or all.
func routeCredentials(key string) (string, bool) {
	for _, p := range []string{prefNodes, prefCurrent, prefExt} {
		if rest, ok := strings.CutPrefix(key, p); ok {
			node, _, _ := strings.Cut(rest, "/")
			if node == allWebapps {
				return "", true
			}
			return node, false
		}
	}
	return "", true // CA state, CRL, DB CA, webhook bundles: in every snapshot
}

// Run keeps the credential streams fed and, on the elected replica, the CRL fresh and the records of
// long-expired certificates pruned, until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	if err := s.cfg.View.WaitReady(ctx); err != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	// Acks and tokens change often and feed no snapshot: only the snapshot's inputs wake the hub, and a
	// node's own inputs rebuild only its snapshot.
	wg.Go(func() {
		s.hub.FollowChanges(ctx, s.cfg.View.Mirror(), []string{prefNodes, prefCurrent, keyCAState, keyCRL, keyDBCA, prefExt, prefWebhook}, routeCredentials)
	})
	wg.Go(func() { _ = s.hub.Run(ctx) })
	err := s.cfg.Client.RunElected(ctx, CRLElection, s.cfg.ReplicaID, s.crlJob)
	cancel()
	wg.Wait()
	return err
}
