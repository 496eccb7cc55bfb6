package wardend

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// TestSessionResumption runs wardend's server TLS configuration against a real client with a session
// cache: a session resumes on another server configuration holding the same ticket keys (a restarted or
// another replica), not on one with other keys, not once the client certificate is revoked, and not once
// its CA left the trust bundle (then the handshake fails altogether).
func TestSessionResumption(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewRootCA("example.org", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewRootCA("example.org", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	serverCert := issue(t, ca, pki.Template{ID: identity.ControlPlaneID("example.org"), DNSNames: []string{"localhost"}, Server: true, Lifetime: time.Hour}, now)
	clientCert := issue(t, ca, pki.Template{ID: identity.NodeID("example.org", identity.RoleWebapp, "w1"), Client: true, Lifetime: time.Hour}, now)
	serial := pki.Serial(clientCert.Leaf.SerialNumber)

	trusted := x509.NewCertPool()
	trusted.AddCert(ca.Cert)
	var revoked atomic.Bool
	var bundle atomic.Pointer[x509.CertPool]
	bundle.Store(trusted)
	server := func(keys [32]byte) *tls.Config {
		s := &servingCert{}
		s.cur.Store(serverCert)
		c := s.tlsConfig(bundle.Load, func(sn string) bool { return revoked.Load() && sn == serial })
		c.SetSessionTicketKeys([][32]byte{keys})
		return c
	}
	var k1, k2 [32]byte
	if _, err := rand.Read(k1[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(k2[:]); err != nil {
		t.Fatal(err)
	}
	client := &tls.Config{
		RootCAs: trusted, ServerName: "localhost", MinVersion: tls.VersionTLS13,
		Certificates:       []tls.Certificate{*clientCert},
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}

	steps := []struct {
		name       string
		server     *tls.Config
		before     func()
		wantResume bool
		wantPeer   bool // the server saw the client certificate
	}{
		{name: "first connection", server: server(k1), wantPeer: true},
		{name: "restarted replica, same keys", server: server(k1), wantResume: true, wantPeer: true},
		{name: "replica with other keys", server: server(k2), wantPeer: true},
		// The client now holds the other replica's ticket, which the shared keys cannot open.
		{name: "back on the shared keys", server: server(k1), wantPeer: true},
		{name: "shared keys again", server: server(k1), wantResume: true, wantPeer: true},
		{name: "client certificate revoked", server: server(k1), before: func() { revoked.Store(true) }, wantPeer: true},
		{name: "revocation lifted", server: server(k1), before: func() { revoked.Store(false) }, wantResume: true, wantPeer: true},
		{name: "CA left the bundle", server: server(k1), before: func() {
			p := x509.NewCertPool()
			p.AddCert(other.Cert)
			bundle.Store(p)
		}},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		resumed, peerSeen, err := handshake(t, st.server, client)
		if st.wantPeer && err != nil {
			t.Fatalf("%s: handshake: %v", st.name, err)
		}
		if resumed != st.wantResume {
			t.Errorf("%s: resumed = %v, want %v", st.name, resumed, st.wantResume)
		}
		if peerSeen != st.wantPeer {
			t.Errorf("%s: server verified the client certificate = %v, want %v (err %v)", st.name, peerSeen, st.wantPeer, err)
		}
	}
}

func issue(t *testing.T, ca *pki.CA, tpl pki.Template, now time.Time) *tls.Certificate {
	t.Helper()
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := ca.Issue(tpl, key.Public(), now)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// handshake connects client to a server with cfg over loopback and reports whether the client resumed
// and whether the server ended up with a verified client chain (what wardend authenticates calls by).
func handshake(t *testing.T, cfg, client *tls.Config) (resumed, peerVerified bool, err error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		verified bool
		err      error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		sc := tls.Server(c, cfg)
		err = sc.Handshake()
		st := sc.ConnectionState()
		// Written after the handshake, so the client has read the session ticket when it reads this.
		if err == nil {
			_, err = sc.Write([]byte{1})
		}
		done <- result{verified: len(st.VerifiedChains) > 0, err: err}
		_ = sc.Close()
	}()
	cc, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		<-done
		return false, false, err
	}
	defer cc.Close()
	if _, err := cc.Read(make([]byte, 1)); err != nil {
		<-done
		return false, false, err
	}
	r := <-done
	return cc.ConnectionState().DidResume, r.verified, r.err
}
