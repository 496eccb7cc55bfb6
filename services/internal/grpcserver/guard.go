package grpcserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/authz"
)

// guard is the security part of the chain: authentication, authorisation, limits, error mapping.
type guard struct {
	auth    *authn.Authenticator
	denials DenialRecorder
	log     *slog.Logger
	limits  *limiter
	streams *prometheus.GaugeVec
}

const (
	healthPrefix     = "/grpc.health.v1.Health/"
	reflectionPrefix = "/grpc.reflection."
)

func (g *guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, healthPrefix) {
		return handler(ctx, req)
	}
	c, err := g.admit(ctx, info.FullMethod, req)
	if err != nil {
		return nil, apierr.ToStatus(ctx, g.log, info.FullMethod, err)
	}
	ctx = authn.WithCaller(ctx, c)
	resp, err := handler(ctx, req)
	return resp, apierr.ToStatus(ctx, g.log, info.FullMethod, err)
}

func (g *guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	if strings.HasPrefix(info.FullMethod, healthPrefix) {
		return handler(srv, ss)
	}
	c, err := g.authenticate(ctx, info.FullMethod)
	if err != nil {
		return apierr.ToStatus(ctx, g.log, info.FullMethod, err)
	}
	release, err := g.limits.openStream(c)
	if err != nil {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(RefusedByTrailer, "stream-limit"))
		return apierr.ToStatus(ctx, g.log, info.FullMethod, err)
	}
	defer release()
	open := g.streams.WithLabelValues(string(c.Role), info.FullMethod)
	open.Inc()
	defer open.Dec()
	ws := &authorizingStream{ServerStream: ss, ctx: authn.WithCaller(ctx, c), g: g, caller: c, method: info.FullMethod}
	if strings.HasPrefix(info.FullMethod, reflectionPrefix) {
		ws.reflection = true
	}
	err = handler(srv, ws)
	return apierr.ToStatus(ws.ctx, g.log, info.FullMethod, err)
}

func (g *guard) authenticate(ctx context.Context, method string) (authn.Caller, error) {
	c, err := g.auth.Authenticate(ctx)
	if err != nil {
		g.deny(ctx, c, method, err)
		return c, err
	}
	if !g.limits.allow(c) {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(RefusedByTrailer, "rate-limit"))
		return c, fmt.Errorf("%w: request rate limit for %s", apierr.ErrExhausted, c)
	}
	return c, nil
}

func (g *guard) admit(ctx context.Context, method string, req any) (authn.Caller, error) {
	c, err := g.authenticate(ctx, method)
	if err != nil {
		return c, err
	}
	if err := authz.Authorize(c, method, req); err != nil {
		g.deny(ctx, c, method, err)
		return c, err
	}
	return c, nil
}

// RefusedByTrailer is set on every call the guard refuses, so a client (and the authorisation matrix
// test) can tell a refusal by the control plane's gate from an error of the handler behind it.
const RefusedByTrailer = "warden-refused-by"

func (g *guard) deny(ctx context.Context, c authn.Caller, method string, reason error) {
	_ = grpc.SetTrailer(ctx, metadata.Pairs(RefusedByTrailer, "auth"))
	if g.denials != nil {
		g.denials.RecordDenied(ctx, c, method, reason)
	}
}

// authorizingStream authorises a stream on its first message, since *Self rules need the request.
type authorizingStream struct {
	grpc.ServerStream
	ctx        context.Context
	g          *guard
	caller     authn.Caller
	method     string
	authorized bool
	reflection bool
}

func (s *authorizingStream) Context() context.Context { return s.ctx }

func (s *authorizingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.reflection {
		if s.caller.Method == authn.MethodNone && !anonymousReflectionAllowed(m) {
			err := fmt.Errorf("%w: reflection needs a client certificate or a bearer token (only the health service is described anonymously)", authz.ErrUnauthenticated)
			s.g.deny(s.ctx, s.caller, s.method, err)
			return err
		}
		return nil
	}
	if s.authorized {
		return nil
	}
	if err := authz.Authorize(s.caller, s.method, m); err != nil {
		s.g.deny(s.ctx, s.caller, s.method, err)
		return err
	}
	s.authorized = true
	return nil
}

// limiter holds per-identity request rates and stream counts.
type limiter struct {
	cfg     Limits
	mu      sync.Mutex
	rates   map[string]*rate.Limiter
	streams map[string]int
}

func newLimiter(cfg Limits) *limiter {
	return &limiter{cfg: cfg, rates: map[string]*rate.Limiter{}, streams: map[string]int{}}
}

// key groups anonymous callers by source IP, so one host cannot dodge the limit with new ports.
func key(c authn.Caller) string {
	if c.Method != authn.MethodNone {
		return c.String()
	}
	host, _, err := net.SplitHostPort(c.Peer)
	if err != nil {
		return c.Peer
	}
	return "anonymous@" + host
}

func (l *limiter) allow(c authn.Caller) bool {
	k := key(c)
	l.mu.Lock()
	r, ok := l.rates[k]
	if !ok {
		// Bound the map: a flood of distinct anonymous sources must not grow it forever.
		if len(l.rates) > 100_000 {
			clear(l.rates)
		}
		r = rate.NewLimiter(rate.Limit(l.cfg.RequestsPerSecond), l.cfg.Burst)
		l.rates[k] = r
	}
	l.mu.Unlock()
	return r.Allow()
}

func (l *limiter) openStream(c authn.Caller) (func(), error) {
	k := key(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams[k] >= l.cfg.MaxStreamsPerIdentity {
		return nil, fmt.Errorf("%w: %s already has %d open streams", apierr.ErrExhausted, c, l.streams[k])
	}
	l.streams[k]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.streams[k]--; l.streams[k] <= 0 {
			delete(l.streams, k)
		}
	}, nil
}
