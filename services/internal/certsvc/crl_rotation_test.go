package certsvc

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/pki"
)

// errNoCRL is what a relying party that checks revocation says when no CRL of the certificate's issuer
// is at hand: it refuses the certificate.
var errNoCRL = errors.New("no CRL signed by the certificate's issuer")

// revocationStatus checks leaf the way OpenSSL, nginx's ssl_crl or a JVM's PKIX checker do: it takes
// the CRL whose issuer name is the leaf's and whose signature verifies with the leaf's issuer, and looks
// the serial up in it. It returns nil for a certificate that is not revoked.
func revocationStatus(t *testing.T, leaf *x509.Certificate, issuers []*x509.Certificate, crls []*x509.RevocationList) error {
	t.Helper()
	var issuer *x509.Certificate
	for _, c := range issuers {
		if bytes.Equal(c.RawSubject, leaf.RawIssuer) && leaf.CheckSignatureFrom(c) == nil {
			issuer = c
		}
	}
	if issuer == nil {
		t.Fatalf("no issuer of %s in the bundle", pki.Serial(leaf.SerialNumber))
	}
	for _, crl := range crls {
		if !bytes.Equal(crl.RawIssuer, leaf.RawIssuer) || crl.CheckSignatureFrom(issuer) != nil {
			continue
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				return errors.New("certificate revoked")
			}
		}
		return nil
	}
	return errNoCRL
}

// opensslVerify runs `openssl verify -crl_check` on leaf with the trust bundle and the CRL file the agent
// writes; it reports the outcome as openssl prints it. Skipped (empty, false) without openssl.
func opensslVerify(t *testing.T, bundle, crl string, leaf *x509.Certificate) (string, bool) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		return "", false
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	out, err := exec.CommandContext(t.Context(), bin, "verify", "-crl_check",
		"-CAfile", write("ca-bundle.crt", []byte(bundle)), "-CRLfile", write("crl.pem", []byte(crl)),
		write("leaf.pem", pki.EncodeCertsPEM(leaf))).CombinedOutput()
	if err == nil {
		return "OK", true
	}
	return strings.TrimSpace(string(out)), true
}

// TestCRLDuringCARotation: while a rotation keeps the old CA trusted, its certificates stay checkable
// against the published CRL by any standard relying party, revoked or not, as do the new CA's.
func TestCRLDuringCARotation(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	admin := e.adminClient()
	oldRevoked := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP)
	oldKept := e.bootstrapNode("web-2", certv1.NodeRole_NODE_ROLE_WEBAPP)
	if _, err := admin.PrepareCA(ctx, &certv1.PrepareCARequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ActivateCA(ctx, &certv1.ActivateCARequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	newRevoked := e.bootstrapNode("web-3", certv1.NodeRole_NODE_ROLE_WEBAPP)
	newKept := e.bootstrapNode("web-4", certv1.NodeRole_NODE_ROLE_WEBAPP)
	for _, n := range []*node{oldRevoked, newRevoked} {
		if _, err := admin.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: pki.Serial(n.cert.Leaf.SerialNumber)}); err != nil {
			t.Fatal(err)
		}
	}

	check := func(t *testing.T, want map[*node]string) {
		t.Helper()
		bundle, err := admin.GetTrustBundle(ctx, &certv1.GetTrustBundleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		crl, err := admin.GetCRL(ctx, &certv1.GetCRLRequest{})
		if err != nil {
			t.Fatal(err)
		}
		roots, err := pki.ParseCertsPEM([]byte(bundle.GetTrustBundlePem()))
		if err != nil {
			t.Fatal(err)
		}
		crls, err := pki.ParseCRLs([]byte(crl.GetCrlPem()))
		if err != nil {
			t.Fatal(err)
		}
		if len(crls) != len(roots) {
			t.Errorf("%d CRLs for %d trusted CAs", len(crls), len(roots))
		}
		for n, outcome := range want {
			got := "OK"
			if err := revocationStatus(t, n.cert.Leaf, roots, crls); err != nil {
				got = err.Error()
			}
			if got != outcome {
				t.Errorf("%s (issued by %s CA): %s, want %s", n.id, map[bool]string{true: "the old", false: "the new"}[n == oldRevoked || n == oldKept], got, outcome)
			}
			if out, ok := opensslVerify(t, bundle.GetTrustBundlePem(), crl.GetCrlPem(), n.cert.Leaf); ok && !strings.Contains(out, outcome) {
				t.Errorf("openssl verify -crl_check %s: %q, want %q", n.id, out, outcome)
			}
		}
	}
	t.Run("both CAs trusted", func(t *testing.T) {
		check(t, map[*node]string{oldRevoked: "certificate revoked", oldKept: "OK", newRevoked: "certificate revoked", newKept: "OK"})
	})
	t.Run("old CA retired", func(t *testing.T) {
		if _, err := admin.RetireCA(ctx, &certv1.RetireCARequest{Force: true}); err != nil {
			t.Fatal(err)
		}
		check(t, map[*node]string{newRevoked: "certificate revoked", newKept: "OK"})
	})
}
