// Package grpcserver builds wardend's gRPC server: TLS, limits, the interceptor chain, health and
// reflection. Services register themselves on Server.GRPC.
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/warden-sec/warden/services/internal/authn"
)

// writeBufferSize is the per-connection write buffer (see New).
const writeBufferSize = 8 << 10

// DenialRecorder is told about every refused call (the audit log implements it).
type DenialRecorder interface {
	RecordDenied(ctx context.Context, c authn.Caller, method string, reason error)
}

// Config are the server's dependencies and limits.
type Config struct {
	TLS       *tls.Config
	Auth      *authn.Authenticator
	Denials   DenialRecorder // optional
	Log       *slog.Logger
	Registry  prometheus.Registerer // optional
	Limits    Limits
	GraceStop time.Duration // how long unary calls get to finish on shutdown; default 5s
}

// Limits protect the server from one misbehaving client.
type Limits struct {
	MaxRecvMsgBytes       int     // default 4 MiB
	RequestsPerSecond     float64 // per identity (or peer IP when anonymous); default 200
	Burst                 int     // default 1000
	MaxStreamsPerIdentity int     // default 32
}

func (l *Limits) fill() {
	if l.MaxRecvMsgBytes == 0 {
		l.MaxRecvMsgBytes = 4 << 20
	}
	if l.RequestsPerSecond == 0 {
		l.RequestsPerSecond = 200
	}
	if l.Burst == 0 {
		l.Burst = 1000
	}
	if l.MaxStreamsPerIdentity == 0 {
		l.MaxStreamsPerIdentity = 32
	}
}

// Server is a configured gRPC server.
type Server struct {
	GRPC   *grpc.Server
	Health *health.Server
	log    *slog.Logger
	grace  time.Duration
	// unary and streams count the handlers running. Serve closes the connections as soon as no unary
	// call is left, instead of waiting for every client to acknowledge the drain and for every stream
	// to end: the streams only push what etcd already holds (an agent re-subscribes after a restart in
	// any case), while a unary call may be writing.
	unary, streams *atomic.Int64
}

// New builds the server. Register services on s.GRPC, then call SetServing for each.
func New(cfg Config) (*Server, error) {
	if cfg.TLS == nil || cfg.Auth == nil || cfg.Log == nil {
		return nil, errors.New("grpcserver: TLS, Auth and Log are required")
	}
	cfg.Limits.fill()
	if cfg.GraceStop == 0 {
		cfg.GraceStop = 5 * time.Second
	}
	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(metrics); err != nil {
			return nil, fmt.Errorf("register grpc metrics: %w", err)
		}
	}
	g := &guard{
		auth:    cfg.Auth,
		denials: cfg.Denials,
		log:     cfg.Log,
		limits:  newLimiter(cfg.Limits),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warden_open_streams",
			Help: "Open server streams by caller role and method (agents connected, by role).",
		}, []string{"role", "method"}),
	}
	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warden_tls_handshakes_total",
		Help: "Completed TLS handshakes, by whether a session was resumed (agents reconnecting after a restart or failover should resume).",
	}, []string{"resumed"})
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(g.streams); err != nil {
			return nil, fmt.Errorf("register stream metrics: %w", err)
		}
		if err := cfg.Registry.Register(handshakes); err != nil {
			return nil, fmt.Errorf("register handshake metrics: %w", err)
		}
	}
	calls := callLog{log: cfg.Log}
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		cfg.Log.ErrorContext(ctx, "panic in handler", "panic", p)
		return status.Error(codes.Internal, "internal error")
	})
	// Order (outermost first): metrics → logging → recovery → authentication (skipped for health) →
	// authorisation → rate and stream limits → error mapping. Metrics and logs see every call, refused
	// ones included; nothing past authentication runs for a caller that is not who it claims.
	unary, streams := new(atomic.Int64), new(atomic.Int64)
	gs := grpc.NewServer(
		grpc.Creds(authn.ServerCredentials(cfg.TLS, func(st tls.ConnectionState) {
			handshakes.WithLabelValues(strconv.FormatBool(st.DidResume)).Inc()
		})),
		grpc.MaxRecvMsgSize(cfg.Limits.MaxRecvMsgBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ConnectionTimeout(10*time.Second),
		// Every agent holds one mostly idle connection, so per-connection buffers are most of what a
		// subscribed agent costs: grpc's 32 KiB read buffer is dropped (TLS already buffers each
		// record) and the write buffer is borrowed from a pool only while a flush is under way.
		// A fan-out or an acknowledgement burst has every connection's writer holding one at the same
		// moment (it yields with the buffer in hand when less than 1 KB is queued), so the buffer is
		// 8 KiB, not grpc's 32: a snapshot or reply fits, larger messages go out in 8 KiB writes.
		grpc.ReadBufferSize(0),
		grpc.WriteBufferSize(writeBufferSize),
		grpc.SharedWriteBuffer(true),
		grpc.ChainUnaryInterceptor(
			func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				unary.Add(1)
				defer unary.Add(-1)
				return handler(ctx, req)
			},
			metrics.UnaryServerInterceptor(),
			calls.unary,
			recovery.UnaryServerInterceptor(recoverOpt),
			g.unary,
		),
		grpc.ChainStreamInterceptor(
			func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
				streams.Add(1)
				defer streams.Add(-1)
				return handler(srv, ss)
			},
			metrics.StreamServerInterceptor(),
			calls.stream,
			recovery.StreamServerInterceptor(recoverOpt),
			g.stream,
		),
	)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	if err := registerReflection(gs); err != nil {
		return nil, err
	}
	metrics.InitializeMetrics(gs)
	return &Server{GRPC: gs, Health: hs, log: cfg.Log, grace: cfg.GraceStop, unary: unary, streams: streams}, nil
}

// Serve serves on lis until ctx is done, then stops gracefully: no new calls are accepted, unary calls
// under way get GraceStop to finish. Once none is left the connections are closed, with any stream
// still open (one blocked sending to an agent that stopped reading, or one that subscribed as the
// hubs stopped), without waiting for each client to acknowledge the drain, which with thousands of
// agents takes seconds.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.GRPC.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("grpc serve: %w", err)
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(done) }()
	deadline := time.After(s.grace)
	idle := time.NewTicker(20 * time.Millisecond)
	defer idle.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-idle.C:
			if s.unary.Load() == 0 {
				s.GRPC.Stop()
				<-done
				return nil
			}
		case <-deadline:
			s.log.Warn("graceful stop timed out; closing the remaining calls", "unary", s.unary.Load(), "streams", s.streams.Load())
			s.GRPC.Stop()
			<-done
			return nil
		}
	}
}
