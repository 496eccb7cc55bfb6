package certsvc

import (
	"crypto"
	"crypto/x509"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/pkitest"
)

func TestUploadedIntermediateCA(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	admin := e.adminClient()
	root, rootKey := pkitest.CA(t, "Operator Offline Root", pki.KeyECDSAP384, nil, nil)
	inter, interKey := pkitest.CA(t, "Operator Warden Intermediate", pki.KeyECDSAP256, root, rootKey)
	// A registered node that has not bootstrapped does not hold up the rotation.
	e.createNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP, "web-1.example.com")

	prep, err := admin.PrepareCA(ctx, &certv1.PrepareCARequest{Upload: &certv1.UploadedCA{
		CertPem: string(pki.EncodeCertsPEM(inter)), KeyPem: pkitest.KeyPEM(t, interKey), ChainPem: string(pki.EncodeCertsPEM(root)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if prep.GetPhase() != certv1.CAPhase_CA_PHASE_PREPARED || prep.GetCa().GetSource() != certv1.CASource_CA_SOURCE_UPLOADED_INTERMEDIATE ||
		prep.GetCa().GetId() != pki.Fingerprint(inter) || prep.GetCa().GetState() != certv1.CAState_CA_STATE_PREPARED {
		t.Fatalf("PrepareCA: %v", prep)
	}
	bundle, err := admin.GetTrustBundle(ctx, &certv1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if fps := bundleFingerprints(t, bundle.GetTrustBundlePem()); len(fps) != 2 || !strings.Contains(strings.Join(fps, ","), pki.Fingerprint(root)) {
		t.Fatalf("trust bundle during rotation holds %v, want the old root and the offline root", fps)
	}
	if strings.Contains(bundle.GetTrustBundlePem(), string(pki.EncodeCertsPEM(inter))) {
		t.Fatal("the intermediate is in the trust bundle; only roots belong there")
	}
	act, err := admin.ActivateCA(ctx, &certv1.ActivateCARequest{ExpectedVersion: prep.GetVersion()})
	if err != nil {
		t.Fatal(err)
	}
	if act.GetCa().GetId() != pki.Fingerprint(inter) || act.GetCa().GetState() != certv1.CAState_CA_STATE_ACTIVE {
		t.Fatalf("ActivateCA: %v", act.GetCa())
	}

	offline := x509.NewCertPool()
	offline.AddCert(root)
	tok, err := admin.CreateJoinToken(ctx, &certv1.CreateJoinTokenRequest{NodeId: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.GetCaFingerprint() != pki.Fingerprint(root) {
		t.Fatalf("pinned fingerprint %s, want the offline root's", tok.GetCaFingerprint())
	}
	key, csr := newCSR(t, pki.DefaultKeyType, "web-1")
	boot, err := e.anonClient().Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: tok.GetJoinToken(), CsrPem: csr})
	if err != nil {
		t.Fatal(err)
	}
	leaf := verifyChain(t, boot.GetCertificatePem(), offline, x509.ExtKeyUsageClientAuth)
	if err := leaf.CheckSignatureFrom(inter); err != nil {
		t.Fatalf("identity not signed by the intermediate: %v", err)
	}
	web := &node{id: "web-1", role: certv1.NodeRole_NODE_ROLE_WEBAPP, key: key, cert: tlsCert(t, key, []byte(boot.GetCertificatePem()))}
	_, httpsCSR := newCSR(t, pki.KeyRSA2048, "web-1")
	https, err := e.nodeClient(web).IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: "web-1", Kind: certv1.CertKind_CERT_KIND_WEBAPP_HTTPS, CsrPem: httpsCSR})
	if err != nil {
		t.Fatalf("node issuing with an identity from the uploaded CA: %v", err)
	}
	verifyChain(t, https.GetCertificate().GetCertificatePem(), offline, x509.ExtKeyUsageServerAuth)

	crl, err := admin.GetCRL(ctx, &certv1.GetCRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// During the rotation each trusted CA signs a CRL of its own, the issuer's first.
	crls, err := pki.ParseCRLs([]byte(crl.GetCrlPem()))
	if err != nil || len(crls) != 2 {
		t.Fatalf("%d CRLs during the rotation (%v), want 2", len(crls), err)
	}
	if err := crls[0].CheckSignatureFrom(inter); err != nil {
		t.Fatalf("first CRL not signed by the new issuer: %v", err)
	}
}

func TestPrepareCAWithoutNodesActivatesAtOnce(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	admin := e.adminClient()
	root, rootKey := pkitest.CA(t, "Operator Root", pki.KeyRSA3072, nil, nil)
	prep, err := admin.PrepareCA(ctx, &certv1.PrepareCARequest{Upload: &certv1.UploadedCA{CertPem: string(pki.EncodeCertsPEM(root)), KeyPem: pkitest.KeyPEM(t, rootKey)}})
	if err != nil {
		t.Fatal(err)
	}
	if prep.GetPhase() != certv1.CAPhase_CA_PHASE_ACTIVATED || prep.GetCa().GetState() != certv1.CAState_CA_STATE_ACTIVE || prep.GetCa().GetSource() != certv1.CASource_CA_SOURCE_UPLOADED_ROOT {
		t.Fatalf("PrepareCA with no node: %v", prep)
	}
	_, err = admin.PrepareCA(ctx, &certv1.PrepareCARequest{})
	wantCode(t, err, codes.FailedPrecondition)
	ret, err := admin.RetireCA(ctx, &certv1.RetireCARequest{})
	if err != nil {
		t.Fatalf("RetireCA with no node certificate from the old CA: %v", err)
	}
	st, err := admin.GetCAStatus(ctx, &certv1.GetCAStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetPhase() != certv1.CAPhase_CA_PHASE_STABLE || len(st.GetCas()) != 1 || st.GetCas()[0].GetId() != pki.Fingerprint(root) || ret.GetRetired().GetId() == st.GetCas()[0].GetId() {
		t.Fatalf("after retire: %v", st)
	}
	if _, err := e.st.Get(ctx, keyCAKey(ret.GetRetired().GetId())); err == nil {
		t.Fatal("the retired CA's sealed key is still stored")
	}
}

// TestStagedRotationLiveConnection runs a full rotation while a node keeps calling over the mTLS
// connection it opened with its identity from the old CA; no call may fail.
func TestStagedRotationLiveConnection(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	admin := e.adminClient()
	web := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP, "web-1.example.com")
	conn := e.nodeClient(web)

	stream, err := conn.WatchCredentials(ctx, &certv1.WatchCredentialsRequest{NodeId: web.id})
	if err != nil {
		t.Fatal(err)
	}
	ack := func(snap *certv1.WatchCredentialsResponse, held *x509.Certificate) {
		t.Helper()
		_, err := conn.AckCredentials(ctx, &certv1.AckCredentialsRequest{NodeId: web.id, Version: snap.GetVersion(),
			TrustedFingerprints: bundleFingerprints(t, snap.GetTrustBundlePem()),
			Held:                []*certv1.HeldCertificate{{Kind: certv1.CertKind_CERT_KIND_IDENTITY, Serial: held.SerialNumber.Text(16)}}})
		if err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	identityCurrent := func(snap *certv1.WatchCredentialsResponse) *certv1.Certificate {
		for _, r := range snap.GetRequired() {
			if r.GetKind() == certv1.CertKind_CERT_KIND_IDENTITY {
				return r.GetCurrent()
			}
		}
		return nil
	}
	snap := recvUntil(t, stream, func(*certv1.WatchCredentialsResponse) bool { return true })
	ack(snap, web.cert.Leaf)

	var calls, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			for _, call := range []func() error{
				func() error { _, err := conn.GetTrustBundle(ctx, &certv1.GetTrustBundleRequest{}); return err },
				func() error { _, err := conn.GetNode(ctx, &certv1.GetNodeRequest{NodeId: web.id}); return err },
				func() error { _, err := conn.GetCRL(ctx, &certv1.GetCRLRequest{}); return err },
			} {
				calls.Add(1)
				if err := call(); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}
	})

	prep, err := admin.PrepareCA(ctx, &certv1.PrepareCARequest{})
	if err != nil {
		t.Fatal(err)
	}
	if prep.GetPhase() != certv1.CAPhase_CA_PHASE_PREPARED {
		t.Fatalf("phase %v with a node registered, want PREPARED", prep.GetPhase())
	}
	newID := prep.GetCa().GetId()

	_, err = admin.ActivateCA(ctx, &certv1.ActivateCARequest{})
	wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(err.Error(), web.id) {
		t.Fatalf("refusal does not name the lagging node: %v", err)
	}
	status, err := admin.GetCAStatus(ctx, &certv1.GetCAStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(status.GetLagging()) != 1 || status.GetLagging()[0].GetNodeId() != web.id {
		t.Fatalf("lagging %v, want %s", status.GetLagging(), web.id)
	}

	// The agent applies the bundle with both roots and acknowledges it.
	snap = recvUntil(t, stream, func(m *certv1.WatchCredentialsResponse) bool {
		return len(bundleFingerprints(t, m.GetTrustBundlePem())) == 2
	})
	ack(snap, web.cert.Leaf)
	e.trust([]byte(snap.GetTrustBundlePem()))
	if _, err := admin.ActivateCA(ctx, &certv1.ActivateCARequest{ExpectedVersion: status.GetVersion()}); err != nil {
		t.Fatalf("ActivateCA after the ack: %v", err)
	}
	// wardend renews its serving certificate from the new issuer.
	e.renewServing()

	// The old identity is no longer "current": the agent must re-issue.
	snap = recvUntil(t, stream, func(m *certv1.WatchCredentialsResponse) bool { return identityCurrent(m) == nil })
	_, err = admin.RetireCA(ctx, &certv1.RetireCARequest{})
	wantCode(t, err, codes.FailedPrecondition)
	status, err = admin.GetCAStatus(ctx, &certv1.GetCAStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if status.GetPhase() != certv1.CAPhase_CA_PHASE_ACTIVATED || len(status.GetLagging()) != 1 ||
		!status.GetRetireAfter().AsTime().Equal(web.cert.Leaf.NotAfter) {
		t.Fatalf("status after activation: %v", status)
	}

	key, csr := newCSR(t, pki.DefaultKeyType, web.id)
	reissued, err := conn.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: web.id, Kind: certv1.CertKind_CERT_KIND_IDENTITY, CsrPem: csr})
	if err != nil {
		t.Fatalf("re-issue over the old identity: %v", err)
	}
	if reissued.GetCertificate().GetIssuerId() != newID {
		t.Fatalf("re-issued by %s, want the new CA %s", reissued.GetCertificate().GetIssuerId(), newID)
	}
	newCert := tlsCert(t, key, []byte(reissued.GetCertificate().GetCertificatePem()))
	snap = recvUntil(t, stream, func(m *certv1.WatchCredentialsResponse) bool {
		return identityCurrent(m).GetSerial() == reissued.GetCertificate().GetSerial()
	})
	ack(snap, newCert.Leaf)

	ret, err := admin.RetireCA(ctx, &certv1.RetireCARequest{})
	if err != nil {
		t.Fatalf("RetireCA once the node re-issued: %v", err)
	}
	if ret.GetRetired().GetId() == newID {
		t.Fatal("retired the new CA")
	}
	snap = recvUntil(t, stream, func(m *certv1.WatchCredentialsResponse) bool {
		return len(bundleFingerprints(t, m.GetTrustBundlePem())) == 1
	})
	newRoots := bundlePool(t, snap.GetTrustBundlePem())
	verifyChain(t, reissued.GetCertificate().GetCertificatePem(), newRoots, x509.ExtKeyUsageClientAuth)

	// A new connection with the new identity works; the old identity can no longer connect.
	fresh := &node{id: web.id, role: web.role, key: key, cert: newCert}
	if _, err := e.nodeClient(fresh).GetNode(ctx, &certv1.GetNodeRequest{NodeId: web.id}); err != nil {
		t.Fatalf("new identity on a new connection: %v", err)
	}
	if _, err := e.nodeClient(web).GetNode(ctx, &certv1.GetNodeRequest{NodeId: web.id}); err == nil {
		t.Fatal("an identity from the retired CA still connects")
	}

	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d calls over the live connection failed; first: %v", failures.Load(), calls.Load(), firstErr.Load())
	}
	if calls.Load() < 10 {
		t.Fatalf("only %d calls ran during the rotation", calls.Load())
	}
}

// TestChainsUnderTwoIntermediates activates an issuing CA two levels below the operator's root (root →
// policy CA → issuing CA): a node's certificate and wardend's own must both carry every intermediate,
// since peers hold only the root.
func TestChainsUnderTwoIntermediates(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	admin := e.adminClient()
	upload := func(issuing, policy, root *x509.Certificate, key crypto.Signer) (*certv1.PrepareCAResponse, error) {
		return admin.PrepareCA(ctx, &certv1.PrepareCARequest{Upload: &certv1.UploadedCA{
			CertPem: string(pki.EncodeCertsPEM(issuing)), KeyPem: pkitest.KeyPEM(t, key), ChainPem: string(pki.EncodeCertsPEM(policy, root)),
		}})
	}
	// A root that allows one CA below it cannot have an issuing CA two levels down: refused, since
	// nothing that CA signed would verify.
	tightRoot, tightKey := pkitest.CA(t, "Operator Root, pathlen 1", pki.KeyECDSAP384, nil, nil)
	tightPolicy, tightPolicyKey := pkitest.CAPathLen(t, "Operator Policy CA", pki.KeyECDSAP256, tightRoot, tightKey, -1)
	tightIssuing, tightIssuingKey := pkitest.CA(t, "Operator Warden Issuing CA", pki.KeyECDSAP256, tightPolicy, tightPolicyKey)
	_, err := upload(tightIssuing, tightPolicy, tightRoot, tightIssuingKey)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "chain_pem") || !strings.Contains(st.Message(), "pathLenConstraint") {
		t.Fatalf("PrepareCA under a too tight path length = %v, want InvalidArgument naming chain_pem", err)
	}

	root, rootKey := pkitest.CAPathLen(t, "Operator Root", pki.KeyECDSAP384, nil, nil, 2)
	policy, policyKey := pkitest.CAPathLen(t, "Operator Policy CA", pki.KeyECDSAP256, root, rootKey, 1)
	issuing, issuingKey := pkitest.CA(t, "Operator Warden Issuing CA", pki.KeyECDSAP256, policy, policyKey)
	// With a node registered, PrepareCA waits for ActivateCA, as in production.
	e.createNode("core-1", certv1.NodeRole_NODE_ROLE_COREAPP, "core-1.example.com")
	prep, err := upload(issuing, policy, root, issuingKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ActivateCA(ctx, &certv1.ActivateCARequest{ExpectedVersion: prep.GetVersion()}); err != nil {
		t.Fatal(err)
	}
	only := x509.NewCertPool()
	only.AddCert(root)

	_, csr := newCSR(t, pki.DefaultKeyType, "core-1")
	issued, err := admin.IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: "core-1", Kind: certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION, CsrPem: csr})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		t.Fatal(err)
	}
	local, err := e.auth.IssueLocal(ctx, identity.ControlPlaneID(testTD), key.Public(), pki.Template{Lifetime: time.Hour, Server: true, DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, pemText := range map[string]string{"node": issued.GetCertificate().GetCertificatePem(), "local": string(local)} {
		t.Run(name, func(t *testing.T) {
			leaf := verifyChain(t, pemText, only, x509.ExtKeyUsageServerAuth)
			if err := leaf.CheckSignatureFrom(issuing); err != nil {
				t.Fatalf("not signed by the issuing CA: %v", err)
			}
			if certs, _ := pki.ParseCertsPEM([]byte(pemText)); len(certs) != 3 {
				t.Fatalf("chain of %d certificates, want leaf, issuing CA and policy CA (the root stays out)", len(certs))
			}
		})
	}
}
