package certsvc

import (
	"crypto/x509"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

func TestIssueCertificateKinds(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := start(t, func(c *Config) { c.Metrics = reg })
	ctx := t.Context()
	web := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP, "web-1.example.com", "10.0.0.1", "::ffff:10.0.0.2")
	core := e.bootstrapNode("core-1", certv1.NodeRole_NODE_ROLE_COREAPP, "core-1.example.com", "fd00::1")
	bundle, err := e.adminClient().GetTrustBundle(ctx, &certv1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	roots := bundlePool(t, bundle.GetTrustBundlePem())
	const day = 24 * time.Hour

	for _, tc := range []struct {
		name     string
		n        *node
		kind     certv1.CertKind
		kt       pki.KeyType
		server   bool
		client   bool
		dns, ips []string
		life     time.Duration
	}{
		{"webapp identity", web, certv1.CertKind_CERT_KIND_IDENTITY, pki.KeyEd25519, true, true, nil, nil, day},
		{"webapp https", web, certv1.CertKind_CERT_KIND_WEBAPP_HTTPS, pki.KeyRSA2048, true, false, []string{"web-1.example.com"}, []string{"10.0.0.1", "10.0.0.2"}, 30 * day},
		{"webapp db client", web, certv1.CertKind_CERT_KIND_DB_CLIENT, pki.KeyECDSAP384, false, true, nil, nil, 30 * day},
		{"coreapp communication", core, certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION, pki.KeyRSA3072, true, false, []string{"core-1.example.com"}, []string{"fd00::1"}, 30 * day},
		{"coreapp control", core, certv1.CertKind_CERT_KIND_COREAPP_CONTROL, pki.KeyECDSAP256, true, true, []string{"core-1.example.com"}, []string{"fd00::1"}, 30 * day},
		{"coreapp db client", core, certv1.CertKind_CERT_KIND_DB_CLIENT, pki.KeyECDSAP256, false, true, nil, nil, 30 * day},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := e.nodeClient(tc.n)
			_, csr := newCSR(t, tc.kt, "ignored-name")
			resp, err := conn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: tc.n.id, Kind: tc.kind, CsrPem: csr})
			if err != nil {
				t.Fatal(err)
			}
			leaf := verifyChain(t, resp.GetCertificate().GetCertificatePem(), roots, x509.ExtKeyUsageAny)
			id, err := identity.FromCertificate(leaf)
			if err != nil || id != identity.NodeID(testTD, roleOf(tc.n.role), tc.n.id) {
				t.Fatalf("URI SAN %v (%v), want the node's identity; the CSR's name must be ignored", id, err)
			}
			if !slices.Equal(leaf.DNSNames, tc.dns) {
				t.Fatalf("DNS SANs %v, want %v", leaf.DNSNames, tc.dns)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.ips) {
				t.Fatalf("IP SANs %v, want %v", ips, tc.ips)
			}
			if got := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth); got != tc.server {
				t.Fatalf("serverAuth %v, want %v", got, tc.server)
			}
			if got := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth); got != tc.client {
				t.Fatalf("clientAuth %v, want %v", got, tc.client)
			}
			life := leaf.NotAfter.Sub(leaf.NotBefore)
			if life < tc.life || life > tc.life+2*time.Minute {
				t.Fatalf("lifetime %s, want %s", life, tc.life)
			}
			renew := resp.GetRenewAfter().AsTime().Sub(leaf.NotBefore)
			lo := time.Duration(float64(life) * (DefaultRenewFraction - renewJitter))
			hi := time.Duration(float64(life) * (DefaultRenewFraction + renewJitter))
			if renew < lo-time.Second || renew > hi+time.Second {
				t.Fatalf("renew after %s of %s, want within [%s, %s]", renew, life, lo, hi)
			}
			if want := keyTypeToPB[tc.kt]; resp.GetCertificate().GetKeyType() != want {
				t.Fatalf("key type %v, want %v", resp.GetCertificate().GetKeyType(), want)
			}

			again, err := conn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: tc.n.id, Kind: tc.kind, CsrPem: csr})
			if err != nil {
				t.Fatal(err)
			}
			if again.GetCertificate().GetSerial() != resp.GetCertificate().GetSerial() || !again.GetRenewAfter().AsTime().Equal(resp.GetRenewAfter().AsTime()) {
				t.Fatal("the same request with the same key issued a new certificate")
			}
			_, other := newCSR(t, tc.kt, tc.n.id)
			fresh, err := conn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: tc.n.id, Kind: tc.kind, CsrPem: other})
			if err != nil {
				t.Fatal(err)
			}
			if fresh.GetCertificate().GetSerial() == resp.GetCertificate().GetSerial() {
				t.Fatal("a new key got the old certificate")
			}
			got, err := conn.GetCertificate(ctx, &certv1.GetCertificateRequest{Serial: fresh.GetCertificate().GetSerial()})
			if err != nil || got.GetCertificate().GetCertificatePem() != fresh.GetCertificate().GetCertificatePem() {
				t.Fatalf("node reading its own certificate: %v", err)
			}
		})
	}

	t.Run("updated addresses re-issue the server certificates", func(t *testing.T) {
		conn := e.nodeClient(web)
		_, csr := newCSR(t, pki.DefaultKeyType, web.id)
		before, err := conn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_WEBAPP_HTTPS, CsrPem: csr})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.adminClient().UpdateNode(ctx, &certv1.UpdateNodeRequest{NodeId: web.id, Zone: "dmz", Addresses: []string{"www.example.com"}}); err != nil {
			t.Fatal(err)
		}
		after, err := conn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_WEBAPP_HTTPS, CsrPem: csr})
		if err != nil {
			t.Fatal(err)
		}
		if after.GetCertificate().GetSerial() == before.GetCertificate().GetSerial() || !slices.Equal(after.GetCertificate().GetDnsNames(), []string{"www.example.com"}) {
			t.Fatalf("after UpdateNode: %v", after.GetCertificate())
		}
	})

	t.Run("expiry metric", func(t *testing.T) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		buckets := map[string]float64{} // kind/within → count
		for _, mf := range mfs {
			switch mf.GetName() {
			case "warden_cert_expiry_seconds":
				for _, m := range mf.GetMetric() {
					got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
				}
			case "warden_certs_expiring":
				for _, m := range mf.GetMetric() {
					labels := map[string]string{}
					for _, l := range m.GetLabel() {
						labels[l.GetName()] = l.GetValue()
					}
					buckets[labels["kind"]+"/"+labels["within"]] += m.GetGauge().GetValue()
				}
			}
		}
		if buckets[kindIdentity+"/1d"] < 1 || buckets[kindCoreappCtl+"/30d"] < 1 || buckets[kindIdentity+"/30d"] != 0 {
			t.Fatalf("expiry buckets %v: want identity certificates within 1d and control certificates within 30d", buckets)
		}
		if v := got[kindIdentity]; v < (23*time.Hour).Seconds() || v > (25*time.Hour).Seconds() {
			t.Fatalf("identity expiry %v s, want about a day; all: %v", v, got)
		}
		if v := got[kindCoreappCtl]; v < (29 * day).Seconds() {
			t.Fatalf("coreapp control expiry %v s, want about 30 days", v)
		}
	})

	t.Run("listing by node, kind and expiry", func(t *testing.T) {
		admin := e.adminClient()
		var all []*certv1.Certificate
		req := &certv1.ListCertificatesRequest{NodeId: core.id, PageSize: 2}
		for {
			page, err := admin.ListCertificates(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, page.GetCertificates()...)
			if page.GetNextPageToken() == "" {
				break
			}
			req.PageToken = page.GetNextPageToken()
		}
		// Bootstrap identity + two per kind above.
		if len(all) != 7 || !slices.IsSortedFunc(all, func(a, b *certv1.Certificate) int { return strings.Compare(a.GetSerial(), b.GetSerial()) }) {
			t.Fatalf("%d certificates of %s, want 7 sorted by serial", len(all), core.id)
		}
		for _, c := range all {
			if c.GetNodeId() != core.id {
				t.Fatalf("listed %s's certificate under %s", c.GetNodeId(), core.id)
			}
		}
		soon, err := admin.ListCertificates(ctx, &certv1.ListCertificatesRequest{ExpiringWithin: dur(2 * day)})
		if err != nil {
			t.Fatal(err)
		}
		// The harness's own serving and admin certificates (an hour, no node) are listed too.
		nodes, local := 0, 0
		for _, c := range soon.GetCertificates() {
			if c.GetKind() != certv1.CertKind_CERT_KIND_IDENTITY {
				t.Fatalf("a %v certificate expires within 2 days", c.GetKind())
			}
			if c.GetNodeId() == "" {
				local++
			} else {
				nodes++
			}
		}
		if nodes != 4 || local != 2 {
			t.Fatalf("%d node and %d local identity certificates expire within 2 days, want 4 (two bootstraps, two issued to web-1) and 2 (serving, admin)", nodes, local)
		}
		kind, err := admin.ListCertificates(ctx, &certv1.ListCertificatesRequest{Kind: certv1.CertKind_CERT_KIND_COREAPP_CONTROL})
		if err != nil {
			t.Fatal(err)
		}
		if len(kind.GetCertificates()) != 2 {
			t.Fatalf("%d control certificates, want 2", len(kind.GetCertificates()))
		}
		serial := kind.GetCertificates()[0].GetSerial()
		if _, err := admin.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: serial, Reason: certv1.RevocationReason_REVOCATION_REASON_SUPERSEDED}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			req  *certv1.ListCertificatesRequest
			want int
		}{
			{"revoked hidden", &certv1.ListCertificatesRequest{Kind: certv1.CertKind_CERT_KIND_COREAPP_CONTROL}, 1},
			{"revoked included", &certv1.ListCertificatesRequest{Kind: certv1.CertKind_CERT_KIND_COREAPP_CONTROL, IncludeRevoked: true}, 2},
			{"revoked only", &certv1.ListCertificatesRequest{RevokedOnly: true}, 1},
		} {
			got, err := admin.ListCertificates(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.GetCertificates()) != tc.want {
				t.Fatalf("%s: %d certificates, want %d", tc.name, len(got.GetCertificates()), tc.want)
			}
		}
	})
}

