package certsvc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/pkitest"
)

// TestBadInputsChangeNothing sends every kind of bad request and checks both the status code and that
// the cert namespace in etcd is byte for byte what it was.
func TestBadInputsChangeNothing(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	admin := e.adminClient()
	web := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP, "web-1.example.com")
	core := e.bootstrapNode("core-1", certv1.NodeRole_NODE_ROLE_COREAPP, "core-1.example.com")
	fresh := e.createNode("web-new", certv1.NodeRole_NODE_ROLE_WEBAPP)
	webConn, coreConn, anon := e.nodeClient(web), e.nodeClient(core), e.anonClient()

	extPEM, extLeaf := pkitest.ExternalBundle(t, []string{"www.example.com"}, time.Now().Add(24*time.Hour), nil)
	ext, err := admin.UploadExternalCertificate(ctx, &certv1.UploadExternalCertificateRequest{BundlePem: extPEM})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := pki.GenerateKey(pki.DefaultKeyType)
	mismatched, _ := pkitest.ExternalBundle(t, []string{"www.example.com"}, time.Now().Add(24*time.Hour), otherKey)
	expired, _ := pkitest.ExternalBundle(t, []string{"www.example.com"}, time.Now().Add(-time.Hour), nil)
	caCert, caKey := pkitest.CA(t, "Hook CA", pki.KeyECDSAP256, nil, nil)
	hookPEM := string(pki.EncodeCertsPEM(caCert))
	hook, err := admin.AddWebhookCA(ctx, &certv1.AddWebhookCARequest{Name: "hooks", BundlePem: hookPEM})
	if err != nil {
		t.Fatal(err)
	}
	db, err := admin.SetDatabaseCA(ctx, &certv1.SetDatabaseCARequest{BundlePem: hookPEM})
	if err != nil {
		t.Fatal(err)
	}
	nodeVer, err := admin.GetNode(ctx, &certv1.GetNodeRequest{NodeId: web.id})
	if err != nil {
		t.Fatal(err)
	}
	caStatus, err := admin.GetCAStatus(ctx, &certv1.GetCAStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	inter, interKey := pkitest.CA(t, "Intermediate", pki.KeyECDSAP256, caCert, caKey)

	_, goodCSR := newCSR(t, pki.DefaultKeyType, "x")
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	p521DER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p521)
	p521CSR := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: p521DER}))
	block, _ := pem.Decode([]byte(goodCSR))
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-3] ^= 0xff
	tamperedCSR := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}))
	certAsCSR := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: extLeaf.Raw}))
	otherCA, err := pki.NewRootCA("other.domain", 365*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherTDCert, otherTDKey := string(pki.EncodeCertsPEM(otherCA.Cert)), pkitest.KeyPEM(t, otherCA.Signer)
	token := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	type call func(context.Context) error
	unary := func(f func() (any, error)) call {
		return func(context.Context) error { _, err := f(); return err }
	}
	cases := []struct {
		name string
		do   call
		want codes.Code
	}{
		// CreateNode
		{"node id with uppercase", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "Web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz"})
		}), codes.InvalidArgument},
		{"empty node id", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz"})
		}), codes.InvalidArgument},
		{"node id too long", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: strings.Repeat("a", 64), Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz"})
		}), codes.InvalidArgument},
		{"node id with slash", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "a/b", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz"})
		}), codes.InvalidArgument},
		{"role unspecified", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Zone: "dmz"})
		}), codes.InvalidArgument},
		{"role out of range", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Role: 9, Zone: "dmz"})
		}), codes.InvalidArgument},
		{"zone empty", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP})
		}), codes.InvalidArgument},
		{"wildcard address", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz", Addresses: []string{"*.example.com"}})
		}), codes.InvalidArgument},
		{"address with space", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz", Addresses: []string{"web 2.example.com"}})
		}), codes.InvalidArgument},
		{"uppercase address", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz", Addresses: []string{"WEB.example.com"}})
		}), codes.InvalidArgument},
		{"IPv6 with zone", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz", Addresses: []string{"fe80::1%eth0"}})
		}), codes.InvalidArgument},
		{"URL as address", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz", Addresses: []string{"https://web.example.com"}})
		}), codes.InvalidArgument},
		{"token TTL over 7 days", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz", TokenTtl: durationpb.New(8 * 24 * time.Hour)})
		}), codes.InvalidArgument},
		{"negative token TTL", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "dmz", TokenTtl: durationpb.New(-time.Second)})
		}), codes.InvalidArgument},
		{"duplicate node", unary(func() (any, error) {
			return admin.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: web.id, Role: certv1.NodeRole_NODE_ROLE_COREAPP, Zone: "dmz"})
		}), codes.AlreadyExists},
		// UpdateNode, tokens, decommission
		{"update with stale version", unary(func() (any, error) {
			return admin.UpdateNode(ctx, &certv1.UpdateNodeRequest{NodeId: web.id, Zone: "dmz", ExpectedVersion: nodeVer.GetNode().GetVersion() - 1})
		}), codes.FailedPrecondition},
		{"update with bad address", unary(func() (any, error) {
			return admin.UpdateNode(ctx, &certv1.UpdateNodeRequest{NodeId: web.id, Zone: "dmz", Addresses: []string{"-bad.example.com"}})
		}), codes.InvalidArgument},
		{"update unknown node", unary(func() (any, error) {
			return admin.UpdateNode(ctx, &certv1.UpdateNodeRequest{NodeId: "nope", Zone: "dmz"})
		}), codes.NotFound},
		{"join token for unknown node", unary(func() (any, error) {
			return admin.CreateJoinToken(ctx, &certv1.CreateJoinTokenRequest{NodeId: "nope"})
		}), codes.NotFound},
		{"decommission unknown node", unary(func() (any, error) {
			return admin.DecommissionNode(ctx, &certv1.DecommissionNodeRequest{NodeId: "nope"})
		}), codes.NotFound},
		{"get node with bad id", unary(func() (any, error) { return admin.GetNode(ctx, &certv1.GetNodeRequest{NodeId: "../x"}) }), codes.InvalidArgument},
		// Bootstrap with a good token and a bad CSR keeps the token.
		{"bootstrap with garbage CSR", unary(func() (any, error) {
			return anon.Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: fresh.GetJoinToken(), CsrPem: "hello"})
		}), codes.InvalidArgument},
		{"bootstrap with tampered CSR", unary(func() (any, error) {
			return anon.Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: fresh.GetJoinToken(), CsrPem: tamperedCSR})
		}), codes.InvalidArgument},
		{"bootstrap with P-521 CSR", unary(func() (any, error) {
			return anon.Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: fresh.GetJoinToken(), CsrPem: p521CSR})
		}), codes.InvalidArgument},
		{"bootstrap with a certificate instead of a CSR", unary(func() (any, error) {
			return anon.Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: fresh.GetJoinToken(), CsrPem: certAsCSR})
		}), codes.InvalidArgument},
		{"bootstrap with two CSRs", unary(func() (any, error) {
			return anon.Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: fresh.GetJoinToken(), CsrPem: goodCSR + goodCSR})
		}), codes.InvalidArgument},
		// IssueCertificate
		{"issue with garbage CSR", unary(func() (any, error) {
			return webConn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_IDENTITY, CsrPem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"})
		}), codes.InvalidArgument},
		{"issue with trailing data after the CSR", unary(func() (any, error) {
			return webConn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_IDENTITY, CsrPem: goodCSR + "junk"})
		}), codes.InvalidArgument},
		{"issue kind unspecified", unary(func() (any, error) {
			return webConn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, CsrPem: goodCSR})
		}), codes.InvalidArgument},
		{"issue unknown kind", unary(func() (any, error) {
			return webConn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: 42, CsrPem: goodCSR})
		}), codes.InvalidArgument},
		{"webapp asks for a coreapp kind", unary(func() (any, error) {
			return webConn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_COREAPP_CONTROL, CsrPem: goodCSR})
		}), codes.PermissionDenied},
		{"issue for unknown node", unary(func() (any, error) {
			return admin.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: "nope", Kind: certv1.CertKind_CERT_KIND_IDENTITY, CsrPem: goodCSR})
		}), codes.NotFound},
		// Revocation and certificates
		{"revoke non-hex serial", unary(func() (any, error) {
			return admin.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: "xyz"})
		}), codes.InvalidArgument},
		{"revoke empty serial", unary(func() (any, error) { return admin.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{}) }), codes.InvalidArgument},
		{"revoke over-long serial", unary(func() (any, error) {
			return admin.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: strings.Repeat("a", 41)})
		}), codes.InvalidArgument},
		{"revoke unknown serial", unary(func() (any, error) {
			return admin.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: "abcdef"})
		}), codes.NotFound},
		{"revoke with unknown reason", unary(func() (any, error) {
			return admin.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: web.cert.Leaf.SerialNumber.Text(16), Reason: 99})
		}), codes.InvalidArgument},
		{"get unknown certificate", unary(func() (any, error) {
			return admin.GetCertificate(ctx, &certv1.GetCertificateRequest{Serial: "01"})
		}), codes.NotFound},
		{"node reads another node's certificate", unary(func() (any, error) {
			return webConn.GetCertificate(ctx, &certv1.GetCertificateRequest{Serial: core.cert.Leaf.SerialNumber.Text(16)})
		}), codes.PermissionDenied},
		// External certificates
		{"external bundle with mismatched key", unary(func() (any, error) {
			return admin.UploadExternalCertificate(ctx, &certv1.UploadExternalCertificateRequest{NodeId: web.id, BundlePem: mismatched})
		}), codes.InvalidArgument},
		{"expired external certificate", unary(func() (any, error) {
			return admin.UploadExternalCertificate(ctx, &certv1.UploadExternalCertificateRequest{NodeId: web.id, BundlePem: expired})
		}), codes.InvalidArgument},
		{"external bundle without key", unary(func() (any, error) {
			return admin.UploadExternalCertificate(ctx, &certv1.UploadExternalCertificateRequest{BundlePem: string(pki.EncodeCertsPEM(extLeaf))})
		}), codes.InvalidArgument},
		{"external certificate for a coreapp", unary(func() (any, error) {
			return admin.UploadExternalCertificate(ctx, &certv1.UploadExternalCertificateRequest{NodeId: core.id, BundlePem: extPEM})
		}), codes.InvalidArgument},
		{"external certificate for unknown node", unary(func() (any, error) {
			return admin.UploadExternalCertificate(ctx, &certv1.UploadExternalCertificateRequest{NodeId: "nope", BundlePem: extPEM})
		}), codes.NotFound},
		{"external certificate with stale version", unary(func() (any, error) {
			return admin.UploadExternalCertificate(ctx, &certv1.UploadExternalCertificateRequest{BundlePem: extPEM, ExpectedVersion: ext.GetCertificate().GetVersion() - 1})
		}), codes.FailedPrecondition},
		{"delete external certificate with stale version", unary(func() (any, error) {
			return admin.DeleteExternalCertificate(ctx, &certv1.DeleteExternalCertificateRequest{ExpectedVersion: ext.GetCertificate().GetVersion() - 1})
		}), codes.FailedPrecondition},
		{"delete missing external certificate", unary(func() (any, error) {
			return admin.DeleteExternalCertificate(ctx, &certv1.DeleteExternalCertificateRequest{NodeId: web.id})
		}), codes.NotFound},
		// Webhook and database CAs
		{"webhook CA with bad name", unary(func() (any, error) {
			return admin.AddWebhookCA(ctx, &certv1.AddWebhookCARequest{Name: "My Hooks", BundlePem: hookPEM})
		}), codes.InvalidArgument},
		{"webhook CA that is a leaf", unary(func() (any, error) {
			return admin.AddWebhookCA(ctx, &certv1.AddWebhookCARequest{Name: "leaf", BundlePem: string(pki.EncodeCertsPEM(extLeaf))})
		}), codes.InvalidArgument},
		{"webhook CA that is not PEM", unary(func() (any, error) {
			return admin.AddWebhookCA(ctx, &certv1.AddWebhookCARequest{Name: "junk", BundlePem: "junk"})
		}), codes.InvalidArgument},
		{"webhook CA name taken", unary(func() (any, error) {
			return admin.AddWebhookCA(ctx, &certv1.AddWebhookCARequest{Name: "hooks", BundlePem: hookPEM})
		}), codes.AlreadyExists},
		{"webhook CA with stale version", unary(func() (any, error) {
			return admin.AddWebhookCA(ctx, &certv1.AddWebhookCARequest{Name: "hooks", BundlePem: hookPEM, ExpectedVersion: hook.GetWebhookCa().GetVersion() - 1})
		}), codes.FailedPrecondition},
		{"delete webhook CA with stale version", unary(func() (any, error) {
			return admin.DeleteWebhookCA(ctx, &certv1.DeleteWebhookCARequest{Name: "hooks", ExpectedVersion: hook.GetWebhookCa().GetVersion() - 1})
		}), codes.FailedPrecondition},
		{"delete missing webhook CA", unary(func() (any, error) {
			return admin.DeleteWebhookCA(ctx, &certv1.DeleteWebhookCARequest{Name: "nope"})
		}), codes.NotFound},
		{"database CA not PEM", unary(func() (any, error) {
			return admin.SetDatabaseCA(ctx, &certv1.SetDatabaseCARequest{BundlePem: "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"})
		}), codes.InvalidArgument},
		{"database CA with stale version", unary(func() (any, error) {
			return admin.SetDatabaseCA(ctx, &certv1.SetDatabaseCARequest{BundlePem: hookPEM, ExpectedVersion: db.GetVersion() - 1})
		}), codes.FailedPrecondition},
		{"database CA removal with stale version", unary(func() (any, error) {
			return admin.SetDatabaseCA(ctx, &certv1.SetDatabaseCARequest{ExpectedVersion: db.GetVersion() - 1})
		}), codes.FailedPrecondition},
		// CA lifecycle
		{"uploaded CA with mismatched key", unary(func() (any, error) {
			return admin.PrepareCA(ctx, &certv1.PrepareCARequest{Upload: &certv1.UploadedCA{CertPem: hookPEM, KeyPem: pkitest.KeyPEM(t, otherKey)}})
		}), codes.InvalidArgument},
		{"uploaded CA that is a leaf", unary(func() (any, error) {
			return admin.PrepareCA(ctx, &certv1.PrepareCARequest{Upload: &certv1.UploadedCA{CertPem: string(pki.EncodeCertsPEM(extLeaf)), KeyPem: pkitest.KeyPEM(t, otherKey)}})
		}), codes.InvalidArgument},
		{"uploaded intermediate without chain", unary(func() (any, error) {
			return admin.PrepareCA(ctx, &certv1.PrepareCARequest{Upload: &certv1.UploadedCA{CertPem: string(pki.EncodeCertsPEM(inter)), KeyPem: pkitest.KeyPEM(t, interKey)}})
		}), codes.InvalidArgument},
		{"uploaded CA of another trust domain", unary(func() (any, error) {
			return admin.PrepareCA(ctx, &certv1.PrepareCARequest{Upload: &certv1.UploadedCA{CertPem: otherTDCert, KeyPem: otherTDKey}})
		}), codes.InvalidArgument},
		{"uploaded CA with a validity", unary(func() (any, error) {
			return admin.PrepareCA(ctx, &certv1.PrepareCARequest{Upload: &certv1.UploadedCA{CertPem: hookPEM, KeyPem: pkitest.KeyPEM(t, caKey)}, Validity: durationpb.New(time.Hour * 24 * 400)})
		}), codes.InvalidArgument},
		{"generated CA valid one hour", unary(func() (any, error) {
			return admin.PrepareCA(ctx, &certv1.PrepareCARequest{Validity: durationpb.New(time.Hour)})
		}), codes.InvalidArgument},
		{"prepare with stale CA version", unary(func() (any, error) {
			return admin.PrepareCA(ctx, &certv1.PrepareCARequest{ExpectedVersion: caStatus.GetVersion() - 1})
		}), codes.FailedPrecondition},
		{"activate without a prepared CA", unary(func() (any, error) { return admin.ActivateCA(ctx, &certv1.ActivateCARequest{Force: true}) }), codes.FailedPrecondition},
		{"retire without a retiring CA", unary(func() (any, error) { return admin.RetireCA(ctx, &certv1.RetireCARequest{Force: true}) }), codes.FailedPrecondition},
		// Listing
		{"page token that is not base64", unary(func() (any, error) { return admin.ListNodes(ctx, &certv1.ListNodesRequest{PageToken: "%%%"}) }), codes.InvalidArgument},
		{"page token of another listing", unary(func() (any, error) {
			return admin.ListNodes(ctx, &certv1.ListNodesRequest{PageToken: token("certs/00")})
		}), codes.InvalidArgument},
		{"negative page size", unary(func() (any, error) { return admin.ListNodes(ctx, &certv1.ListNodesRequest{PageSize: -1}) }), codes.InvalidArgument},
		{"list certificates of an unknown kind", unary(func() (any, error) {
			return admin.ListCertificates(ctx, &certv1.ListCertificatesRequest{Kind: 17})
		}), codes.InvalidArgument},
		{"list certificates with negative window", unary(func() (any, error) {
			return admin.ListCertificates(ctx, &certv1.ListCertificatesRequest{ExpiringWithin: durationpb.New(-time.Hour)})
		}), codes.InvalidArgument},
		// Acks and streams
		{"ack with a bad fingerprint", unary(func() (any, error) {
			return coreConn.AckCredentials(ctx, &certv1.AckCredentialsRequest{NodeId: core.id, TrustedFingerprints: []string{"abc"}})
		}), codes.InvalidArgument},
		{"ack with a bad held serial", unary(func() (any, error) {
			return coreConn.AckCredentials(ctx, &certv1.AckCredentialsRequest{NodeId: core.id, Held: []*certv1.HeldCertificate{{Kind: certv1.CertKind_CERT_KIND_IDENTITY, Serial: "zz"}}})
		}), codes.InvalidArgument},
		{"ack for another node", unary(func() (any, error) {
			return coreConn.AckCredentials(ctx, &certv1.AckCredentialsRequest{NodeId: web.id})
		}), codes.PermissionDenied},
		{"watch another node", func(ctx context.Context) error {
			s, err := coreConn.WatchCredentials(ctx, &certv1.WatchCredentialsRequest{NodeId: web.id})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.PermissionDenied},
		{"watch with negative version", func(ctx context.Context) error {
			s, err := coreConn.WatchCredentials(ctx, &certv1.WatchCredentialsRequest{NodeId: core.id, LastVersion: -1})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.dump("")
			err := tc.do(ctx)
			wantCode(t, err, tc.want)
			if d := diffDumps(before, e.dump("")); len(d) != 0 {
				t.Fatalf("a refused request changed etcd: %v", d)
			}
		})
	}
	// The token survived every bad CSR.
	if _, err := anon.Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: fresh.GetJoinToken(), CsrPem: goodCSR}); err != nil {
		t.Fatalf("bootstrap after refused CSRs: %v", err)
	}
}
