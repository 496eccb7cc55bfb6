// Package wardentest runs a real wardend in-process on an embedded etcd for tests, and dials it as the
// admin, as nodes with minted identities, or anonymously. Imported only by tests.
package wardentest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/wardend"
)

// Env is a running wardend.
type Env struct {
	T        testing.TB
	Addr     string
	DataDir  string
	Admin    wardend.AdminFiles
	Platform *wardend.Platform
	Config   wardend.Config
	cancel   context.CancelFunc
	done     chan error
}

// Options adjust the configuration before start.
type Options struct {
	DataDir   string                // reuse a data dir (restart tests); default t.TempDir()
	Services  []string              // default all
	Configure func(*wardend.Config) // last word on the configuration
	Log       *slog.Logger          // default: test log
}

// Start runs wardend until the test ends.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	dir := opts.DataDir
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := wardend.Defaults()
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	if len(opts.Services) > 0 {
		cfg.Services = opts.Services
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	log := opts.Log
	if log == nil {
		log = etcdtest.Logger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Env{T: t, DataDir: dir, Config: cfg, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		e.done <- wardend.Run(ctx, cfg, log, wardend.Builders(), wardend.AlwaysHosted(), func(p *wardend.Platform, addr string, admin wardend.AdminFiles) {
			e.Platform, e.Addr, e.Admin = p, addr, admin
			close(ready)
		})
	}()
	select {
	case <-ready:
	case err := <-e.done:
		cancel()
		t.Fatalf("wardend did not start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("wardend did not start within 60s")
	}
	t.Cleanup(func() { e.Stop() })
	return e
}

// Stop shuts wardend down and waits for it (idempotent).
func (e *Env) Stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	if err := <-e.done; err != nil {
		e.T.Errorf("wardend stopped with error: %v", err)
	}
}

// Pool is the trust bundle from the admin dir.
func (e *Env) Pool() *x509.CertPool {
	e.T.Helper()
	pem, err := os.ReadFile(e.Admin.CA)
	if err != nil {
		e.T.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		e.T.Fatal("no CA in admin ca.crt")
	}
	return pool
}

// Dial connects with the given client certificate (nil: none).
func (e *Env) Dial(cert *tls.Certificate) *grpc.ClientConn {
	e.T.Helper()
	tc := &tls.Config{RootCAs: e.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(e.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { _ = conn.Close() })
	return conn
}

// AdminConn dials with the admin files wardend wrote.
func (e *Env) AdminConn() *grpc.ClientConn {
	e.T.Helper()
	pair, err := tls.LoadX509KeyPair(e.Admin.Cert, e.Admin.Key)
	if err != nil {
		e.T.Fatal(err)
	}
	return e.Dial(&pair)
}

// AnonConn dials without a client certificate.
func (e *Env) AnonConn() *grpc.ClientConn { return e.Dial(nil) }

// Mint issues a client+server certificate for id straight from the CA, as if the identity had
// bootstrapped (node identities for tests of services other than CertService).
func (e *Env) Mint(id identity.ID) *tls.Certificate {
	e.T.Helper()
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		e.T.Fatal(err)
	}
	certPEM, err := e.Platform.Authority.IssueLocal(context.Background(), id, key.Public(), pki.Template{Lifetime: time.Hour, Server: true, Client: true, DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		e.T.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(certPEM)
	if err != nil {
		e.T.Fatal(err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// NodeConn dials as a node of role with id (minted identity).
func (e *Env) NodeConn(role identity.Role, id string) *grpc.ClientConn {
	return e.Dial(e.Mint(identity.NodeID(e.Config.TrustDomain, role, id)))
}

// InitialPassword waits for the bootstrap admin's password file, which the admin service writes shortly
// after start (not before the listener is up), checks its mode and returns the password.
func (e *Env) InitialPassword() string {
	e.T.Helper()
	path := filepath.Join(e.DataDir, "admin", "initial-password")
	var pw string
	etcdtest.Eventually(e.T, 20*time.Second, func() bool {
		b, err := os.ReadFile(path)
		pw = strings.TrimSpace(string(b))
		return err == nil && pw != ""
	}, "initial-password written")
	fi, err := os.Stat(path)
	if err != nil {
		e.T.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		e.T.Fatalf("initial-password mode %v, want 0600", fi.Mode().Perm())
	}
	return pw
}
