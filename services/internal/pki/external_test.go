package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"
)

// webPKI is an operator's HTTPS certificate from a private CA: root,
// intermediate and a server leaf.
type webPKI struct {
	root, inter, leaf *x509.Certificate
	rootPEM, interPEM []byte
	leafPEM, keyPEM   []byte
	interSpec         certSpec
}

func newWebPKI(t *testing.T) webPKI {
	t.Helper()
	root, rootKey := makeCert(t, certSpec{cn: "Corp Root", ca: true})
	inter, interKey := makeCert(t, certSpec{cn: "Corp Issuing", ca: true, parent: root, parentKey: rootKey})
	leaf, leafKey := makeCert(t, certSpec{cn: "warden.corp.example", dns: []string{"warden.corp.example"}, extUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, parent: inter, parentKey: interKey})
	return webPKI{
		root: root, inter: inter, leaf: leaf,
		rootPEM:   EncodeCertsPEM(root),
		interPEM:  EncodeCertsPEM(inter),
		leafPEM:   EncodeCertsPEM(leaf),
		keyPEM:    mustKeyPEM(t, leafKey),
		interSpec: certSpec{parent: inter, parentKey: interKey},
	}
}

// leafUnder issues another leaf from the intermediate, so each broken case
// differs from the good bundle in one respect only.
func (w webPKI) leafUnder(t *testing.T, s certSpec) (leafPEM, keyPEM []byte) {
	t.Helper()
	s.parent, s.parentKey = w.interSpec.parent, w.interSpec.parentKey
	if s.extUsage == nil {
		s.extUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	c, k := makeCert(t, s)
	return EncodeCertsPEM(c), mustKeyPEM(t, k)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func permutations(items [][]byte) [][][]byte {
	if len(items) <= 1 {
		return [][][]byte{items}
	}
	var out [][][]byte
	for i := range items {
		rest := append(append([][]byte{}, items[:i]...), items[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([][]byte{items[i]}, p...))
		}
	}
	return out
}

func TestParseExternalBundleAnyOrder(t *testing.T) {
	w := newWebPKI(t)
	for _, parts := range permutations([][]byte{w.keyPEM, w.leafPEM, w.interPEM, w.rootPEM}) {
		b, err := ParseExternalBundle(cat(parts...), pool(w.root), testNow)
		if err != nil {
			t.Fatalf("ParseExternalBundle: %v", err)
		}
		if !b.Leaf.Equal(w.leaf) || !publicKeysEqual(b.Key.Public(), w.leaf.PublicKey) {
			t.Fatal("wrong leaf or key")
		}
		if len(b.Intermediates) != 1 || !b.Intermediates[0].Equal(w.inter) {
			t.Fatalf("Intermediates = %d certs, want the intermediate alone", len(b.Intermediates))
		}
		if b.SelfAnchored {
			t.Fatal("SelfAnchored set although roots verified the chain")
		}
	}
}

func TestParseExternalBundleSelfAnchored(t *testing.T) {
	w := newWebPKI(t)
	selfSigned, selfKey := makeCert(t, certSpec{cn: "localhost", ips: []net.IP{net.IPv4(127, 0, 0, 1)}, extUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	tests := []struct {
		name              string
		in                []byte
		wantIntermediates int
	}{
		{"private root included", cat(w.leafPEM, w.interPEM, w.rootPEM, w.keyPEM), 1},
		{"self-signed leaf", cat(EncodeCertsPEM(selfSigned), mustKeyPEM(t, selfKey)), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseExternalBundle(tt.in, nil, testNow)
			if err != nil {
				t.Fatalf("ParseExternalBundle: %v", err)
			}
			if !b.SelfAnchored {
				t.Fatal("SelfAnchored = false for a chain no system root signs")
			}
			if len(b.Intermediates) != tt.wantIntermediates {
				t.Fatalf("Intermediates = %d certs, want %d", len(b.Intermediates), tt.wantIntermediates)
			}
		})
	}
	t.Run("private root missing", func(t *testing.T) {
		_, err := ParseExternalBundle(cat(w.leafPEM, w.interPEM, w.keyPEM), nil, testNow)
		requireInvalid(t, err, "bundle_pem", "certificate chain does not verify")
	})
	t.Run("explicit roots allow no fallback", func(t *testing.T) {
		_, err := ParseExternalBundle(cat(w.leafPEM, w.interPEM, w.rootPEM, w.keyPEM), x509.NewCertPool(), testNow)
		requireInvalid(t, err, "bundle_pem", "certificate chain does not verify")
	})
}

func TestParseExternalBundleRejects(t *testing.T) {
	w := newWebPKI(t)
	other := newWebPKI(t)
	expiredLeaf, expiredKey := w.leafUnder(t, certSpec{cn: "old", dns: []string{"a.example"}, notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Second)})
	futureLeaf, futureKey := w.leafUnder(t, certSpec{cn: "new", dns: []string{"a.example"}, notBefore: testNow.Add(time.Hour)})
	noSAN, noSANKey := w.leafUnder(t, certSpec{cn: "no-san.example"})
	clientOnly, clientOnlyKey := w.leafUnder(t, certSpec{cn: "c", dns: []string{"a.example"}, extUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	secondLeaf, _ := w.leafUnder(t, certSpec{cn: "second", dns: []string{"b.example"}})
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})

	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"key mismatch", cat(w.leafPEM, w.interPEM, other.keyPEM), "bundle_pem: key does not match leaf certificate"},
		{"missing key", cat(w.leafPEM, w.interPEM), "bundle_pem: no private key found"},
		{"two keys", cat(w.keyPEM, w.leafPEM, w.interPEM, other.keyPEM), "bundle_pem: found 2 private keys, expected exactly one"},
		{"no certificate", w.keyPEM, "bundle_pem: no certificate found"},
		{"no leaf", cat(w.keyPEM, w.interPEM, w.rootPEM), "every certificate is a CA"},
		{"two leaves", cat(w.keyPEM, w.leafPEM, secondLeaf, w.interPEM), "found more than one leaf"},
		{"expired", cat(expiredLeaf, expiredKey, w.interPEM), `leaf certificate "CN=old" expired at`},
		{"not yet valid", cat(futureLeaf, futureKey, w.interPEM), `leaf certificate "CN=new" is not valid until`},
		{"no SANs", cat(noSAN, noSANKey, w.interPEM), "leaf certificate has no DNS or IP subject alternative name"},
		{"client-only usage", cat(clientOnly, clientOnlyKey, w.interPEM), "certificate chain does not verify: x509: certificate specifies an incompatible key usage"},
		{"missing intermediate", cat(w.leafPEM, w.keyPEM), "certificate chain does not verify: x509: certificate signed by unknown authority"},
		{"encrypted key", cat(w.leafPEM, encrypted), "private key is encrypted"},
		{"unknown block", cat(w.leafPEM, w.keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}})), `PEM block 3 is "CERTIFICATE REQUEST"`},
		{"garbage", []byte("this is not PEM"), "bundle_pem: unexpected data at byte 0"},
		{"garbage after the bundle", cat(w.leafPEM, w.keyPEM, w.interPEM, []byte{0xff, 0x00}), "unexpected data at byte"},
		{"empty", nil, "bundle_pem: no PEM data found"},
		{"corrupt certificate", cat(w.keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}})), "certificate 2: x509:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseExternalBundle(tt.in, pool(w.root), testNow)
			if err == nil {
				t.Fatalf("ParseExternalBundle = leaf %q, want error", b.Leaf.Subject)
			}
			requireInvalid(t, err, "bundle_pem", tt.want)
		})
	}
}

