package pki

import (
	"bytes"
	"errors"
	"testing"
)

// Seeds for material that is hard to build by hand live in testdata/fuzz;
// the inline seeds cover the malformed shapes the splitter must survive.
var pemEdgeSeeds = [][]byte{
	nil,
	[]byte("-----BEGIN "),
	[]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"),
	[]byte("-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"),
	[]byte("-----BEGIN X-----\nMA==\n-----END Y-----\n"),
	[]byte("-----END CERTIFICATE-----\n"),
	[]byte("\r\n\t -----BEGIN PRIVATE KEY-----\r\nMAA=\r\n-----END PRIVATE KEY-----"),
}

func addSeeds(f *testing.F) {
	for _, s := range pemEdgeSeeds {
		f.Add(s)
	}
}

func FuzzParseCSR(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err != nil {
			requireInvalidAny(t, err)
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("ParseCSR accepted a CSR whose signature fails: %v", err)
		}
		if _, err := KeyTypeOf(csr.PublicKey); err != nil {
			t.Fatalf("ParseCSR accepted an unsupported key: %v", err)
		}
	})
}

func FuzzParseCertsPEM(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertsPEM(data)
		if err != nil {
			requireInvalidAny(t, err)
			return
		}
		if len(certs) == 0 {
			t.Fatal("ParseCertsPEM returned no certificates and no error")
		}
		again, err := ParseCertsPEM(EncodeCertsPEM(certs...))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoded certificates parse as %d, %v; want %d", len(again), err, len(certs))
		}
	})
}

func FuzzParseKeyPEM(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParseKeyPEM(data)
		if err != nil {
			requireInvalidAny(t, err)
			return
		}
		b, err := MarshalKeyPEM(key)
		if err != nil {
			t.Fatalf("MarshalKeyPEM of an accepted key: %v", err)
		}
		again, err := ParseKeyPEM(b)
		if err != nil || !publicKeysEqual(again.Public(), key.Public()) {
			t.Fatalf("key does not survive a PKCS#8 round trip: %v", err)
		}
	})
}

func FuzzParseExternalBundle(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		// nil roots exercises the system pool and the self-anchored fallback.
		b, err := ParseExternalBundle(data, nil, testNow)
		if err != nil {
			requireInvalidAny(t, err)
			return
		}
		if b.Leaf.IsCA || !publicKeysEqual(b.Key.Public(), b.Leaf.PublicKey) {
			t.Fatal("accepted a bundle whose key does not match a non-CA leaf")
		}
		if len(b.Leaf.DNSNames)+len(b.Leaf.IPAddresses) == 0 {
			t.Fatal("accepted a leaf without SANs")
		}
		for _, c := range b.Intermediates {
			if bytes.Equal(c.Raw, b.Leaf.Raw) {
				t.Fatal("leaf listed among its own intermediates")
			}
		}
	})
}

// FuzzParseCRLs: the agent parses what the credentials stream and its own certificates directory hold.
func FuzzParseCRLs(f *testing.F) {
	addSeeds(f)
	f.Add(validCRLPEM(f))
	f.Add(append(validCRLPEM(f), validCRLPEM(f)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		crls, err := ParseCRLs(data)
		if err != nil {
			requireInvalidAny(t, err)
			return
		}
		if len(crls) == 0 {
			t.Fatal("ParseCRLs returned no CRL and no error")
		}
		for i, crl := range crls {
			if crl == nil || len(crl.Raw) == 0 {
				t.Fatalf("CRL %d is empty", i)
			}
		}
	})
}

// requireInvalidAny fails if a parser reports bad input as anything but an
// *InvalidError, which would turn into an internal error at the API.
func requireInvalidAny(t *testing.T, err error) {
	t.Helper()
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("error %v is %T, want *InvalidError", err, err)
	}
}
