package certsvc

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/pkitest"
)

func TestWatchCredentialsSnapshots(t *testing.T) {
	e := start(t, func(c *Config) { c.Heartbeat = 300 * time.Millisecond })
	ctx := t.Context()
	admin := e.adminClient()
	web := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP, "web-1.example.com")
	web2 := e.bootstrapNode("web-2", certv1.NodeRole_NODE_ROLE_WEBAPP, "web-2.example.com")
	core := e.bootstrapNode("core-1", certv1.NodeRole_NODE_ROLE_COREAPP, "core-1.example.com")
	watch := func(n *node, last int64) certv1.CertService_WatchCredentialsClient {
		s, err := e.nodeClient(n).WatchCredentials(ctx, &certv1.WatchCredentialsRequest{NodeId: n.id, LastVersion: last})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	webS, web2S, coreS := watch(web, 0), watch(web2, 0), watch(core, 0)
	first := recvUntil(t, webS, func(*certv1.WatchCredentialsResponse) bool { return true })
	recvUntil(t, coreS, func(*certv1.WatchCredentialsResponse) bool { return true })
	recvUntil(t, web2S, func(*certv1.WatchCredentialsResponse) bool { return true })

	t.Run("required kinds per role", func(t *testing.T) {
		var kinds []string
		for _, r := range first.GetRequired() {
			kinds = append(kinds, r.GetKind().String())
			if r.GetRenewFraction() != DefaultRenewFraction || r.GetKeyType() != certv1.KeyType_KEY_TYPE_ECDSA_P256 || r.GetExternal() {
				t.Fatalf("required %v", r)
			}
			if r.GetKind() == certv1.CertKind_CERT_KIND_WEBAPP_HTTPS && (len(r.GetDnsNames()) != 1 || r.GetLifetime().AsDuration() != DefaultServerLifetime) {
				t.Fatalf("HTTPS requirement %v", r)
			}
		}
		if got := strings.Join(kinds, ","); got != "CERT_KIND_IDENTITY,CERT_KIND_WEBAPP_HTTPS,CERT_KIND_DB_CLIENT" {
			t.Fatalf("webapp kinds %s", got)
		}
	})

	t.Run("heartbeat repeats the snapshot", func(t *testing.T) {
		hb := recvUntil(t, webS, func(m *certv1.WatchCredentialsResponse) bool { return m.GetHeartbeat() })
		if hb.GetVersion() != first.GetVersion() || !hb.GetServerTime().AsTime().After(first.GetServerTime().AsTime()) {
			t.Fatalf("heartbeat version %d (want %d), time %v", hb.GetVersion(), first.GetVersion(), hb.GetServerTime().AsTime())
		}
	})

	dbBundle := string(pki.EncodeCertsPEM(must(pkitest.CA(t, "DB CA", pki.KeyECDSAP256, nil, nil))))
	hookBundle := string(pki.EncodeCertsPEM(must(pkitest.CA(t, "Hook CA", pki.KeyECDSAP256, nil, nil))))
	extPEM, extLeaf := pkitest.ExternalBundle(t, []string{"www.example.com"}, time.Now().Add(90*24*time.Hour), nil)
	if _, err := admin.SetDatabaseCA(ctx, &certv1.SetDatabaseCARequest{BundlePem: dbBundle}); err != nil {
		t.Fatal(err)
	}
	hook, err := admin.AddWebhookCA(ctx, &certv1.AddWebhookCARequest{Name: "hooks", BundlePem: hookBundle})
	if err != nil {
		t.Fatal(err)
	}
	up, err := admin.UploadExternalCertificate(ctx, &certv1.UploadExternalCertificateRequest{BundlePem: extPEM})
	if err != nil {
		t.Fatal(err)
	}
	if up.GetCertificate().GetFingerprint() != pki.Fingerprint(extLeaf) || up.GetCertificate().GetNodeId() != "" {
		t.Fatalf("upload: %v", up.GetCertificate())
	}
	raw := e.dump(prefExt)
	for k, v := range raw {
		if strings.Contains(v, "PRIVATE KEY") {
			t.Fatalf("%s holds the external key in plaintext", k)
		}
	}

	t.Run("webapp gets the external certificate with its key, the DB CA, no webhook CAs", func(t *testing.T) {
		snap := recvUntil(t, webS, func(m *certv1.WatchCredentialsResponse) bool {
			return m.GetExternal() != nil && m.GetDatabaseCaPem() != ""
		})
		if !strings.Contains(snap.GetExternal().GetKeyPem(), "PRIVATE KEY") || snap.GetExternal().GetFingerprint() != pki.Fingerprint(extLeaf) {
			t.Fatalf("external credential %v", snap.GetExternal().GetFingerprint())
		}
		if snap.GetWebhookCaBundlePem() != "" || snap.GetVersion() <= first.GetVersion() {
			t.Fatalf("webapp snapshot: webhook %q, version %d after %d", snap.GetWebhookCaBundlePem(), snap.GetVersion(), first.GetVersion())
		}
		for _, r := range snap.GetRequired() {
			if r.GetKind() == certv1.CertKind_CERT_KIND_WEBAPP_HTTPS && !r.GetExternal() {
				t.Fatal("HTTPS requirement not marked external")
			}
		}
	})
	t.Run("coreapp gets webhook CAs and the DB CA, never an external key", func(t *testing.T) {
		snap := recvUntil(t, coreS, func(m *certv1.WatchCredentialsResponse) bool {
			return m.GetWebhookCaBundlePem() != "" && m.GetDatabaseCaPem() != ""
		})
		if snap.GetExternal() != nil || !equalPEM(snap.GetWebhookCaBundlePem(), hookBundle) || !equalPEM(snap.GetDatabaseCaPem(), dbBundle) {
			t.Fatalf("coreapp snapshot: external %v", snap.GetExternal())
		}
	})
	t.Run("a node's own external certificate wins over the deployment-wide one", func(t *testing.T) {
		own, ownLeaf := pkitest.ExternalBundle(t, []string{"web-2.example.com"}, time.Now().Add(30*24*time.Hour), nil)
		if _, err := admin.UploadExternalCertificate(ctx, &certv1.UploadExternalCertificateRequest{NodeId: web2.id, BundlePem: own}); err != nil {
			t.Fatal(err)
		}
		recvUntil(t, web2S, func(m *certv1.WatchCredentialsResponse) bool {
			return m.GetExternal().GetFingerprint() == pki.Fingerprint(ownLeaf)
		})
		list, err := admin.ListExternalCertificates(ctx, &certv1.ListExternalCertificatesRequest{})
		if err != nil || len(list.GetCertificates()) != 2 {
			t.Fatalf("list: %v %v", list, err)
		}
		if _, err := admin.DeleteExternalCertificate(ctx, &certv1.DeleteExternalCertificateRequest{NodeId: web2.id}); err != nil {
			t.Fatal(err)
		}
		recvUntil(t, web2S, func(m *certv1.WatchCredentialsResponse) bool {
			return m.GetExternal().GetFingerprint() == pki.Fingerprint(extLeaf)
		})
	})
	t.Run("removals are pushed", func(t *testing.T) {
		if _, err := admin.DeleteWebhookCA(ctx, &certv1.DeleteWebhookCARequest{Name: "hooks", ExpectedVersion: hook.GetWebhookCa().GetVersion()}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.SetDatabaseCA(ctx, &certv1.SetDatabaseCARequest{}); err != nil {
			t.Fatal(err)
		}
		recvUntil(t, coreS, func(m *certv1.WatchCredentialsResponse) bool {
			return m.GetWebhookCaBundlePem() == "" && m.GetDatabaseCaPem() == ""
		})
		got, err := admin.GetDatabaseCA(ctx, &certv1.GetDatabaseCARequest{})
		if err != nil || got.GetBundlePem() != "" {
			t.Fatalf("DB CA after removal: %v %v", got, err)
		}
	})
	t.Run("resubscribing with the last version gets nothing stale", func(t *testing.T) {
		snap := recvUntil(t, coreS, func(*certv1.WatchCredentialsResponse) bool { return true })
		again := watch(core, snap.GetVersion())
		next := recvUntil(t, again, func(*certv1.WatchCredentialsResponse) bool { return true })
		if !next.GetHeartbeat() {
			t.Fatalf("a snapshot at the version the node holds was sent again as news: %d", next.GetVersion())
		}
	})
	t.Run("ack is shown on the node", func(t *testing.T) {
		if _, err := e.nodeClient(core).AckCredentials(ctx, &certv1.AckCredentialsRequest{NodeId: core.id, Version: 77, Error: "disk full"}); err != nil {
			t.Fatal(err)
		}
		got, err := admin.GetNode(ctx, &certv1.GetNodeRequest{NodeId: core.id})
		if err != nil || got.GetNode().GetAckedVersion() != 77 || got.GetNode().GetAckedAt() == nil {
			t.Fatalf("node after ack: %v %v", got, err)
		}
		list, err := admin.ListNodes(ctx, &certv1.ListNodesRequest{Role: certv1.NodeRole_NODE_ROLE_COREAPP})
		if err != nil || len(list.GetNodes()) != 1 || list.GetNodes()[0].GetNodeId() != core.id {
			t.Fatalf("coreapp list: %v %v", list, err)
		}
	})
	t.Run("decommissioned node's stream ends", func(t *testing.T) {
		dec, err := admin.DecommissionNode(ctx, &certv1.DecommissionNodeRequest{NodeId: web.id, Reason: "host retired"})
		if err != nil {
			t.Fatal(err)
		}
		if len(dec.GetRevokedSerials()) != 1 || dec.GetRevokedSerials()[0] != web.cert.Leaf.SerialNumber.Text(16) {
			t.Fatalf("revoked %v", dec.GetRevokedSerials())
		}
		for {
			_, err := webS.Recv()
			if err == nil {
				continue
			}
			if c := status.Code(err); c != codes.NotFound && c != codes.PermissionDenied && c != codes.Unauthenticated {
				t.Fatalf("stream ended with %v", err)
			}
			break
		}
		if left := e.dump(prefCurrent + web.id + "/"); len(left) != 0 {
			t.Fatalf("current certificates left: %v", left)
		}
		_, err = admin.GetNode(ctx, &certv1.GetNodeRequest{NodeId: web.id})
		wantCode(t, err, codes.NotFound)
	})
}

func must[A, B any](a A, _ B) A { return a }
