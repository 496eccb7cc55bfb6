// Package etcdembed runs the single-member etcd that wardend starts when it is
// given no external etcd endpoints.
//
// Layout of DataDir/etcd (0700):
//
//	data/            etcd's own data directory (WAL and bbolt)
//	pki/             private CA, server and client certificates (keys 0600)
//	endpoints.json   the loopback ports chosen at first start
//
// The server listens on 127.0.0.1 only, on ports picked free at first start,
// and requires TLS client certificates issued by its private CA on both the
// client and the peer listener: loopback is shared by every local user, so the
// client key file, not the port, is what grants access.
package etcdembed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

const (
	loopback   = "127.0.0.1"
	memberName = "warden"

	// readyTimeout bounds the wait for the member to elect itself and serve.
	// It is generous because replaying a large WAL on a small machine is slow;
	// the caller's ctx can cut it shorter.
	readyTimeout = 60 * time.Second
	// bindAttempts covers the window between finding a free port and etcd
	// binding it, during which another process may take it.
	bindAttempts = 3

	quotaBackendBytes = 2 << 30
	// compactionRetention keeps the last 10000 revisions: enough for a
	// watcher that was briefly disconnected to resume without a relist, small
	// enough that the backend stays well under its quota.
	compactionRetention = "10000"
	dialTimeout         = 5 * time.Second
)

// Config configures the embedded etcd.
type Config struct {
	// DataDir is wardend's data directory; etcd keeps everything in DataDir/etcd.
	DataDir string
	// Log receives etcd's errors and the server's lifecycle messages.
	Log *slog.Logger
}

// Server is a running embedded etcd.
type Server struct {
	etcd      *embed.Etcd
	clientURL string
	tls       *tls.Config
	log       *slog.Logger
	closing   *atomic.Bool
	closeOnce sync.Once
}

// Start starts etcd in cfg.DataDir/etcd and returns once it serves client
// requests, or fails after at most a minute (or when ctx is done). The same
// DataDir restarts the same member with its data.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("etcdembed: DataDir is required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "etcd")

	dir := filepath.Join(cfg.DataDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdembed: create %s: %w", dir, err)
	}
	// MkdirAll leaves an existing directory's mode alone; the keys and data
	// below must not be reachable by other users whatever the dir was before.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdembed: restrict %s: %w", dir, err)
	}

	certs := pki{dir: filepath.Join(dir, "pki")}
	generated, err := certs.ensure(time.Now())
	if err != nil {
		return nil, fmt.Errorf("etcdembed: prepare certificates: %w", err)
	}
	if generated {
		log.Info("generated embedded etcd certificates", "dir", certs.dir)
	}
	clientTLS, err := certs.clientTLS()
	if err != nil {
		return nil, fmt.Errorf("etcdembed: %w", err)
	}

	ep, found, err := loadEndpoints(dir)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: %w", err)
	}

	closing := new(atomic.Bool)
	var e *embed.Etcd
	for attempt := 1; ; attempt++ {
		var peerListen int
		ep, peerListen, err = choosePorts(ep, found, attempt > 1)
		if err != nil {
			return nil, fmt.Errorf("etcdembed: %w", err)
		}
		// Saved before etcd starts: once etcd has written its membership the
		// peer port must be known on the next start, even after a crash.
		if err := saveEndpoints(dir, ep); err != nil {
			return nil, fmt.Errorf("etcdembed: %w", err)
		}
		// etcd's HTTP endpoints (/health, /metrics, /version) get a port of their own, chosen afresh on
		// every start since nothing dials it: on a shared port etcd serves gRPC through net/http's
		// HTTP/2 server, which costs every etcd request of wardend's more CPU than grpc-go's own
		// transport (raw puts ran 1.5–1.7× faster without it; etcd warns about the shared port too).
		httpListen, err := freePort(ep.PeerPort, ep.ClientPort, peerListen)
		if err != nil {
			return nil, fmt.Errorf("etcdembed: %w", err)
		}
		if peerListen != ep.PeerPort {
			log.Warn("persisted etcd peer port is busy, listening elsewhere; the advertised peer URL is kept since a single member never dials it",
				"peer_port", ep.PeerPort, "listen_port", peerListen)
		}
		e, err = embed.StartEtcd(etcdConfig(filepath.Join(dir, "data"), certs, ep, peerListen, httpListen, slogCore{log: log, closing: closing}))
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == bindAttempts {
			return nil, fmt.Errorf("etcdembed: start etcd: %w", err)
		}
		log.Warn("etcd port taken before bind, retrying with new ports", "error", err)
		// A first start never got as far as storing the peer URL, so both
		// ports may be chosen again.
	}

	s := &Server{etcd: e, clientURL: "https://" + net.JoinHostPort(loopback, strconv.Itoa(ep.ClientPort)), tls: clientTLS, log: log, closing: closing}
	if err := s.waitReady(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("etcdembed: %w", err)
	}
	log.Info("embedded etcd ready", "endpoint", s.clientURL, "data_dir", dir)
	return s, nil
}

