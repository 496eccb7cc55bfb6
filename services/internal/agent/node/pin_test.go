package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/agent/agenttest"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

func TestVerifyPinned(t *testing.T) {
	ca := agenttest.NewCA(t)
	other := agenttest.NewCA(t)
	cp := ca.Mint(identity.ControlPlaneID(agenttest.TrustDomain), time.Hour)
	node := ca.Mint(agenttest.Node(identity.RoleWebapp, "w1"), time.Hour)
	pin := pki.Fingerprint(ca.Cert)

	for _, tc := range []struct {
		name       string
		chain      [][]byte
		pin        string
		candidates []*x509.Certificate
		wantErr    string
	}{
		{name: "root presented", chain: [][]byte{cp.Cert.Raw, ca.Cert.Raw}, pin: pin},
		{name: "root from the CA file", chain: [][]byte{cp.Cert.Raw}, pin: pin, candidates: []*x509.Certificate{other.Cert, ca.Cert}},
		{name: "wrong fingerprint", chain: [][]byte{cp.Cert.Raw, ca.Cert.Raw}, pin: pki.Fingerprint(other.Cert), wantErr: "no CA certificate with fingerprint"},
		{name: "root not available", chain: [][]byte{cp.Cert.Raw}, pin: pin, wantErr: "no CA certificate with fingerprint"},
		{name: "pinned CA presented but leaf from another CA", chain: [][]byte{other.Mint(identity.ControlPlaneID(agenttest.TrustDomain), time.Hour).Cert.Raw, ca.Cert.Raw}, pin: pin, wantErr: "certificate signed by unknown authority"},
		{name: "leaf pinned", chain: [][]byte{cp.Cert.Raw}, pin: pki.Fingerprint(cp.Cert), wantErr: "no CA certificate"},
		{name: "not the control plane", chain: [][]byte{node.Cert.Raw, ca.Cert.Raw}, pin: pin, wantErr: "is not the control plane"},
		{name: "nothing presented", pin: pin, wantErr: "no certificate presented"},
		{name: "garbage", chain: [][]byte{[]byte("not DER")}, pin: pin, wantErr: "does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := verifyPinned(tc.chain, tc.pin, tc.candidates)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("verifyPinned: %v", err)
				}
				if id != identity.ControlPlaneID(agenttest.TrustDomain) {
					t.Errorf("identity %s", id)
				}
				return
			}
			if !errors.Is(err, ErrPinMismatch) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("verifyPinned error = %v, want ErrPinMismatch containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestProbePinnedRealHandshake pins over a real TLS connection: the right fingerprint learns the trust
// domain, a wrong one is refused before anything but the handshake happened.
func TestProbePinnedRealHandshake(t *testing.T) {
	ca := agenttest.NewCA(t)
	other := agenttest.NewCA(t)
	cp := ca.Mint(identity.ControlPlaneID(agenttest.TrustDomain), time.Hour)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cp.TLS}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	received := make(chan []byte, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				received <- buf[:n]
			}(c)
		}
	}()
	addr := ln.Addr().String()

	id, err := probePinned(t.Context(), addr, pki.Fingerprint(ca.Cert), []*x509.Certificate{ca.Cert})
	if err != nil {
		t.Fatalf("right pin refused: %v", err)
	}
	if id.TrustDomain != agenttest.TrustDomain {
		t.Errorf("trust domain %q", id.TrustDomain)
	}
	_, err = probePinned(t.Context(), addr, pki.Fingerprint(other.Cert), []*x509.Certificate{ca.Cert, other.Cert})
	if !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("wrong pin: err = %v, want ErrPinMismatch", err)
	}
	// The session TLS with the pin must fail the same way (no application data ever sent).
	conn, err := tls.Dial("tcp", addr, pinnedTLS(pki.Fingerprint(other.Cert), nil, nil))
	if err == nil {
		_ = conn.Close()
		t.Fatal("pinned TLS with a wrong fingerprint connected")
	}
	select {
	case b := <-received:
		if len(b) > 0 {
			t.Errorf("server received application data %q over a refused connection", b)
		}
	case <-time.After(2 * time.Second):
	}
}
