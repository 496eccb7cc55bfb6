package certsvc

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/token"
)

// handshake runs a mutual TLS handshake between two node identities over an in-memory pipe, each side
// verifying the other against roots, by URI SAN, and against the revoked set.
func handshake(server, client *tls.Certificate, roots *x509.CertPool, revoked map[string]bool) error {
	check := func(cs tls.ConnectionState, usage x509.ExtKeyUsage) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no peer certificate")
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
		if _, err := identity.FromCertificate(leaf); err != nil {
			return err
		}
		if revoked[leaf.SerialNumber.Text(16)] {
			return fmt.Errorf("peer certificate %x is revoked", leaf.SerialNumber)
		}
		return nil
	}
	srvCfg := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*server},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots,
		VerifyConnection: func(cs tls.ConnectionState) error { return check(cs, x509.ExtKeyUsageClientAuth) },
	}
	// Identities carry no DNS name: peers are verified by chain and SPIFFE ID instead of host name.
	cliCfg := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*client}, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error { return check(cs, x509.ExtKeyUsageServerAuth) },
	}
	// net.Pipe is unbuffered: a side that fails must close both ends, or the other blocks writing.
	a, b := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	_ = a.SetDeadline(deadline)
	_ = b.SetDeadline(deadline)
	srvCfg.SessionTicketsDisabled = true
	srv, cli := tls.Server(a, srvCfg), tls.Client(b, cliCfg)
	closeBoth := func() { _ = a.Close(); _ = b.Close() }
	errc := make(chan error, 2)
	go func() {
		err := srv.Handshake()
		if err == nil {
			_, err = srv.Write([]byte("ping"))
		}
		if err != nil {
			closeBoth()
		}
		errc <- err
	}()
	go func() {
		// The client reads, so that an alert the server sends after the client's Finished is received
		// instead of both sides blocking on writes.
		err := cli.Handshake()
		if err == nil {
			buf := make([]byte, 4)
			if _, err = io.ReadFull(cli, buf); err == nil && string(buf) != "ping" {
				err = fmt.Errorf("client read %q", buf)
			}
		}
		if err != nil {
			closeBoth()
		}
		errc <- err
	}()
	err := errors.Join(<-errc, <-errc)
	closeBoth()
	return err
}

func TestBootstrapTLSAndRevocation(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	web := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP, "web-1.example.com", "10.0.0.1")
	core := e.bootstrapNode("core-1", certv1.NodeRole_NODE_ROLE_COREAPP, "core-1.example.com")

	var roots *x509.CertPool
	for _, n := range []*node{web, core} {
		t.Run("bundle verifies "+n.id, func(t *testing.T) {
			stream, err := e.nodeClient(n).WatchCredentials(ctx, &certv1.WatchCredentialsRequest{NodeId: n.id})
			if err != nil {
				t.Fatal(err)
			}
			snap := recvUntil(t, stream, func(m *certv1.WatchCredentialsResponse) bool { return m.GetTrustBundlePem() != "" })
			roots = bundlePool(t, snap.GetTrustBundlePem())
			leaf := verifyChain(t, n.resp.GetCertificatePem(), roots, x509.ExtKeyUsageClientAuth)
			verifyChain(t, n.resp.GetCertificatePem(), roots, x509.ExtKeyUsageServerAuth)
			id, err := identity.FromCertificate(leaf)
			if err != nil {
				t.Fatal(err)
			}
			if want := identity.NodeID(testTD, roleOf(n.role), n.id); id != want {
				t.Fatalf("identity %s, want %s", id, want)
			}
			if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 {
				t.Fatalf("identity certificate names %v %v; only the URI SAN belongs in it", leaf.DNSNames, leaf.IPAddresses)
			}
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 23*time.Hour || got > 25*time.Hour {
				t.Fatalf("identity lifetime %s, want about 24h", got)
			}
			var cur *certv1.Certificate
			for _, r := range snap.GetRequired() {
				if r.GetKind() == certv1.CertKind_CERT_KIND_IDENTITY {
					cur = r.GetCurrent()
				}
			}
			if cur.GetSerial() != leaf.SerialNumber.Text(16) {
				t.Fatalf("snapshot's current identity %q, want %x", cur.GetSerial(), leaf.SerialNumber)
			}
			if snap.GetCrlPem() == "" || snap.GetServerTime() == nil || snap.GetVersion() == 0 {
				t.Fatalf("snapshot lacks CRL, server time or version: %v", snap)
			}
			got, err := e.adminClient().GetNode(ctx, &certv1.GetNodeRequest{NodeId: n.id})
			if err != nil {
				t.Fatal(err)
			}
			if got.GetNode().GetBootstrappedAt() == nil || got.GetNode().GetSpiffeId() != identity.NodeID(testTD, roleOf(n.role), n.id).String() {
				t.Fatalf("node after bootstrap: %v", got.GetNode())
			}
		})
	}

	t.Run("mutual TLS between two identities", func(t *testing.T) {
		if err := handshake(core.cert, web.cert, roots, nil); err != nil {
			t.Fatalf("handshake: %v", err)
		}
	})

	serial := web.cert.Leaf.SerialNumber.Text(16)
	webConn := e.nodeClient(web)
	if _, err := webConn.GetCRL(ctx, &certv1.GetCRLRequest{}); err != nil {
		t.Fatalf("node call before revocation: %v", err)
	}
	before, err := e.adminClient().GetCRL(ctx, &certv1.GetCRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := e.adminClient().RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: serial, Reason: certv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE})
	if err != nil {
		t.Fatal(err)
	}
	if rev.GetCrlNumber() != before.GetNumber()+1 || rev.GetCertificate().GetRevokedAt() == nil {
		t.Fatalf("revocation: CRL %d after %d, certificate %v", rev.GetCrlNumber(), before.GetNumber(), rev.GetCertificate())
	}

	t.Run("CRL lists the serial", func(t *testing.T) {
		got, err := e.adminClient().GetCRL(ctx, &certv1.GetCRLRequest{})
		if err != nil {
			t.Fatal(err)
		}
		crl := onlyCRL(t, got.GetCrlPem())
		issuer, err := e.auth.Issuer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := crl.CheckSignatureFrom(issuer.Cert); err != nil {
			t.Fatalf("CRL signature: %v", err)
		}
		found := false
		for _, entry := range crl.RevokedCertificateEntries {
			found = found || entry.SerialNumber.Text(16) == serial
		}
		if !found || crl.Number.Int64() != got.GetNumber() || got.GetNextUpdate().AsTime().Sub(got.GetThisUpdate().AsTime()) != DefaultCRLValidity {
			t.Fatalf("CRL %d lists serial: %v; next update %v", crl.Number, found, got.GetNextUpdate().AsTime())
		}
	})

	t.Run("revoked identity refused by the interceptors", func(t *testing.T) {
		etcdtest.Eventually(t, 10*time.Second, func() bool { return e.view.IsRevoked(serial) }, "revocation reaches the view")
		_, err := webConn.GetCRL(ctx, &certv1.GetCRLRequest{})
		wantCode(t, err, codes.Unauthenticated)
		_, err = e.nodeClient(web).GetTrustBundle(ctx, &certv1.GetTrustBundleRequest{})
		wantCode(t, err, codes.Unauthenticated)
		if _, err := e.nodeClient(core).GetCRL(ctx, &certv1.GetCRLRequest{}); err != nil {
			t.Fatalf("the other node is refused too: %v", err)
		}
	})

	t.Run("handshake with the revoked identity fails", func(t *testing.T) {
		if err := handshake(core.cert, web.cert, roots, map[string]bool{serial: true}); err == nil {
			t.Fatal("handshake with a revoked peer succeeded")
		}
	})
}