func TestIssueCertificateRoleChecks(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	web := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP, "web-1.example.com")
	core := e.bootstrapNode("core-1", certv1.NodeRole_NODE_ROLE_COREAPP)
	_, csr := newCSR(t, pki.DefaultKeyType, "x")
	for _, tc := range []struct {
		name string
		n    *node
		req  *certv1.IssueCertificateRequest
		want codes.Code
	}{
		{"webapp asks for coreapp control", web, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_COREAPP_CONTROL, CsrPem: csr}, codes.PermissionDenied},
		{"webapp asks for coreapp communication", web, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION, CsrPem: csr}, codes.PermissionDenied},
		{"coreapp asks for webapp https", core, &certv1.IssueCertificateRequest{NodeId: core.id, Kind: certv1.CertKind_CERT_KIND_WEBAPP_HTTPS, CsrPem: csr}, codes.PermissionDenied},
		{"webapp asks for another node", web, &certv1.IssueCertificateRequest{NodeId: core.id, Kind: certv1.CertKind_CERT_KIND_IDENTITY, CsrPem: csr}, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.dump(prefCerts)
			_, err := e.nodeClient(tc.n).IssueCertificate(ctx, tc.req)
			wantCode(t, err, tc.want)
			if d := diffDumps(before, e.dump(prefCerts)); len(d) != 0 {
				t.Fatalf("refused issuance changed etcd: %v", d)
			}
		})
	}
	t.Run("node reads another node's certificate", func(t *testing.T) {
		_, err := e.nodeClient(web).GetCertificate(ctx, &certv1.GetCertificateRequest{Serial: core.cert.Leaf.SerialNumber.Text(16)})
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("admin issues for a node", func(t *testing.T) {
		resp, err := e.adminClient().IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: core.id, Kind: certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION, CsrPem: csr})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetCertificate().GetDnsNames()) != 0 || len(resp.GetCertificate().GetIpAddresses()) != 0 {
			t.Fatalf("SANs of a node without addresses: %v", resp.GetCertificate())
		}
		_, err = e.adminClient().IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_COREAPP_CONTROL, CsrPem: csr})
		wantCode(t, err, codes.InvalidArgument)
	})
}