// choosePorts keeps the persisted ports where possible. The client port moves
// freely when busy; the advertised peer port never moves once persisted, and
// if it is busy etcd listens for peers on another port instead (returned as
// peerListen).
func choosePorts(ep endpoints, persisted, retry bool) (_ endpoints, peerListen int, err error) {
	if !persisted {
		if ep.PeerPort, err = freePort(); err != nil {
			return ep, 0, err
		}
	}
	if !persisted || retry || !portFree(ep.ClientPort) {
		if ep.ClientPort, err = freePort(ep.PeerPort); err != nil {
			return ep, 0, err
		}
	}
	if !persisted || (!retry && portFree(ep.PeerPort)) {
		return ep, ep.PeerPort, nil
	}
	peerListen, err = freePort(ep.PeerPort, ep.ClientPort)
	return ep, peerListen, err
}

func loopbackURL(port int) url.URL {
	return url.URL{Scheme: "https", Host: net.JoinHostPort(loopback, strconv.Itoa(port))}
}

func etcdConfig(dataDir string, certs pki, ep endpoints, peerListen, httpListen int, logCore slogCore) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = memberName
	cfg.Dir = dataDir

	cfg.ListenClientUrls = []url.URL{loopbackURL(ep.ClientPort)}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.ListenClientHttpUrls = []url.URL{loopbackURL(httpListen)}
	cfg.ListenPeerUrls = []url.URL{loopbackURL(peerListen)}
	cfg.AdvertisePeerUrls = []url.URL{loopbackURL(ep.PeerPort)}
	cfg.InitialCluster = memberName + "=" + cfg.AdvertisePeerUrls[0].String()
	cfg.InitialClusterToken = "warden-embedded"
	cfg.ClusterState = embed.ClusterStateFlagNew

	tlsInfo := transport.TLSInfo{
		CertFile:       certs.path(serverCertFile),
		KeyFile:        certs.path(serverKeyFile),
		TrustedCAFile:  certs.path(caCertFile),
		ClientCertAuth: true,
	}
	cfg.ClientTLSInfo = tlsInfo
	cfg.PeerTLSInfo = tlsInfo
	cfg.TlsMinVersion = "TLS1.3"
	// wardend talks gRPC only; the JSON gateway would be one more surface.
	cfg.EnableGRPCGateway = false

	cfg.QuotaBackendBytes = quotaBackendBytes
	cfg.AutoCompactionMode = embed.CompactorModeRevision
	cfg.AutoCompactionRetention = compactionRetention

	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(logCore))
	return cfg
}

func (s *Server) waitReady(ctx context.Context) error {
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-s.etcd.Server.ReadyNotify():
		return nil
	case err := <-s.etcd.Err():
		return fmt.Errorf("etcd failed while starting: %w", err)
	case <-s.etcd.Server.StopNotify():
		return errors.New("etcd stopped while starting")
	case <-timer.C:
		return fmt.Errorf("etcd not ready after %s", readyTimeout)
	case <-ctx.Done():
		return fmt.Errorf("waiting for etcd to become ready: %w", ctx.Err())
	}
}

// ClientConfig returns a configuration that dials this server with its
// client certificate. Each call returns a fresh copy the caller may modify.
func (s *Server) ClientConfig() clientv3.Config {
	return clientv3.Config{
		Endpoints:   []string{s.clientURL},
		TLS:         s.tls.Clone(),
		DialTimeout: dialTimeout,
	}
}

// Close stops etcd, waiting for in-flight requests for a short while. It is
// safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.etcd.Close()
		s.log.Info("embedded etcd stopped")
	})
	return nil
}
