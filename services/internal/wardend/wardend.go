package wardend

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/warden-sec/warden/services/internal/adminsvc"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/fanout"
	"github.com/warden-sec/warden/services/internal/grpcserver"
	"github.com/warden-sec/warden/services/internal/rungroup"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/ticketkeys"
)

// Hosted is a service wardend can host.
type Hosted interface {
	// Register adds the service's gRPC API to s.
	Register(s grpc.ServiceRegistrar)
	// Run does the service's background work (watches, fan-out, elected jobs) until ctx is done.
	Run(ctx context.Context) error
}

// Platform is what every service is built from.
type Platform struct {
	Config    *Config
	Log       *slog.Logger
	Client    *store.Client
	Audit     *audit.Log
	Seal      *seal.Keyring
	DevSeal   bool
	Authority *certsvc.Authority
	Certs     *certsvc.View
	Metrics   prometheus.Registerer
	ReplicaID string
	Health    func(service string, serving bool)
}

// Builder constructs one hosted service; wardend calls the builders of the services in --services.
type Builder struct {
	Name        string // as in --services
	ServiceName string // full gRPC service name, for health
	Build       func(p *Platform) (Hosted, error)
}

// Ready is called once wardend serves (tests and `make run` output use it).
type Ready func(p *Platform, addr string, admin AdminFiles)

// Run runs wardend until ctx is done or a component fails.
func Run(ctx context.Context, cfg Config, log *slog.Logger, builders []Builder, always []Builder, ready Ready) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	keys, devSeal, err := loadSealKeys(&cfg, log)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	// Besides the defaults: go_gc_heap_live_bytes (the heap the last GC found live), since RSS alone
	// mixes what the agents cost with the GC's headroom; go_gc_scan_stack_bytes (the stack the last GC
	// found in use) and go_gc_stack_starting_size_bytes, since goroutine stacks are a third of what a
	// subscribed agent costs and their allocated size (go_memstats_stack_inuse_bytes) is 2-3 times
	// what they use (10.6 KiB for 4.0 KiB per goroutine at 10,000 agents).
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/(heap/live|scan/stack|stack/starting-size):bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(fanout.Collectors()...)
	client, closeEtcd, err := openEtcd(ctx, &cfg, log, reg)
	if err != nil {
		return err
	}
	defer closeEtcd()

	replica := cfg.ReplicaID
	if replica == "" {
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(cfg.Listen)
		replica = host + ":" + port
	}
	certNS := client.Namespace(certsvc.Prefix)
	authority := certsvc.NewAuthority(certNS, keys, cfg.TrustDomain, time.Now)
	created, err := authority.Ensure(ctx)
	if err != nil {
		return err
	}
	if created {
		log.Info("first start: generated the root CA", "trust_domain", cfg.TrustDomain)
	}
	if err := authority.CheckTrustDomain(ctx); err != nil {
		return err
	}

	g := rungroup.New(ctx)
	view := certsvc.NewView(certNS, log.With("component", "certview"))
	g.Go("cert view", view.Run)
	if err := view.WaitReady(ctx); err != nil {
		return err
	}
	serving, err := newServingCert(ctx, authority, cfg.ServerNames, log)
	if err != nil {
		return err
	}
	admin := AdminFilesIn(cfg.DataDir)
	refreshAdmin := func(ctx context.Context) error {
		pool, bundle := view.TrustPool()
		wrote, err := ensureAdminFiles(ctx, authority, pool, view.IsRevoked, bundle, admin, cfg.AdminName, time.Now())
		if wrote {
			log.Info("wrote admin credentials", "dir", admin.Dir)
		}
		return err
	}
	if err := refreshAdmin(ctx); err != nil {
		return err
	}
	g.Go("serving certificate", func(ctx context.Context) error {
		return serving.Run(ctx, view, func(ctx context.Context) {
			// A CA rotation changes ca.crt and, once the old CA is retired, invalidates admin.crt; a
			// revocation may name admin.crt.
			if err := refreshAdmin(ctx); err != nil {
				log.Error("refreshing admin credentials after a CA change or a revocation", "err", err)
			}
		})
	})

	auditLog := audit.New(client, log.With("component", "audit"))
	tokens := adminsvc.NewTokenVerifier(client.Namespace(adminsvc.Prefix), log.With("component", "tokens"))
	g.Go("token verifier", tokens.Run)
	serverTLS := serving.tlsConfig(func() *x509.CertPool { p, _ := view.TrustPool(); return p }, view.IsRevoked)
	applyTicketKeys := func(k [][32]byte) {
		if len(k) > 0 {
			serverTLS.SetSessionTicketKeys(k)
		}
	}
	tickets := ticketkeys.New(ticketkeys.Config{Client: client, Seal: keys, ReplicaID: replica, Log: log.With("component", "ticketkeys")})
	// Loaded before serving, so that agents reconnecting to a restarted replica resume their sessions.
	stored, err := tickets.Ensure(ctx)
	if err != nil {
		return err
	}
	applyTicketKeys(stored)
	g.Go("session ticket keys", func(ctx context.Context) error { return tickets.Run(ctx, applyTicketKeys) })
	srv, err := grpcserver.New(grpcserver.Config{
		TLS: serverTLS,
		Auth: &authn.Authenticator{
			TrustDomain: cfg.TrustDomain,
			Revoked:     view,
			Tokens:      tokens,
		},
		Denials:  auditLog,
		Log:      log.With("component", "grpc"),
		Registry: reg,
		Limits:   grpcserver.Limits{RequestsPerSecond: cfg.RateLimit, Burst: cfg.RateBurst, MaxStreamsPerIdentity: cfg.MaxStreams},
	})
	if err != nil {
		return err
	}
	p := &Platform{
		Config: &cfg, Log: log, Client: client, Audit: auditLog, Seal: keys, DevSeal: devSeal,
		Authority: authority, Certs: view, Metrics: reg, ReplicaID: replica,
		Health: func(service string, serving bool) {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if serving {
				st = healthpb.HealthCheckResponse_SERVING
			}
			srv.Health.SetServingStatus(service, st)
		},
	}
	var hosted []string
	for _, b := range append(append([]Builder{}, always...), builders...) {
		if b.Name != "" && !cfg.Hosts(b.Name) {
			continue
		}
		h, err := b.Build(p)
		if err != nil {
			return fmt.Errorf("%s service: %w", b.ServiceName, err)
		}
		h.Register(srv.GRPC)
		g.Go(b.ServiceName, h.Run)
		hosted = append(hosted, b.ServiceName)
	}
	// Serving from the start (etcd answered a moment ago); the watcher flips it when etcd goes away.
	p.Health("", true)
	for _, name := range hosted {
		p.Health(name, true)
	}
	g.Go("etcd health", func(ctx context.Context) error {
		return watchEtcdHealth(ctx, client.Ping, etcdHealthEvery, hosted, p.Health, log)
	})

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	g.Go("grpc server", func(ctx context.Context) error { return srv.Serve(ctx, lis) })
	if cfg.MetricsListen != "" {
		mlis, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", cfg.MetricsListen, err)
		}
		g.Go("metrics server", func(ctx context.Context) error { return serveMetrics(ctx, mlis, reg, srv.Health, cfg.Pprof) })
	}
	log.Info("wardend serving", "listen", lis.Addr().String(), "services", strings.Join(hosted, ","), "replica", replica,
		"admin_dir", admin.Dir, "trust_domain", cfg.TrustDomain)
	if ready != nil {
		ready(p, lis.Addr().String(), admin)
	}
	err = g.Wait()
	log.Info("wardend stopped")
	return err
}

