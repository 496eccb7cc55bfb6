package pki

import (
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
)

func TestCreateAndParseCRL(t *testing.T) {
	ca := newTestCA(t)
	pub := testKey(t, KeyECDSAP256).Public()
	var entries []Revoked
	for i, reason := range []int{0, 1, 4, 5} {
		c, _, err := ca.Issue(Template{ID: identity.NodeID(testTD, identity.RoleWebapp, "w1"), Lifetime: time.Hour, Client: true}, pub, testNow)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		entries = append(entries, Revoked{Serial: c.SerialNumber, At: testNow.Add(time.Duration(-i) * time.Minute), Reason: reason})
	}
	der, err := ca.CreateCRL(entries, 42, testNow, testNow.Add(24*time.Hour))
	if err != nil {
		t.Fatalf("CreateCRL: %v", err)
	}
	forms := map[string][]byte{
		"DER": der,
		"PEM": pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}),
	}
	for name, in := range forms {
		t.Run(name, func(t *testing.T) {
			crls, err := ParseCRLs(in)
			if err != nil || len(crls) != 1 {
				t.Fatalf("ParseCRLs = %d CRLs, %v; want 1", len(crls), err)
			}
			crl := crls[0]
			if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
				t.Fatalf("CRL signature does not verify against the CA: %v", err)
			}
			if err := crl.CheckSignatureFrom(newTestCA(t).Cert); err == nil {
				t.Fatal("CRL signature verified against an unrelated CA")
			}
			if crl.Number.Int64() != 42 {
				t.Errorf("Number = %v, want 42", crl.Number)
			}
			if !crl.ThisUpdate.Equal(testNow) || !crl.NextUpdate.Equal(testNow.Add(24*time.Hour)) {
				t.Errorf("ThisUpdate/NextUpdate = %s/%s", crl.ThisUpdate, crl.NextUpdate)
			}
			if len(crl.RevokedCertificateEntries) != len(entries) {
				t.Fatalf("CRL has %d entries, want %d", len(crl.RevokedCertificateEntries), len(entries))
			}
			for i, e := range crl.RevokedCertificateEntries {
				want := entries[i]
				if e.SerialNumber.Cmp(want.Serial) != 0 || e.ReasonCode != want.Reason || !e.RevocationTime.Equal(want.At) {
					t.Errorf("entry %d = %v/%d/%s, want %v/%d/%s", i, e.SerialNumber, e.ReasonCode, e.RevocationTime, want.Serial, want.Reason, want.At)
				}
			}
		})
	}
	t.Run("empty", func(t *testing.T) {
		der, err := ca.CreateCRL(nil, 0, testNow, testNow.Add(time.Hour))
		if err != nil {
			t.Fatalf("CreateCRL: %v", err)
		}
		crls, err := ParseCRLs(der)
		if err != nil || len(crls) != 1 || len(crls[0].RevokedCertificateEntries) != 0 {
			t.Fatalf("ParseCRLs = %v, %v; want one empty CRL", crls, err)
		}
	})
	t.Run("one per CA, in order", func(t *testing.T) {
		other := newTestCA(t)
		otherDER, err := other.CreateCRL(nil, 43, testNow, testNow.Add(time.Hour))
		if err != nil {
			t.Fatalf("CreateCRL: %v", err)
		}
		in := append(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: otherDER})...)
		crls, err := ParseCRLs(in)
		if err != nil || len(crls) != 2 {
			t.Fatalf("ParseCRLs = %d CRLs, %v; want 2", len(crls), err)
		}
		if crls[0].CheckSignatureFrom(ca.Cert) != nil || crls[1].CheckSignatureFrom(other.Cert) != nil || len(crls[0].RevokedCertificateEntries) != len(entries) {
			t.Fatal("the two CRLs are not the ones written, in their order")
		}
	})
}

func TestCreateCRLRejects(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		name    string
		entries []Revoked
		number  int64
		next    time.Time
		field   string
		want    string
	}{
		{"negative number", nil, -1, testNow.Add(time.Hour), "number", "must not be negative"},
		{"next before this", nil, 1, testNow, "next_update", "must be after"},
		{"nil serial", []Revoked{{At: testNow}}, 1, testNow.Add(time.Hour), "entries", "entry 0: serial must be positive"},
		{"zero serial", []Revoked{{Serial: big.NewInt(0), At: testNow}}, 1, testNow.Add(time.Hour), "entries", "serial must be positive"},
		{"reason 7", []Revoked{{Serial: big.NewInt(5), At: testNow, Reason: 7}}, 1, testNow.Add(time.Hour), "entries", "not an RFC 5280 reason code"},
		{"reason 11", []Revoked{{Serial: big.NewInt(5), At: testNow, Reason: 11}}, 1, testNow.Add(time.Hour), "entries", "not an RFC 5280 reason code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.CreateCRL(tt.entries, tt.number, testNow, tt.next)
			requireInvalid(t, err, tt.field, tt.want)
		})
	}
	t.Run("CA without cRLSign", func(t *testing.T) {
		cert, key := makeCert(t, certSpec{cn: "sign only", ca: true, keyUsage: x509.KeyUsageCertSign})
		noCRL := &CA{Cert: cert, Signer: key}
		if _, err := noCRL.CreateCRL(nil, 1, testNow, testNow.Add(time.Hour)); err == nil {
			t.Fatal("CreateCRL succeeded for a CA without cRLSign")
		}
	})
}

func TestParseCRLRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "parse CRL"},
		{"garbage DER", []byte{0x30, 0x01, 0x00}, "parse CRL"},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), `PEM block 0 is "CERTIFICATE"`},
		{"PEM with trailing garbage", append(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{1}}), "x"...), "unexpected data"},
		{"second CRL broken", append(validCRLPEM(t), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{1}})...), "parse CRL 1"},
		{"too large", make([]byte, maxCRL+1), "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCRLs(tt.in)
			requireInvalid(t, err, "crl", tt.want)
		})
	}
}

func validCRLPEM(t testing.TB) []byte {
	t.Helper()
	der, err := newTestCA(t).CreateCRL(nil, 1, testNow, testNow.Add(time.Hour))
	if err != nil {
		t.Fatalf("CreateCRL: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}
