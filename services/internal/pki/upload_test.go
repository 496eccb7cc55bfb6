package pki

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
)

// offlinePKI is an operator's hierarchy: an RSA root kept offline, a policy
// intermediate and the issuing intermediate handed to Warden.
type offlinePKI struct {
	root, policy, issuing        *x509.Certificate
	rootKeyPEM, issuingKeyPEM    []byte
	issuingCertPEM, chainPEM     []byte
	directIssuing                *x509.Certificate
	directIssuingKeyPEM, rootPEM []byte
}

func newOfflinePKI(t *testing.T) offlinePKI {
	t.Helper()
	root, rootKey := makeCert(t, certSpec{cn: "Offline Root", ca: true, key: testKey(t, KeyRSA3072), notAfter: testNow.Add(10 * 365 * 24 * time.Hour)})
	policy, policyKey := makeCert(t, certSpec{cn: "Policy CA", ca: true, key: testKey(t, KeyECDSAP384), parent: root, parentKey: rootKey})
	issuing, issuingKey := makeCert(t, certSpec{cn: "Issuing CA", ca: true, parent: policy, parentKey: policyKey})
	direct, directKey := makeCert(t, certSpec{cn: "Direct CA", ca: true, parent: root, parentKey: rootKey})
	return offlinePKI{
		root: root, policy: policy, issuing: issuing,
		rootKeyPEM:          mustKeyPEM(t, rootKey),
		issuingKeyPEM:       mustKeyPEM(t, issuingKey),
		issuingCertPEM:      EncodeCertsPEM(issuing),
		chainPEM:            EncodeCertsPEM(root, policy), // deliberately root first
		directIssuing:       direct,
		directIssuingKeyPEM: mustKeyPEM(t, directKey),
		rootPEM:             EncodeCertsPEM(root),
	}
}

func TestLoadUploadedCA(t *testing.T) {
	p := newOfflinePKI(t)
	tests := []struct {
		name               string
		cert, key, chain   []byte
		wantCert, wantRoot *x509.Certificate
		wantChain          []*x509.Certificate
	}{
		{"self-signed root", p.rootPEM, p.rootKeyPEM, nil, p.root, p.root, nil},
		{"intermediate under the root", EncodeCertsPEM(p.directIssuing), p.directIssuingKeyPEM, p.rootPEM, p.directIssuing, p.root, nil},
		{"intermediate two levels down", p.issuingCertPEM, p.issuingKeyPEM, p.chainPEM, p.issuing, p.root, []*x509.Certificate{p.policy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := LoadUploadedCA(tt.cert, tt.key, tt.chain, testNow)
			if err != nil {
				t.Fatalf("LoadUploadedCA: %v", err)
			}
			if !ca.Cert.Equal(tt.wantCert) {
				t.Fatalf("Cert = %q, want %q", ca.Cert.Subject, tt.wantCert.Subject)
			}
			if len(ca.Roots) != 1 || !ca.Roots[0].Equal(tt.wantRoot) {
				t.Fatalf("Roots = %d certs, want the offline root alone", len(ca.Roots))
			}
			if len(ca.Chain) != len(tt.wantChain) {
				t.Fatalf("Chain has %d certs, want %d", len(ca.Chain), len(tt.wantChain))
			}
			for i := range ca.Chain {
				if !ca.Chain[i].Equal(tt.wantChain[i]) {
					t.Fatalf("Chain[%d] = %q, want %q", i, ca.Chain[i].Subject, tt.wantChain[i].Subject)
				}
			}

			id := identity.NodeID("corp", identity.RoleCoreapp, "c1")
			leaf, _, err := ca.Issue(Template{ID: id, Lifetime: time.Hour, Client: true}, testKey(t, KeyECDSAP256).Public(), testNow)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			// Peers get the leaf plus Cert and Chain, and trust only Roots.
			opts := x509.VerifyOptions{
				Roots:         pool(ca.Roots...),
				Intermediates: pool(append([]*x509.Certificate{ca.Cert}, ca.Chain...)...),
				CurrentTime:   testNow,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}
			if _, err := leaf.Verify(opts); err != nil {
				t.Fatalf("issued leaf does not verify to the offline root: %v", err)
			}
			opts.Intermediates = nil
			if tt.wantCert != tt.wantRoot {
				if _, err := leaf.Verify(opts); err == nil {
					t.Fatal("leaf verified without its intermediates; the test proves nothing")
				}
			}
		})
	}
}

