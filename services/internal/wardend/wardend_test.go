package wardend_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// TestRestartKeepsCAAndAdmin starts wardend, restarts it on the same data dir and checks that the CA
// and the admin identity are the same and still work.
func TestRestartKeepsCAAndAdmin(t *testing.T) {
	dir := t.TempDir()
	first := wardentest.Start(t, wardentest.Options{DataDir: dir})
	caBefore := mustRead(t, first.Admin.CA)
	certBefore := mustRead(t, first.Admin.Cert)
	keyInfo, err := os.Stat(first.Admin.Key)
	if err != nil {
		t.Fatal(err)
	}
	if keyInfo.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key mode = %v, want 0600", keyInfo.Mode().Perm())
	}
	checkAdminWorks(t, first.AdminConn())
	// A TLS session made with the first process resumes with the second: the ticket keys are shared
	// through etcd, not made per process.
	sessions := tls.NewLRUClientSessionCache(1)
	if resumed := adminHandshake(t, first, sessions); resumed {
		t.Fatal("the first connection claims to have resumed a session")
	}
	first.Stop()

	second := wardentest.Start(t, wardentest.Options{DataDir: dir})
	if !bytes.Equal(caBefore, mustRead(t, second.Admin.CA)) {
		t.Fatal("the CA changed across a restart")
	}
	if !bytes.Equal(certBefore, mustRead(t, second.Admin.Cert)) {
		t.Fatal("the admin certificate was re-issued although it was valid")
	}
	checkAdminWorks(t, second.AdminConn())
	if resumed := adminHandshake(t, second, sessions); !resumed {
		t.Fatal("the TLS session of the first process did not resume after the restart")
	}
}

// adminHandshake makes a TLS connection to e with the admin certificate and reports whether it resumed
// a session from sessions. It reads the server's first bytes, so the client has taken the ticket.
func adminHandshake(t *testing.T, e *wardentest.Env, sessions tls.ClientSessionCache) bool {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(e.Admin.Cert, e.Admin.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", e.Addr, &tls.Config{RootCAs: e.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"}, Certificates: []tls.Certificate{pair}, ClientSessionCache: sessions})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err != nil { // grpc's HTTP/2 settings frame
		t.Fatal(err)
	}
	return c.ConnectionState().DidResume
}

// checkAdminWorks makes an authenticated call: WhoAmI must reach the handler, so the status is not
// Unauthenticated or PermissionDenied (the handler may still be unimplemented in a partial build).
func checkAdminWorks(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	_, err := adminv1.NewAdminServiceClient(conn).WhoAmI(t.Context(), &adminv1.WhoAmIRequest{})
	if c := status.Code(err); c == codes.Unauthenticated || c == codes.PermissionDenied || c == codes.Unavailable {
		t.Fatalf("admin call refused: %v", err)
	}
}

