package certsvc

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

func TestCRLJobResignsAndPrunes(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	admin := e.adminClient()
	web := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP)
	serial := web.cert.Leaf.SerialNumber.Text(16)
	rev, err := admin.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	again, err := admin.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: serial, Reason: certv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE})
	if err != nil || again.GetCrlNumber() != rev.GetCrlNumber() || again.GetCertificate().GetRevocationReason() != certv1.RevocationReason_REVOCATION_REASON_UNSPECIFIED {
		t.Fatalf("revoking twice: %v %v", again, err)
	}

	crlAt := func() *certv1.GetCRLResponse {
		got, err := admin.GetCRL(ctx, &certv1.GetCRLRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	t.Run("re-signed before next_update", func(t *testing.T) {
		first := crlAt()
		e.clock.Advance(13 * time.Hour)
		etcdtest.Eventually(t, 10*time.Second, func() bool { return crlAt().GetNumber() > first.GetNumber() }, "CRL re-signed past half its validity")
		next := crlAt()
		if !next.GetNextUpdate().AsTime().After(first.GetNextUpdate().AsTime()) {
			t.Fatal("next_update did not move")
		}
		if crl := onlyCRL(t, next.GetCrlPem()); len(crl.RevokedCertificateEntries) != 1 {
			t.Fatalf("CRL entries %v", crl.RevokedCertificateEntries)
		}
	})
	t.Run("expired entries pruned", func(t *testing.T) {
		e.clock.Advance(12 * time.Hour) // the identity (24h) has expired now
		etcdtest.Eventually(t, 10*time.Second, func() bool {
			crls, err := pki.ParseCRLs([]byte(crlAt().GetCrlPem()))
			return err == nil && len(crls) == 1 && len(crls[0].RevokedCertificateEntries) == 0
		}, "expired certificate pruned from the CRL")
		if len(e.dump(prefRevoked)) != 0 {
			t.Fatal("revoked/ keeps an expired certificate")
		}
		got, err := admin.GetCertificate(ctx, &certv1.GetCertificateRequest{Serial: serial})
		if err != nil || got.GetCertificate().GetSerial() != serial {
			t.Fatalf("certificate record after pruning: %v", err)
		}
	})
	t.Run("node list pages", func(t *testing.T) {
		for _, id := range []string{"a-1", "b-1", "c-1", "d-1"} {
			e.createNode(id, certv1.NodeRole_NODE_ROLE_COREAPP)
		}
		var ids []string
		req := &certv1.ListNodesRequest{PageSize: 2}
		for {
			page, err := admin.ListNodes(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range page.GetNodes() {
				ids = append(ids, n.GetNodeId())
			}
			if page.GetNextPageToken() == "" {
				break
			}
			req.PageToken = page.GetNextPageToken()
		}
		if got := len(ids); got != 5 || ids[0] != "a-1" || ids[4] != "web-1" {
			t.Fatalf("paged node ids %v", ids)
		}
		_, err := admin.ListNodes(ctx, &certv1.ListNodesRequest{PageToken: req.GetPageToken() + "x"})
		wantCode(t, err, codes.InvalidArgument)
	})
}
