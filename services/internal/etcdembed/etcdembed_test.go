package etcdembed

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// testLogger cannot come from etcdtest, which imports this package.
func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	// t.Log panics once the test has finished, and etcd's goroutines may
	// still log while they wind down.
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func startServer(t *testing.T, dir string) *Server {
	t.Helper()
	s, err := Start(t.Context(), Config{DataDir: dir, Log: testLogger(t)})
	if err != nil {
		t.Fatalf("Start(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dial(t *testing.T, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	cfg.Logger = zap.NewNop()
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func opCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func readEndpoints(t *testing.T, dataDir string) endpoints {
	t.Helper()
	ep, found, err := loadEndpoints(filepath.Join(dataDir, "etcd"))
	if err != nil || !found {
		t.Fatalf("loadEndpoints: found=%v err=%v", found, err)
	}
	return ep
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	c := dial(t, s.ClientConfig())
	if _, err := c.Put(opCtx(t, 5*time.Second), "k", "v1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	before := readEndpoints(t, dir)
	c.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s2 := startServer(t, dir)
	if after := readEndpoints(t, dir); after != before {
		t.Errorf("endpoints changed across a clean restart: before %+v, after %+v", before, after)
	}
	c2 := dial(t, s2.ClientConfig())
	resp, err := c2.Get(opCtx(t, 5*time.Second), "k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("after restart want k=v1, got %v", resp.Kvs)
	}
}

// A busy client port moves; a busy peer port is only listened on elsewhere,
// because the advertised peer URL is stored in etcd's membership.
func TestRestartWithBusyPorts(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	c := dial(t, s.ClientConfig())
	if _, err := c.Put(opCtx(t, 5*time.Second), "k", "v1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	c.Close()
	s.Close()

	before := readEndpoints(t, dir)
	for _, port := range []int{before.ClientPort, before.PeerPort} {
		l, err := net.Listen("tcp", net.JoinHostPort(loopback, strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("occupy port %d: %v", port, err)
		}
		t.Cleanup(func() { l.Close() })
	}

	s2 := startServer(t, dir)
	after := readEndpoints(t, dir)
	if after.ClientPort == before.ClientPort {
		t.Errorf("client port %d was busy but was kept", after.ClientPort)
	}
	if after.PeerPort != before.PeerPort {
		t.Errorf("advertised peer port changed from %d to %d", before.PeerPort, after.PeerPort)
	}
	resp, err := dial(t, s2.ClientConfig()).Get(opCtx(t, 5*time.Second), "k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("after restart want k=v1, got %v", resp.Kvs)
	}
}

func TestTwoServersWithDifferentDirs(t *testing.T) {
	type started struct {
		s   *Server
		err error
	}
	results := make(chan started, 2)
	for range 2 {
		dir := t.TempDir()
		go func() {
			s, err := Start(t.Context(), Config{DataDir: dir, Log: testLogger(t)})
			results <- started{s, err}
		}()
	}
	var servers []*Server
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatalf("Start: %v", r.err)
		}
		t.Cleanup(func() { r.s.Close() })
		servers = append(servers, r.s)
	}

	seen := map[string]bool{}
	for i, s := range servers {
		cfg := s.ClientConfig()
		for _, std := range []string{":2379", ":2380"} {
			if strings.HasSuffix(cfg.Endpoints[0], std) {
				t.Errorf("server %d uses standard etcd port: %s", i, cfg.Endpoints[0])
			}
		}
		if seen[cfg.Endpoints[0]] {
			t.Fatalf("two servers share endpoint %s", cfg.Endpoints[0])
		}
		seen[cfg.Endpoints[0]] = true
		if _, err := dial(t, cfg).Put(opCtx(t, 5*time.Second), "who", strconv.Itoa(i)); err != nil {
			t.Fatalf("put to server %d: %v", i, err)
		}
	}
	for i, s := range servers {
		resp, err := dial(t, s.ClientConfig()).Get(opCtx(t, 5*time.Second), "who")
		if err != nil {
			t.Fatalf("get from server %d: %v", i, err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != strconv.Itoa(i) {
			t.Errorf("server %d: want who=%d, got %v", i, i, resp.Kvs)
		}
	}
}

func TestRefusesClientsWithoutItsCertificate(t *testing.T) {
	s := startServer(t, t.TempDir())
	other := startServer(t, t.TempDir())
	good := s.ClientConfig()
	if _, err := dial(t, good).Get(opCtx(t, 5*time.Second), "k"); err != nil {
		t.Fatalf("the server's own client config must work: %v", err)
	}
	host := good.Endpoints[0][len("https://"):]

	noCert := s.ClientConfig()
	noCert.TLS.Certificates = nil

	// Certificates from another wardend's CA: valid, but not ours.
	foreign := s.ClientConfig()
	foreign.TLS.Certificates = other.ClientConfig().TLS.Certificates

	cases := []struct {
		name string
		cfg  clientv3.Config
	}{
		{"plaintext", clientv3.Config{Endpoints: []string{"http://" + host}}},
		{"tls without client certificate", noCert},
		{"client certificate from another CA", foreign},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.DialTimeout = time.Second
			c := dial(t, tc.cfg)
			if _, err := c.Get(opCtx(t, 700*time.Millisecond), "k"); err == nil {
				t.Fatal("Get succeeded, want the server to refuse the connection")
			}
		})
	}

	t.Run("handshake reports certificate required", func(t *testing.T) {
		conf := good.TLS.Clone()
		conf.Certificates = nil
		conn, err := tls.Dial("tcp", host, conf)
		if err != nil {
			return // refused during the handshake: as good as it gets
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadAll(conn); err == nil {
			t.Fatal("server accepted a TLS connection without a client certificate")
		}
	})
}

func TestFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)

	check := func(path string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	check(filepath.Join(dir, "etcd"), 0o700)
	check(filepath.Join(dir, "etcd", "pki"), 0o700)
	for _, key := range []string{serverKeyFile, clientKeyFile} {
		check(filepath.Join(dir, "etcd", "pki", key), 0o600)
	}
	if _, err := os.Stat(filepath.Join(dir, "etcd", "pki", "ca.key")); !os.IsNotExist(err) {
		t.Errorf("the CA key must not be kept on disk (stat err: %v)", err)
	}
}

func TestCertificatesRegeneratedWhenDamaged(t *testing.T) {
	dir := t.TempDir()
	p := pki{dir: filepath.Join(dir, "pki")}
	now := time.Now()
	if generated, err := p.ensure(now); err != nil || !generated {
		t.Fatalf("first ensure: generated=%v err=%v", generated, err)
	}
	if generated, err := p.ensure(now); err != nil || generated {
		t.Fatalf("second ensure must reuse the set: generated=%v err=%v", generated, err)
	}
	if generated, err := p.ensure(now.Add(certValidity - renewBefore/2)); err != nil || !generated {
		t.Fatalf("ensure close to expiry must regenerate: generated=%v err=%v", generated, err)
	}
	if err := os.Remove(p.path(clientKeyFile)); err != nil {
		t.Fatal(err)
	}
	if generated, err := p.ensure(now); err != nil || !generated {
		t.Fatalf("ensure with a missing key must regenerate: generated=%v err=%v", generated, err)
	}
}

func TestChoosePorts(t *testing.T) {
	client, peer := mustFreePort(t), mustFreePort(t)
	persisted := endpoints{ClientPort: client, PeerPort: peer}

	t.Run("first start picks two distinct ports", func(t *testing.T) {
		ep, listen, err := choosePorts(endpoints{}, false, false)
		if err != nil || !validPort(ep.ClientPort) || !validPort(ep.PeerPort) || ep.ClientPort == ep.PeerPort || listen != ep.PeerPort {
			t.Fatalf("got %+v listen %d, %v", ep, listen, err)
		}
	})
	t.Run("restart keeps free persisted ports", func(t *testing.T) {
		ep, listen, err := choosePorts(persisted, true, false)
		if err != nil || ep != persisted || listen != peer {
			t.Fatalf("want %+v listening on %d, got %+v listen %d, %v", persisted, peer, ep, listen, err)
		}
	})
	t.Run("retry after a bind race moves the client and the peer listener only", func(t *testing.T) {
		ep, listen, err := choosePorts(persisted, true, true)
		if err != nil || ep.PeerPort != peer || ep.ClientPort == client || listen == peer || listen == ep.ClientPort {
			t.Fatalf("got %+v listen %d, %v", ep, listen, err)
		}
	})
}

func mustFreePort(t *testing.T) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestClientPortServesOnlyGRPC: etcd's HTTP endpoints are on a port of their own, so the client port
// is served by grpc-go's transport alone (on a shared port etcd routes gRPC through net/http's HTTP/2
// server, and the same raw puts ran at 2,100–3,300/s instead of 4,000–5,100/s). With the port shared,
// this GET returned etcd's version.
func TestClientPortServesOnlyGRPC(t *testing.T) {
	s := startServer(t, t.TempDir())
	cfg := s.ClientConfig()
	if _, err := dial(t, cfg).Get(opCtx(t, 5*time.Second), "k"); err != nil {
		t.Fatalf("gRPC on the client port: %v", err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg.TLS}}
	resp, err := hc.Get(cfg.Endpoints[0] + "/version")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET /version on the client port answered %s %q; want the port to serve gRPC only", resp.Status, body)
	}
}