// TestAnonymousRefusedButHealth calls one RPC of every service without a client certificate.
func TestAnonymousRefusedButHealth(t *testing.T) {
	env := wardentest.Start(t, wardentest.Options{})
	conn := env.AnonConn()
	ctx := t.Context()
	calls := map[string]func(context.Context) error{
		"cert": func(ctx context.Context) error {
			_, err := certv1.NewCertServiceClient(conn).ListNodes(ctx, &certv1.ListNodesRequest{})
			return err
		},
		"secret": func(ctx context.Context) error {
			_, err := secretv1.NewSecretServiceClient(conn).ListSecrets(ctx, &secretv1.ListSecretsRequest{})
			return err
		},
		"policy": func(ctx context.Context) error {
			_, err := policyv1.NewPolicyServiceClient(conn).GetPolicy(ctx, &policyv1.GetPolicyRequest{})
			return err
		},
		"mesh": func(ctx context.Context) error {
			_, err := meshv1.NewMeshServiceClient(conn).GetMeshStatus(ctx, &meshv1.GetMeshStatusRequest{})
			return err
		},
		"admin": func(ctx context.Context) error {
			_, err := adminv1.NewAdminServiceClient(conn).ListUsers(ctx, &adminv1.ListUsersRequest{})
			return err
		},
		"stream": func(ctx context.Context) error {
			s, err := secretv1.NewSecretServiceClient(conn).WatchSecrets(ctx, &secretv1.WatchSecretsRequest{NodeId: "web-1"})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if c := status.Code(call(ctx)); c != codes.Unauthenticated {
				t.Fatalf("code = %v, want Unauthenticated", c)
			}
		})
	}
	for _, svc := range []string{"", "warden.cert.v1.CertService", "warden.secret.v1.SecretService", "warden.policy.v1.PolicyService", "warden.mesh.v1.MeshService", "warden.admin.v1.AdminService"} {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q = %v, %v; want SERVING", svc, resp, err)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// revocationBound is how long a revocation may take to reach the replica through its etcd watch.
const revocationBound = 10 * time.Second

// TestRevokedAdminRefusedAndReplaced revokes the bootstrap admin's certificate by serial, as an operator
// whose admin.key leaked would: connections with it are refused, and wardend writes a new pair at once.
func TestRevokedAdminRefusedAndReplaced(t *testing.T) {
	dir := t.TempDir()
	env := wardentest.Start(t, wardentest.Options{DataDir: dir})
	serial := leafSerial(t, mustRead(t, env.Admin.Cert))
	leaked, err := tls.LoadX509KeyPair(env.Admin.Cert, env.Admin.Key)
	if err != nil {
		t.Fatal(err)
	}
	admin := certv1.NewCertServiceClient(env.AdminConn())
	ids := recordedIdentities(t, admin)
	if ids[identity.AdminID(env.Config.TrustDomain, "admin").String()] != serial {
		t.Fatalf("ListCertificates = %v, want the admin certificate %s", ids, serial)
	}
	revoke(t, admin, serial)
	// The revocation reaches the replica's view through its etcd watch; until then a connection may
	// still get through. A fresh connection each time, so no TLS session is resumed.
	etcdtest.Eventually(t, revocationBound, func() bool {
		conn := env.Dial(&leaked)
		_, err := adminv1.NewAdminServiceClient(conn).WhoAmI(t.Context(), &adminv1.WhoAmIRequest{})
		_ = conn.Close()
		c := status.Code(err)
		return c == codes.Unauthenticated || c == codes.Unavailable
	}, "the revoked admin certificate to be refused")
	// admin.crt is replaced by a rename, so every read sees a whole certificate.
	var replaced string
	etcdtest.Eventually(t, revocationBound, func() bool {
		replaced = leafSerial(t, mustRead(t, env.Admin.Cert))
		return replaced != serial
	}, "a new admin certificate in the data dir")
	checkAdminWorks(t, env.AdminConn())
	env.Stop()

	// The replacement is valid, so the next start keeps it.
	again := wardentest.Start(t, wardentest.Options{DataDir: dir})
	if got := leafSerial(t, mustRead(t, again.Admin.Cert)); got != replaced {
		t.Fatalf("after a restart admin.crt is %s, want the replacement %s", got, replaced)
	}
	checkAdminWorks(t, again.AdminConn())
}

// TestRevokedServingCertReplaced revokes wardend's own serving certificate: agents would refuse it at
// their next handshake, so the replica must switch to a new one, signed by the same CA, at once.
func TestRevokedServingCertReplaced(t *testing.T) {
	env := wardentest.Start(t, wardentest.Options{})
	admin := certv1.NewCertServiceClient(env.AdminConn())
	cp := identity.ControlPlaneID(env.Config.TrustDomain).String()
	serial := servedSerial(t, env)
	if got := recordedIdentities(t, admin)[cp]; got != serial {
		t.Fatalf("ListCertificates names serving certificate %q, wardend serves %s", got, serial)
	}
	revoke(t, admin, serial)
	var now string
	etcdtest.Eventually(t, revocationBound, func() bool {
		now = servedSerial(t, env)
		return now != serial
	}, "a new serving certificate")
	if got := recordedIdentities(t, admin)[cp]; got != now {
		t.Fatalf("ListCertificates names serving certificate %q, wardend serves %s", got, now)
	}
	checkAdminWorks(t, env.AdminConn())
}

// servedSerial is the serial of the certificate wardend presents, verified against the trust bundle.
func servedSerial(t *testing.T, env *wardentest.Env) string {
	t.Helper()
	// No session cache: a full handshake, so the certificate is the one served now.
	conn, err := tls.Dial("tcp", env.Addr, &tls.Config{RootCAs: env.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return pki.Serial(conn.ConnectionState().PeerCertificates[0].SerialNumber)
}

// recordedIdentities maps the identities of ListCertificates to their newest serial.
func recordedIdentities(t *testing.T, c certv1.CertServiceClient) map[string]string {
	t.Helper()
	listed, err := c.ListCertificates(t.Context(), &certv1.ListCertificatesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	newest := map[string]time.Time{}
	for _, cert := range listed.GetCertificates() {
		id, nb := cert.GetSpiffeId(), cert.GetNotBefore().AsTime()
		if cert.GetRevokedAt() != nil || nb.Before(newest[id]) {
			continue
		}
		ids[id], newest[id] = cert.GetSerial(), nb
	}
	return ids
}

func revoke(t *testing.T, c certv1.CertServiceClient, serial string) {
	t.Helper()
	if _, err := c.RevokeCertificate(t.Context(), &certv1.RevokeCertificateRequest{Serial: serial, Reason: certv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE}); err != nil {
		t.Fatal(err)
	}
}

func leafSerial(t *testing.T, pemBytes []byte) string {
	t.Helper()
	certs, err := pki.ParseCertsPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return pki.Serial(certs[0].SerialNumber)
}
