package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
)

func TestIssueVerifiesForEveryKeyType(t *testing.T) {
	ca := newTestCA(t)
	id := identity.NodeID(testTD, identity.RoleWebapp, "web-01")
	for _, kt := range KeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			key := testKey(t, kt)
			csrPEM, err := CreateCSR(key, id)
			if err != nil {
				t.Fatalf("CreateCSR: %v", err)
			}
			csr, err := ParseCSR(csrPEM)
			if err != nil {
				t.Fatalf("ParseCSR: %v", err)
			}
			tpl := Template{
				ID:       id,
				DNSNames: []string{"web-01.prod.example"},
				IPs:      []net.IP{net.ParseIP("10.0.0.7")},
				Lifetime: 24 * time.Hour,
				Server:   true,
				Client:   true,
			}
			cert, der, err := ca.Issue(tpl, csr.PublicKey, testNow)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if !bytes.Equal(cert.Raw, der) {
				t.Fatal("returned DER differs from the certificate's Raw")
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(ca.Roots...), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Fatalf("Verify for %v: %v", usage, err)
				}
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(newTestCA(t).Roots...), CurrentTime: testNow}); err == nil {
				t.Fatal("certificate verified against an unrelated root")
			}
			got, err := identity.FromCertificate(cert)
			if err != nil || got != id {
				t.Fatalf("identity.FromCertificate = %v, %v; want %v", got, err, id)
			}
			if !publicKeysEqual(cert.PublicKey, key.Public()) {
				t.Fatal("certificate does not carry the CSR's key")
			}
			wantUsage := x509.KeyUsageDigitalSignature
			if kt == KeyRSA2048 || kt == KeyRSA3072 {
				wantUsage |= x509.KeyUsageKeyEncipherment
			}
			if cert.KeyUsage != wantUsage {
				t.Fatalf("KeyUsage = %v, want %v", cert.KeyUsage, wantUsage)
			}
			if cert.IsCA {
				t.Fatal("leaf is a CA")
			}
			if !bytes.Equal(cert.AuthorityKeyId, ca.Cert.SubjectKeyId) {
				t.Fatal("AuthorityKeyId does not match the CA's SubjectKeyId")
			}
		})
	}
}

func TestIssueIgnoresCSRNames(t *testing.T) {
	ca := newTestCA(t)
	key := testKey(t, KeyECDSAP256)
	evil, err := url.Parse("spiffe://" + testTD + "/admin/root")
	if err != nil {
		t.Fatalf("url.Parse: %v", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		DNSNames:    []string{"evil.example"},
		IPAddresses: []net.IP{net.ParseIP("192.0.2.1")},
		URIs:        []*url.URL{evil},
	}, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	csr, err := ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	id := identity.NodeID(testTD, identity.RoleCoreapp, "core-1")
	tests := []struct {
		name string
		tpl  Template
	}{
		{"template with names", Template{ID: id, DNSNames: []string{"core-1.internal"}, IPs: []net.IP{net.ParseIP("10.1.1.1")}, Lifetime: time.Hour, Client: true}},
		{"template without names", Template{ID: id, Lifetime: time.Hour, Client: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, _, err := ca.Issue(tt.tpl, csr.PublicKey, testNow)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if len(cert.URIs) != 1 || cert.URIs[0].String() != id.String() {
				t.Fatalf("URIs = %v, want only %s", cert.URIs, id)
			}
			if len(cert.DNSNames) != len(tt.tpl.DNSNames) || (len(cert.DNSNames) > 0 && cert.DNSNames[0] != tt.tpl.DNSNames[0]) {
				t.Fatalf("DNSNames = %v, want %v", cert.DNSNames, tt.tpl.DNSNames)
			}
			if len(cert.IPAddresses) != len(tt.tpl.IPs) || (len(cert.IPAddresses) > 0 && !cert.IPAddresses[0].Equal(tt.tpl.IPs[0])) {
				t.Fatalf("IPAddresses = %v, want %v", cert.IPAddresses, tt.tpl.IPs)
			}
		})
	}
}

func TestIssueValidityAndUsage(t *testing.T) {
	ca := newTestCA(t)
	pub := testKey(t, KeyECDSAP256).Public()
	id := identity.AdminID(testTD, "alice")
	tests := []struct {
		name          string
		tpl           Template
		now           time.Time
		wantNotAfter  time.Time
		wantExtUsages []x509.ExtKeyUsage
	}{
		{"client only", Template{ID: id, Lifetime: time.Hour, Client: true}, testNow, testNow.Add(time.Hour), []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{"server only", Template{ID: id, Lifetime: time.Hour, Server: true}, testNow, testNow.Add(time.Hour), []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{"capped at CA expiry", Template{ID: id, Lifetime: 10 * 365 * 24 * time.Hour, Client: true}, testNow, ca.Cert.NotAfter, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, _, err := ca.Issue(tt.tpl, pub, tt.now)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if !cert.NotBefore.Equal(tt.now.Add(-time.Minute)) {
				t.Errorf("NotBefore = %s, want %s", cert.NotBefore, tt.now.Add(-time.Minute))
			}
			if !cert.NotAfter.Equal(tt.wantNotAfter) {
				t.Errorf("NotAfter = %s, want %s", cert.NotAfter, tt.wantNotAfter)
			}
			if len(cert.ExtKeyUsage) != len(tt.wantExtUsages) || cert.ExtKeyUsage[0] != tt.wantExtUsages[0] {
				t.Errorf("ExtKeyUsage = %v, want %v", cert.ExtKeyUsage, tt.wantExtUsages)
			}
			if cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v is not a positive 128-bit number", cert.SerialNumber)
			}
			other := x509.ExtKeyUsageServerAuth
			if tt.wantExtUsages[0] == x509.ExtKeyUsageServerAuth {
				other = x509.ExtKeyUsageClientAuth
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(ca.Roots...), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{other}}); err == nil {
				t.Errorf("certificate verified for %v, which it was not issued for", other)
			}
		})
	}
	t.Run("NotBefore not before the CA's", func(t *testing.T) {
		cert, _, err := ca.Issue(Template{ID: id, Lifetime: time.Hour, Client: true}, pub, ca.Cert.NotBefore.Add(time.Second))
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if !cert.NotBefore.Equal(ca.Cert.NotBefore) {
			t.Fatalf("NotBefore = %s, want the CA's %s", cert.NotBefore, ca.Cert.NotBefore)
		}
	})
}

