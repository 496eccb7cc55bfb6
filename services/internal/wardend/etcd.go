package wardend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/warden-sec/warden/services/internal/etcdembed"
	"github.com/warden-sec/warden/services/internal/store"
)

// openEtcd starts the embedded etcd or dials the external cluster. The returned closer stops both.
// Every etcd request is timed (grpc_client_handling_seconds{grpc_service="etcdserverpb.KV",…}).
func openEtcd(ctx context.Context, cfg *Config, log *slog.Logger, reg prometheus.Registerer) (*store.Client, func(), error) {
	var ccfg clientv3.Config
	var embedded *etcdembed.Server
	if len(cfg.EtcdEndpoints) == 0 {
		srv, err := etcdembed.Start(ctx, etcdembed.Config{DataDir: cfg.DataDir, Log: log.With("component", "etcd")})
		if err != nil {
			return nil, nil, fmt.Errorf("embedded etcd: %w", err)
		}
		embedded = srv
		ccfg = srv.ClientConfig()
	} else {
		var err error
		if ccfg, err = externalEtcd(cfg, log); err != nil {
			return nil, nil, err
		}
	}
	etcdMetrics := grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram())
	if err := reg.Register(etcdMetrics); err != nil {
		return nil, nil, fmt.Errorf("register etcd metrics: %w", err)
	}
	ccfg.DialOptions = append(ccfg.DialOptions,
		grpc.WithChainUnaryInterceptor(etcdMetrics.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(etcdMetrics.StreamClientInterceptor()))
	client, err := store.Open(ctx, ccfg, cfg.EtcdTimeout, log.With("component", "store"))
	if err != nil {
		if embedded != nil {
			_ = embedded.Close()
		}
		return nil, nil, fmt.Errorf("connect to etcd: %w", err)
	}
	return client, func() {
		_ = client.Close()
		if embedded != nil {
			_ = embedded.Close()
		}
	}, nil
}

// externalEtcd builds the client configuration for --etcd-endpoints. Plaintext to a remote host would
// expose every sealed blob and the audit log on the wire, so it is refused unless explicitly allowed.
func externalEtcd(cfg *Config, log *slog.Logger) (clientv3.Config, error) {
	plaintextRemote, anyTLS := []string{}, false
	for _, ep := range cfg.EtcdEndpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return clientv3.Config{}, fmt.Errorf("--etcd-endpoints: %q is not an http(s)://host:port URL", ep)
		}
		if u.Scheme == "https" {
			anyTLS = true
			continue
		}
		if !isLoopback(u.Hostname()) {
			plaintextRemote = append(plaintextRemote, ep)
		}
	}
	if len(plaintextRemote) > 0 {
		if !cfg.EtcdAllowPlaintext {
			return clientv3.Config{}, fmt.Errorf("--etcd-endpoints: %v are plaintext and not on loopback; use https:// with --etcd-cacert/--etcd-cert/--etcd-key, or pass --etcd-allow-plaintext to accept the risk", plaintextRemote)
		}
		log.Warn("SECURITY DOWNGRADE: talking to a remote etcd without TLS (--etcd-allow-plaintext)", "endpoints", plaintextRemote)
	}
	ccfg := clientv3.Config{Endpoints: cfg.EtcdEndpoints, DialTimeout: 5 * time.Second}
	if anyTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.EtcdCACert != "" {
			pem, err := os.ReadFile(cfg.EtcdCACert)
			if err != nil {
				return ccfg, fmt.Errorf("--etcd-cacert: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return ccfg, errors.New("--etcd-cacert: no certificate found")
			}
		}
		if cfg.EtcdCert != "" {
			pair, err := tls.LoadX509KeyPair(cfg.EtcdCert, cfg.EtcdKey)
			if err != nil {
				return ccfg, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		ccfg.TLS = tc
	}
	return ccfg, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
