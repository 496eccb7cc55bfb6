package grpcserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// TestServeDoesNotWaitForSilentClients: once no call is under way, stopping must not wait for every
// connected client to acknowledge the drain. One client here connects, speaks HTTP/2 and then never
// reads again; the grace period is a minute. grpc's own drain gives such a client 5 s before closing
// its connection, so a Serve that waits for the drain takes at least that (it did: 6.0 s); one that
// closes once idle returns in a few ticks of 20 ms. The bound sits between the two with room for a
// loaded machine.
func TestServeDoesNotWaitForSilentClients(t *testing.T) {
	pool, addr, done, cancel := serveForTest(t)
	defer cancel()

	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The HTTP/2 preface and an empty SETTINGS frame; then silence.
	if _, err := conn.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	// Wait for the server's SETTINGS: the transport is up.
	if _, err := conn.Read(make([]byte, 9)); err != nil {
		t.Fatal(err)
	}

	cancel()
	waitServe(t, done, "a client that does not read, with no call under way")
}

// TestServeDoesNotWaitForOpenStreams: a stream that does not end when the replica stops (here a
// health watch, which lasts until its client leaves; in wardend a watch blocked sending to an agent
// that stopped reading) must not hold the shutdown for the whole grace period (a minute here).
func TestServeDoesNotWaitForOpenStreams(t *testing.T) {
	pool, addr, done, cancel := serveForTest(t)
	defer cancel()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	w, err := healthpb.NewHealthClient(cc).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	waitServe(t, done, "a health watch that is still open")
	// The stream was cut, not left open: the client sees its end.
	for {
		if _, err := w.Recv(); err != nil {
			break
		}
	}
}

// waitServe fails unless Serve returns without error well inside the minute of grace: a Serve that
// waits takes the whole minute (or grpc's own 5 s drain), one that does not a few ticks of 20 ms. The
// bound sits between the two with room for a loaded machine.
func waitServe(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(4 * time.Second):
		t.Fatalf("Serve is still waiting for %s", what)
	}
}

// serveForTest runs a Server with a minute's grace on a loopback port; cancel starts its shutdown and
// done receives what Serve returned.
func serveForTest(t *testing.T) (roots *x509.CertPool, addr string, done <-chan error, cancel context.CancelFunc) {
	t.Helper()
	const td = "test.local"
	ca, err := pki.NewRootCA(td, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := ca.Issue(pki.Template{ID: identity.ControlPlaneID(td), DNSNames: []string{"localhost"}, Lifetime: time.Hour, Server: true}, key.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{
		TLS:       &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}, MinVersion: tls.VersionTLS13},
		Auth:      &authn.Authenticator{TrustDomain: td},
		Log:       slog.New(slog.DiscardHandler),
		GraceStop: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, lis) }()
	roots = x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return roots, lis.Addr().String(), errc, cancel
}