func TestIssueRejects(t *testing.T) {
	ca := newTestCA(t)
	good := Template{ID: identity.NodeID(testTD, identity.RoleWebapp, "w1"), Lifetime: time.Hour, Server: true}
	pub := testKey(t, KeyECDSAP256).Public()
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatalf("generate P-224: %v", err)
	}
	with := func(f func(*Template)) Template {
		tpl := good
		f(&tpl)
		return tpl
	}
	tests := []struct {
		name  string
		tpl   Template
		pub   any
		field string
		want  string
	}{
		{"zero ID", with(func(t *Template) { t.ID = identity.ID{} }), pub, "id", "trust domain is empty"},
		{"bad role", with(func(t *Template) { t.ID.Role = "db" }), pub, "id", "node role"},
		{"zero lifetime", with(func(t *Template) { t.Lifetime = 0 }), pub, "lifetime", "must be positive"},
		{"no usage", with(func(t *Template) { t.Server = false }), pub, "usage", "server or client"},
		{"wildcard DNS", with(func(t *Template) { t.DNSNames = []string{"*.example"} }), pub, "dns_names", `contains '*'`},
		{"uppercase DNS", with(func(t *Template) { t.DNSNames = []string{"Web.example"} }), pub, "dns_names", `contains 'W'`},
		{"empty DNS label", with(func(t *Template) { t.DNSNames = []string{"a..b"} }), pub, "dns_names", "labels must be"},
		{"bad IP", with(func(t *Template) { t.IPs = []net.IP{{1, 2, 3}} }), pub, "ips", "not an IPv4 or IPv6"},
		{"P-224 key", good, &p224.PublicKey, "public_key", "P-224"},
		{"no key", good, nil, "public_key", "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, _, err := ca.Issue(tt.tpl, tt.pub, testNow)
			if err == nil {
				t.Fatalf("Issue = %v, want error", cert.Subject)
			}
			requireInvalid(t, err, tt.field, tt.want)
		})
	}
	for _, now := range []time.Time{ca.Cert.NotAfter.Add(time.Second), ca.Cert.NotBefore.Add(-time.Second)} {
		_, _, err := ca.Issue(good, pub, now)
		if !errors.Is(err, ErrCAExpired) {
			t.Fatalf("Issue at %s = %v, want ErrCAExpired", now, err)
		}
		var inv *InvalidError
		if errors.As(err, &inv) {
			t.Fatalf("an expired CA is Warden's fault, not the caller's, but got InvalidError %v", err)
		}
	}
}

func TestIssueConcurrentSerialsUnique(t *testing.T) {
	ca := newTestCA(t)
	pub := testKey(t, KeyECDSAP256).Public()
	tpl := Template{ID: identity.NodeID(testTD, identity.RoleWebapp, "w1"), Lifetime: time.Hour, Client: true}
	const n = 64
	serials := make(chan string, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			c, _, err := ca.Issue(tpl, pub, testNow)
			if err != nil {
				errs <- err
				return
			}
			serials <- c.SerialNumber.String()
		}()
	}
	seen := map[string]bool{}
	for range n {
		select {
		case err := <-errs:
			t.Fatalf("Issue: %v", err)
		case s := <-serials:
			if seen[s] {
				t.Fatalf("serial %s issued twice", s)
			}
			seen[s] = true
		}
	}
}
