package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net/url"

	"github.com/warden-sec/warden/services/internal/identity"
)

// maxCSRPEM bounds an agent's CSR; an RSA-3072 CSR is under 2 KiB.
const maxCSRPEM = 16 << 10

// ParseCSR parses exactly one PEM "CERTIFICATE REQUEST" block, checks its
// self-signature (proof of possession of the key) and that its key type is
// one of KeyTypes. Only the public key of the result should be used: names
// and extensions in a CSR are the requester's claims.
func ParseCSR(pemBytes []byte) (*x509.CertificateRequest, error) {
	const field = "csr_pem"
	blocks, err := splitPEM(field, pemBytes, maxCSRPEM)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, invalidf(field, "holds %d PEM blocks, expected exactly one %q", len(blocks), blockCSR)
	}
	block := blocks[0]
	if block.Type != blockCSR {
		return nil, invalidf(field, "PEM block is %q, expected %q", block.Type, blockCSR)
	}
	if len(block.Headers) != 0 {
		return nil, invalidf(field, "PEM headers are not allowed")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, invalidErr(field, err, "parse certificate request")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, invalidErr(field, err, "signature does not verify")
	}
	if _, reason := keyTypeOf(csr.PublicKey); reason != "" {
		return nil, invalidf(field, "%s", reason)
	}
	return csr, nil
}

// CreateCSR returns a PEM CSR for key naming id. The server ignores the name
// and sets the SANs from its registry; it is there so an operator reading
// the CSR sees whom it is for.
func CreateCSR(key crypto.Signer, id identity.ID) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, &InvalidError{Field: "id", Reason: err.Error(), Err: err}
	}
	if _, reason := keyTypeOf(key.Public()); reason != "" {
		return nil, invalidf("key", "%s", reason)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.Name},
		URIs:    []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockCSR, Bytes: der}), nil
}