func TestBootstrapTokenRefusals(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	admin, anon := e.adminClient(), e.anonClient()
	_, csr := newCSR(t, pki.DefaultKeyType, "x")

	used := e.createNode("web-used", certv1.NodeRole_NODE_ROLE_WEBAPP)
	if _, err := anon.Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: used.GetJoinToken(), CsrPem: csr}); err != nil {
		t.Fatalf("first use: %v", err)
	}
	gone := e.createNode("web-gone", certv1.NodeRole_NODE_ROLE_WEBAPP)
	if _, err := admin.DecommissionNode(ctx, &certv1.DecommissionNodeRequest{NodeId: "web-gone", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	unknown, err := token.New(token.JoinPrefix)
	if err != nil {
		t.Fatal(err)
	}
	expiring, err := admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-late", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz", TokenTtl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, token string
		before      func()
	}{
		{name: "malformed", token: "wjt_short"},
		{name: "empty", token: ""},
		{name: "bearer token", token: strings.Replace(unknown.Value(), token.JoinPrefix, token.BearerPrefix, 1)},
		{name: "unknown", token: unknown.Value()},
		{name: "reused", token: used.GetJoinToken()},
		{name: "node decommissioned", token: gone.GetJoinToken()},
		// Last: the clock stays advanced.
		{name: "expired", token: expiring.GetJoinToken(), before: func() { e.clock.Advance(time.Hour + time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			denied := func() (n int) {
				for _, ev := range e.auditEvents() {
					if ev.GetMethod() == certv1.CertService_Bootstrap_FullMethodName && ev.GetOutcome() == audit.Denied {
						n++
					}
				}
				return n
			}
			deniedBefore := denied()
			dump := e.dump("")
			_, err := anon.Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: tc.token, CsrPem: csr})
			wantCode(t, err, codes.Unauthenticated)
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Fatal("the error echoes the token")
			}
			if d := diffDumps(dump, e.dump("")); len(d) != 0 {
				t.Fatalf("a refused bootstrap changed etcd: %v", d)
			}
			if got := denied(); got != deniedBefore+1 {
				t.Fatalf("%d denied bootstrap events, want %d", got, deniedBefore+1)
			}
			for _, ev := range e.auditEvents() {
				if tc.token != "" && strings.Contains(ev.String(), tc.token) {
					t.Fatal("an audit event holds the token")
				}
			}
		})
	}
}

func TestBootstrapTokenSingleUseUnderRace(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	created := e.createNode("web-race", certv1.NodeRole_NODE_ROLE_WEBAPP)
	anon := e.anonClient()
	const racers = 8
	errs := make(chan error, racers)
	for range racers {
		go func() {
			_, csr := newCSR(t, pki.DefaultKeyType, "web-race")
			_, err := anon.Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: created.GetJoinToken(), CsrPem: csr})
			errs <- err
		}()
	}
	ok := 0
	for range racers {
		err := <-errs
		switch {
		case err == nil:
			ok++
		default:
			wantCode(t, err, codes.Unauthenticated)
		}
	}
	if ok != 1 {
		t.Fatalf("%d bootstraps succeeded with one token, want 1", ok)
	}
	if n := len(e.dump(prefNodeIdx + "web-race/")); n != 1 {
		t.Fatalf("%d certificates issued, want 1", n)
	}
}
