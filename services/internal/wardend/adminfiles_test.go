package wardend

import (
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// TestAdminFilesValid: the admin files found at start-up are kept only while they would still work. A
// revoked certificate is the case of a revocation made by another replica while this one was down.
func TestAdminFilesValid(t *testing.T) {
	const td = "admin.test"
	now := time.Now()
	ca, err := pki.NewRootCA(td, 10*365*24*time.Hour, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	other, err := pki.NewRootCA(td, 10*365*24*time.Hour, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	notRevoked := func(string) bool { return false }

	tests := []struct {
		name    string
		ca      *pki.CA
		id      identity.ID
		life    time.Duration
		noKey   bool
		revoked func(string) bool
		at      time.Time
		want    bool
	}{
		{name: "fresh", want: true},
		{name: "revoked", revoked: func(string) bool { return true }},
		{name: "from a CA no longer trusted", ca: other},
		{name: "another trust domain", id: identity.AdminID("elsewhere.test", "admin")},
		{name: "not an admin identity", id: identity.ControlPlaneID(td)},
		{name: "key missing", noKey: true},
		{name: "less than a third of its life left", at: now.Add(adminLifetime * 3 / 4)},
		{name: "a third and more left", at: now.Add(adminLifetime / 2), want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			issuer, id, revoked, at := ca, identity.AdminID(td, "admin"), notRevoked, now
			if tc.ca != nil {
				issuer = tc.ca
			}
			if tc.id != (identity.ID{}) {
				id = tc.id
			}
			if tc.revoked != nil {
				revoked = tc.revoked
			}
			if !tc.at.IsZero() {
				at = tc.at
			}
			key, err := pki.GenerateKey(pki.DefaultKeyType)
			if err != nil {
				t.Fatal(err)
			}
			cert, _, err := issuer.Issue(pki.Template{ID: id, Lifetime: adminLifetime, Client: true}, key.Public(), now)
			if err != nil {
				t.Fatal(err)
			}
			f := AdminFilesIn(t.TempDir())
			if err := os.MkdirAll(f.Dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.Cert, pki.EncodeCertsPEM(cert), 0o644); err != nil {
				t.Fatal(err)
			}
			if !tc.noKey {
				keyPEM, err := pki.MarshalKeyPEM(key)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f.Key, keyPEM, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := adminFilesValid(f, pool, revoked, td, at); got != tc.want {
				t.Fatalf("adminFilesValid = %v, want %v", got, tc.want)
			}
		})
	}
}
