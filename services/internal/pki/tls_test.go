package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
)

// issueTLS returns a tls.Certificate for id from ca, with serverName as its
// DNS SAN when it is a server.
func issueTLS(t *testing.T, ca *CA, id identity.ID, server bool, kt KeyType) tls.Certificate {
	t.Helper()
	key := testKey(t, kt)
	tpl := Template{ID: id, Lifetime: time.Hour, Server: server, Client: !server}
	if server {
		tpl.DNSNames = []string{"wardend.prod.example"}
	}
	cert, der, err := ca.Issue(tpl, key.Public(), testNow)
	if err != nil {
		t.Fatalf("Issue %s: %v", id, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
}

// handshakeResult is what each side of handshake saw.
type handshakeResult struct {
	serverErr, clientErr error
	peer                 identity.ID // the client identity the server saw
}

// handshake runs a mutual-TLS exchange over loopback. The server verifies
// client certificates against serverTrust; the client verifies the server
// against clientTrust.
func handshake(t *testing.T, serverCert, clientCert tls.Certificate, serverTrust, clientTrust *x509.CertPool) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	clock := func() time.Time { return testNow }

	type result struct {
		err  error
		peer identity.ID
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		srv := tls.Server(conn, &tls.Config{
			Certificates: []tls.Certificate{serverCert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    serverTrust,
			Time:         clock,
			MinVersion:   tls.VersionTLS13,
		})
		if err := srv.HandshakeContext(t.Context()); err != nil {
			done <- result{err: err}
			return
		}
		peer, err := identity.FromCertificate(srv.ConnectionState().PeerCertificates[0])
		if err != nil {
			done <- result{err: err}
			return
		}
		_, err = srv.Write([]byte("ok"))
		done <- result{err: err, peer: peer}
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	cli := tls.Client(conn, &tls.Config{
		Certificates: []tls.Certificate{clientCert},
		RootCAs:      clientTrust,
		ServerName:   "wardend.prod.example",
		Time:         clock,
		MinVersion:   tls.VersionTLS13,
	})
	clientErr := cli.HandshakeContext(t.Context())
	if clientErr == nil {
		// TLS 1.3 clients finish before the server has checked their
		// certificate; a rejection shows up on the first read.
		var got []byte
		got, clientErr = io.ReadAll(cli)
		if clientErr == nil && string(got) != "ok" {
			clientErr = errors.New("server sent " + string(got))
		}
	}
	_ = cli.Close()
	r := <-done
	return handshakeResult{serverErr: r.err, clientErr: clientErr, peer: r.peer}
}

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	serverID := identity.ControlPlaneID(testTD)
	clientID := identity.NodeID(testTD, identity.RoleWebapp, "web-01")

	tests := []struct {
		name       string
		serverCert tls.Certificate
		clientCert tls.Certificate
		wantServer bool // server handshake succeeds
		wantClient bool // client handshake and read succeed
	}{
		{"both from the CA, P-256", issueTLS(t, ca, serverID, true, KeyECDSAP256), issueTLS(t, ca, clientID, false, KeyECDSAP256), true, true},
		{"both from the CA, mixed key types", issueTLS(t, ca, serverID, true, KeyRSA2048), issueTLS(t, ca, clientID, false, KeyEd25519), true, true},
		{"client from another CA", issueTLS(t, ca, serverID, true, KeyECDSAP256), issueTLS(t, other, clientID, false, KeyECDSAP256), false, false},
		{"server from another CA", issueTLS(t, other, serverID, true, KeyECDSAP256), issueTLS(t, ca, clientID, false, KeyECDSAP256), false, false},
		{"client certificate without clientAuth", issueTLS(t, ca, serverID, true, KeyECDSAP256), issueTLS(t, ca, clientID, true, KeyECDSAP384), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := handshake(t, tt.serverCert, tt.clientCert, pool(ca.Roots...), pool(ca.Roots...))
			if (r.serverErr == nil) != tt.wantServer {
				t.Fatalf("server error = %v, want success=%v", r.serverErr, tt.wantServer)
			}
			if (r.clientErr == nil) != tt.wantClient {
				t.Fatalf("client error = %v, want success=%v", r.clientErr, tt.wantClient)
			}
			if tt.wantServer && r.peer != clientID {
				t.Fatalf("server saw peer %v, want %v", r.peer, clientID)
			}
		})
	}
}
