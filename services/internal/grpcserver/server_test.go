package grpcserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"testing"
	"time"

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
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	conn, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
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
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("Serve is still waiting for a client that does not read, with no call under way")
	}
}