func TestValidateCABundle(t *testing.T) {
	w := newWebPKI(t)
	expired, _ := makeCert(t, certSpec{cn: "old root", ca: true, notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Hour)})
	future, _ := makeCert(t, certSpec{cn: "next root", ca: true, notBefore: testNow.Add(time.Hour)})
	pinned, _ := makeCert(t, certSpec{cn: "db.internal", dns: []string{"db.internal"}})

	good := []struct {
		name string
		in   []byte
		n    int
	}{
		{"root and intermediate", cat(w.rootPEM, w.interPEM), 2},
		{"self-signed leaf", EncodeCertsPEM(pinned), 1},
		{"staged future root", EncodeCertsPEM(future), 1},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := ValidateCABundle(tt.in, testNow)
			if err != nil || len(certs) != tt.n {
				t.Fatalf("ValidateCABundle = %d certs, %v; want %d, nil", len(certs), err, tt.n)
			}
		})
	}
	bad := []struct {
		name, want string
		in         []byte
	}{
		{"empty", "no PEM data found", nil},
		{"leaf", `certificate 2 ("CN=warden.corp.example") is neither a CA nor self-signed`, cat(w.rootPEM, w.leafPEM)},
		{"expired", `certificate 1 ("CN=old root") expired at`, EncodeCertsPEM(expired)},
		{"key in bundle", `PEM block 2 is "PRIVATE KEY"`, cat(w.rootPEM, w.keyPEM)},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ValidateCABundle(tt.in, testNow)
			requireInvalid(t, err, "ca_bundle_pem", tt.want)
		})
	}
}