// TestConcurrentIssuanceForOneNode: issuance reads its inputs from the mirror and pins them with
// transaction conditions. Concurrent requests of one node for different keys must all get their own
// certificate (no conflict between them), and concurrent requests for the same key must all get the
// same one.
func TestConcurrentIssuanceForOneNode(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	web := e.bootstrapNode("web-burst", certv1.NodeRole_NODE_ROLE_WEBAPP, "web-burst.example")
	conn := e.nodeClient(web)
	const n = 12
	issue := func(csrs []string) []string {
		serials := make([]string, len(csrs))
		errs := make([]error, len(csrs))
		var wg sync.WaitGroup
		for i, csr := range csrs {
			wg.Go(func() {
				resp, err := conn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_DB_CLIENT, CsrPem: csr})
				serials[i], errs[i] = resp.GetCertificate().GetSerial(), err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		return serials
	}

	distinct := make([]string, n)
	for i := range distinct {
		_, distinct[i] = newCSR(t, pki.KeyECDSAP256, web.id)
	}
	serials := issue(distinct)
	if slices.Sort(serials); len(slices.Compact(slices.Clone(serials))) != n {
		t.Fatalf("%d requests with distinct keys got serials %v, want %d distinct", n, serials, n)
	}
	index := e.dump(prefNodeIdx + web.id + "/")
	for _, sn := range serials {
		if _, ok := index[Prefix+keyNodeCert(web.id, sn)]; !ok {
			t.Errorf("certificate %s is not in the node's index", sn)
		}
	}

	_, same := newCSR(t, pki.KeyECDSAP256, web.id)
	csrs := make([]string, n)
	for i := range csrs {
		csrs[i] = same
	}
	got := issue(csrs)
	if len(slices.Compact(got)) != 1 {
		t.Fatalf("%d requests with one key got serials %v, want one certificate", n, got)
	}
}