func TestLoadUploadedCARejects(t *testing.T) {
	p := newOfflinePKI(t)
	// Same name as the real root, different key: only the signature tells.
	otherRoot, _ := makeCert(t, certSpec{cn: "Offline Root", ca: true})
	expired, expiredKey := makeCert(t, certSpec{cn: "Expired CA", ca: true, notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Hour)})
	future, futureKey := makeCert(t, certSpec{cn: "Future CA", ca: true, notBefore: testNow.Add(time.Hour)})
	leaf, leafKey := makeCert(t, certSpec{cn: "Not a CA"})
	noSign, noSignKey := makeCert(t, certSpec{cn: "No CertSign", ca: true, keyUsage: x509.KeyUsageDigitalSignature})
	expiredRoot, expiredRootKey := makeCert(t, certSpec{cn: "Old Root", ca: true, notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Hour)})
	underExpired, underExpiredKey := makeCert(t, certSpec{cn: "Under Old Root", ca: true, parent: expiredRoot, parentKey: expiredRootKey})
	// Path length constraints that leave no room for the leaves the uploaded CA would issue.
	zeroRoot, zeroRootKey := makeCert(t, certSpec{cn: "Root", ca: true})
	zero, zeroKey := makeCert(t, certSpec{cn: "Policy CA, pathlen 0", ca: true, pathLen: new(0), parent: zeroRoot, parentKey: zeroRootKey})
	underZero, underZeroKey := makeCert(t, certSpec{cn: "Issuing CA under pathlen 0", ca: true, parent: zero, parentKey: zeroKey})
	oneRoot, oneRootKey := makeCert(t, certSpec{cn: "Root, pathlen 1", ca: true, pathLen: new(1)})
	oneInter, oneInterKey := makeCert(t, certSpec{cn: "Policy CA under pathlen 1", ca: true, parent: oneRoot, parentKey: oneRootKey})
	underOne, underOneKey := makeCert(t, certSpec{cn: "Issuing CA two below pathlen 1", ca: true, parent: oneInter, parentKey: oneInterKey})

	tests := []struct {
		name             string
		cert, key, chain []byte
		field, want      string
	}{
		{"mismatched key", p.issuingCertPEM, p.rootKeyPEM, p.chainPEM, "key_pem", "key does not match the CA certificate"},
		{"expired", EncodeCertsPEM(expired), mustKeyPEM(t, expiredKey), nil, "cert_pem", "expired at"},
		{"not yet valid", EncodeCertsPEM(future), mustKeyPEM(t, futureKey), nil, "cert_pem", "is not valid until"},
		{"not a CA", EncodeCertsPEM(leaf), mustKeyPEM(t, leafKey), nil, "cert_pem", "is not a CA"},
		{"no keyCertSign", EncodeCertsPEM(noSign), mustKeyPEM(t, noSignKey), nil, "cert_pem", "keyCertSign"},
		{"intermediate without chain", p.issuingCertPEM, p.issuingKeyPEM, nil, "chain_pem", "required"},
		{"chain without root", p.issuingCertPEM, p.issuingKeyPEM, EncodeCertsPEM(p.policy), "chain_pem", "does not include the self-signed root"},
		{"chain missing an intermediate", p.issuingCertPEM, p.issuingKeyPEM, p.rootPEM, "chain_pem", "does not verify"},
		{"chain to another root", p.issuingCertPEM, p.issuingKeyPEM, EncodeCertsPEM(otherRoot, p.policy), "chain_pem", "does not verify"},
		{"two roots in chain", p.issuingCertPEM, p.issuingKeyPEM, EncodeCertsPEM(p.root, otherRoot, p.policy), "chain_pem", "more than one self-signed root"},
		{"expired root", EncodeCertsPEM(underExpired), mustKeyPEM(t, underExpiredKey), EncodeCertsPEM(expiredRoot), "chain_pem", "does not verify"},
		{"chain given for a root", p.rootPEM, p.rootKeyPEM, p.rootPEM, "chain_pem", "must be empty"},
		{"policy CA allows no CA below it", EncodeCertsPEM(underZero), mustKeyPEM(t, underZeroKey), EncodeCertsPEM(zeroRoot, zero), "chain_pem", "allows 0 CA certificates below it"},
		{"root allows one level only", EncodeCertsPEM(underOne), mustKeyPEM(t, underOneKey), EncodeCertsPEM(oneRoot, oneInter), "chain_pem", "allows 1 CA certificates below it"},
		{"chain in cert_pem", append(p.issuingCertPEM, p.chainPEM...), p.issuingKeyPEM, nil, "cert_pem", "holds 3 certificates"},
		{"garbage cert", []byte("garbage"), p.rootKeyPEM, nil, "cert_pem", "unexpected data"},
		{"garbage key", p.rootPEM, []byte("garbage"), nil, "key_pem", "unexpected data"},
		{"garbage chain", p.issuingCertPEM, p.issuingKeyPEM, []byte("garbage"), "chain_pem", "unexpected data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := LoadUploadedCA(tt.cert, tt.key, tt.chain, testNow)
			if err == nil {
				t.Fatalf("LoadUploadedCA = %q, want error", ca.Cert.Subject)
			}
			requireInvalid(t, err, tt.field, tt.want)
		})
	}
}