// etcdHealthEvery is the period of the etcd health probe.
const etcdHealthEvery = 2 * time.Second

// etcdDownAfter is how many probes in a row must fail before the replica reports NOT_SERVING. One slow
// read is not an outage: while 10,000 agents reconnect at once a linearizable read can miss its deadline
// with etcd up (it did in 3 of 4 such restarts), and a replica that then reports NOT_SERVING is taken out
// of rotation by its load balancer, pushing its agents onto the other replicas in the middle of the storm.
// A real outage is reported one probe later (the scale-out test's quorum-loss step: 7.1 → 7.9 s).
const etcdDownAfter = 2

// watchEtcdHealth keeps every hosted service's health in step with etcd reachability: a replica that
// cannot reach etcd reports NOT_SERVING so load balancers and agents move to another one.
func watchEtcdHealth(ctx context.Context, ping func(context.Context) error, every time.Duration, services []string, set func(string, bool), log *slog.Logger) error {
	serving, failed := true, 0
	for {
		err := ping(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			failed = 0
		} else {
			failed++
		}
		if now := failed < etcdDownAfter; now != serving {
			if now {
				log.Info("etcd reachable again: reporting SERVING")
			} else {
				log.Warn("etcd unreachable: reporting NOT_SERVING", "failed_probes", failed, "err", err)
			}
			set("", now)
			for _, s := range services {
				set(s, now)
			}
			serving = now
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// serveMetrics serves /metrics, /healthz and, when asked, pprof. /healthz answers from the gRPC health
// service's overall status rather than probing etcd itself, so an HTTP probe (Kubernetes' readiness
// probe cannot do TLS) and a gRPC one see the same replica: unready only after two failed etcd probes
// in a row, and from the start of a shutdown.
func serveMetrics(ctx context.Context, lis net.Listener, reg *prometheus.Registry, hs *health.Server, withPprof bool) error {
	mux := http.NewServeMux()
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		resp, err := hs.Check(r.Context(), &healthpb.HealthCheckRequest{})
		if st := resp.GetStatus(); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			http.Error(w, fmt.Sprintf("%s: etcd unreachable, or shutting down", st), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	hsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = hsrv.Shutdown(sctx)
	}()
	if err := hsrv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
