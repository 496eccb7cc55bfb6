package wardend

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// adminLifetime is the life of the admin client certificate written on first start. It is renewed at
// start-up once less than a third is left.
const adminLifetime = 365 * 24 * time.Hour

// AdminFiles are the operator credentials in <data-dir>/admin, enough for
// `grpcurl -cacert ca.crt -cert admin.crt -key admin.key 127.0.0.1:7443 list`.
type AdminFiles struct {
	Dir, CA, Cert, Key string
}

// AdminFilesIn names the files under dataDir.
func AdminFilesIn(dataDir string) AdminFiles {
	dir := filepath.Join(dataDir, "admin")
	return AdminFiles{Dir: dir, CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "admin.crt"), Key: filepath.Join(dir, "admin.key")}
}

// ensureAdminFiles writes the admin credentials unless valid ones exist: same trust domain, chaining to
// the current trust bundle, not revoked, with more than a third of their life left, and ca.crt when it
// differs from the trust bundle (a CA rotation changes it). It runs at start-up and after every CA change
// and revocation, so a revoked admin certificate (a copy leaked) is replaced at once: the new key is
// where the old one was, readable only by whoever can read the data dir.
func ensureAdminFiles(ctx context.Context, auth *certsvc.Authority, pool *x509.CertPool, revoked func(serial string) bool, bundle []byte, f AdminFiles, name string, now time.Time) (bool, error) {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return false, fmt.Errorf("admin dir: %w", err)
	}
	// Compared first: a burst of revocations must not cost a disk sync each.
	if cur, err := os.ReadFile(f.CA); err != nil || !bytes.Equal(cur, bundle) {
		if err := materialize.WriteFile(f.CA, bundle, 0o644); err != nil {
			return false, err
		}
	}
	if adminFilesValid(f, pool, revoked, auth.TrustDomain(), now) {
		return false, nil
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		return false, err
	}
	certPEM, err := auth.IssueLocal(ctx, identity.AdminID(auth.TrustDomain(), name), key.Public(), pki.Template{Lifetime: adminLifetime, Client: true})
	if err != nil {
		return false, fmt.Errorf("admin certificate: %w", err)
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return false, err
	}
	if err := materialize.WriteFile(f.Key, keyPEM, 0o600); err != nil {
		return false, err
	}
	return true, materialize.WriteFile(f.Cert, certPEM, 0o644)
}

func adminFilesValid(f AdminFiles, pool *x509.CertPool, revoked func(string) bool, td string, now time.Time) bool {
	raw, err := os.ReadFile(f.Cert)
	if err != nil {
		return false
	}
	if _, err := os.Stat(f.Key); err != nil {
		return false
	}
	certs, err := pki.ParseCertsPEM(raw)
	if err != nil {
		return false
	}
	leaf := certs[0]
	if revoked(pki.Serial(leaf.SerialNumber)) {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return false
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil || id.TrustDomain != td || id.Kind != identity.KindAdmin {
		return false
	}
	return leaf.NotAfter.Sub(now) > leaf.NotAfter.Sub(leaf.NotBefore)/3
}
