// Package front implements the agent's optional fronts, which enforce the pushed policy in front of the
// apps: the Webapp HTTPS front (TLS profile, Web Admin headers, zone allowlist, reverse proxy), the
// Coreapp communication-service front (mTLS, Webapp identities only, TCP proxy) and the Coreapp control
// endpoint (mTLS, Coreapp identities only, a ping protocol the mesh probes use).
//
// Every front reads the agent's live state on each handshake and request, so new certificates, a new
// TLS profile or new allowlists take effect at once without a restart and without dropping
// established connections.
//
// Allowlists: an endpoint admits only addresses in the networks of the zones the policy lets reach it.
// An endpoint without networks admits nobody; a policy without any networks therefore closes every
// front. That is the secure default, and the agent says so loudly (log and status) instead of opening
// up.
package front

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"sync/atomic"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/tlsprofile"
	"github.com/warden-sec/warden/services/internal/webheaders"
)

// shutdownGrace bounds how long a stopping front waits for requests in flight.
const shutdownGrace = 5 * time.Second

// WebappConfig configures the Webapp HTTPS front.
type WebappConfig struct {
	// Listener accepts client connections (plain TCP; the front does TLS).
	Listener net.Listener
	// Upstream is the local Webapp, http:// or https:// (verified against the Warden trust bundle).
	Upstream *url.URL
	State    *live.State
	Log      *slog.Logger
}

// Webapp is the Webapp HTTPS front.
type Webapp struct {
	cfg     WebappConfig
	proxy   *httputil.ReverseProxy
	handler http.Handler
	tlsBase *tls.Config
	cached  atomic.Pointer[cachedTLS]
}

// cachedTLS keeps the config built for one (credentials, policy) pair, so that handshakes share it
// (and its session ticket keys) until either changes.
type cachedTLS struct {
	creds  *live.Creds
	policy *live.Policy
	cfg    *tls.Config
}

// NewWebapp builds the front.
func NewWebapp(cfg WebappConfig) (*Webapp, error) {
	if cfg.Listener == nil || cfg.Upstream == nil || cfg.State == nil || cfg.Log == nil {
		return nil, errors.New("front: Listener, Upstream, State and Log are required")
	}
	if cfg.Upstream.Scheme != "http" && cfg.Upstream.Scheme != "https" {
		return nil, fmt.Errorf("front: upstream %q must be http:// or https://", cfg.Upstream)
	}
	w := &Webapp{cfg: cfg}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = w.upstreamTLS()
	w.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(cfg.Upstream)
			r.SetXForwarded()
			r.Out.Host = r.In.Host
		},
		Transport: transport,
		ErrorHandler: func(rw http.ResponseWriter, r *http.Request, err error) {
			cfg.Log.Warn("webapp upstream failed", "path", r.URL.Path, "err", err)
			http.Error(rw, "upstream unavailable", http.StatusBadGateway)
		},
	}
	w.handler = webheaders.Middleware(http.HandlerFunc(w.serve), w.headers, w.apiPrefix)
	w.tlsBase = &tls.Config{GetConfigForClient: w.configForClient}
	return w, nil
}

// Run serves until ctx is done, then shuts down gracefully.
func (w *Webapp) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           w.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(w.cfg.Log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(w.cfg.Listener, w.tlsBase)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("webapp front: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

func (w *Webapp) headers() map[string]string { return w.cfg.State.Policy().Headers }

func (w *Webapp) apiPrefix() string { return w.cfg.State.Policy().APIPrefix }

// configForClient serves the current HTTPS certificate with the current profile.
func (w *Webapp) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	creds, pol := w.cfg.State.Creds(), w.cfg.State.Policy()
	if c := w.cached.Load(); c != nil && c.creds == creds && c.policy == pol {
		return c.cfg, nil
	}
	cert := creds.Cert(certv1.CertKind_CERT_KIND_WEBAPP_HTTPS)
	if cert == nil {
		return nil, errors.New("no HTTPS certificate yet")
	}
	prof, err := tlsprofile.Get(pol.Profile)
	if err != nil {
		return nil, err
	}
	cfg, _ := prof.Apply(&tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2", "http/1.1"}})
	w.cached.Store(&cachedTLS{creds: creds, policy: pol, cfg: cfg})
	return cfg, nil
}

// serve enforces the allowlist of the endpoint the path belongs to, then proxies.
func (w *Webapp) serve(rw http.ResponseWriter, r *http.Request) {
	pol := w.cfg.State.Policy()
	ep := policyv1.Endpoint_ENDPOINT_WEBAPP_API
	if webheaders.IsAdminPath(r.URL.Path, pol.APIPrefix) {
		ep = policyv1.Endpoint_ENDPOINT_WEBAPP_ADMIN
	}
	addr := remoteAddr(r.RemoteAddr)
	if !pol.Allows(ep, addr) {
		w.cfg.Log.Info("refused by zone allowlist", "endpoint", ep, "remote", r.RemoteAddr, "path", r.URL.Path)
		http.Error(rw, "forbidden", http.StatusForbidden)
		return
	}
	w.proxy.ServeHTTP(rw, r)
}

// upstreamTLS verifies an https upstream against the Warden trust bundle: the local Webapp serves the
// certificate this agent wrote for it.
func (w *Webapp) upstreamTLS() *tls.Config {
	host := w.cfg.Upstream.Hostname()
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection against the live bundle
		VerifyConnection: func(cs tls.ConnectionState) error {
			creds := w.cfg.State.Creds()
			if creds == nil || creds.Roots == nil || len(cs.PeerCertificates) == 0 {
				return errors.New("upstream certificate cannot be verified: no trust bundle")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: creds.Roots, Intermediates: inter, DNSName: host})
			return err
		},
	}
}

// remoteAddr parses a "host:port" remote address; the zero Addr (never allowed) if it does not parse.
func remoteAddr(s string) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}
