package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"time"
)

// maxCRL bounds a CRL handed to ParseCRL; at roughly 40 bytes an entry it
// still fits a few hundred thousand revocations.
const maxCRL = 16 << 20

// Revoked is one CRL entry. Reason is an RFC 5280 CRLReason code (0
// unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation, …).
type Revoked struct {
	Serial *big.Int
	At     time.Time
	Reason int
}

// CreateCRL signs a CRL listing entries. number must grow with every CRL the
// CA publishes, so relying parties can tell which one is newer.
func (ca *CA) CreateCRL(entries []Revoked, number int64, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	if number < 0 {
		return nil, invalidf("number", "CRL number must not be negative, got %d", number)
	}
	if !nextUpdate.After(thisUpdate) {
		return nil, invalidf("next_update", "must be after this_update")
	}
	if ca.Cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("create CRL: CA certificate %q lacks the cRLSign key usage", ca.Cert.Subject.String())
	}
	list := make([]x509.RevocationListEntry, 0, len(entries))
	for i, e := range entries {
		if e.Serial == nil || e.Serial.Sign() <= 0 {
			return nil, invalidf("entries", "entry %d: serial must be positive", i)
		}
		// 7 is unassigned in RFC 5280.
		if e.Reason < 0 || e.Reason > 10 || e.Reason == 7 {
			return nil, invalidf("entries", "entry %d: %d is not an RFC 5280 reason code", i, e.Reason)
		}
		list = append(list, x509.RevocationListEntry{SerialNumber: e.Serial, RevocationTime: e.At, ReasonCode: e.Reason})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(number),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: list,
	}, ca.Cert, ca.Signer)
	if err != nil {
		return nil, fmt.Errorf("sign CRL %d: %w", number, err)
	}
	return der, nil
}

// ParseCRLs parses a CRL in DER, or one or more PEM "X509 CRL" blocks: a CA rotation publishes one
// CRL per trusted CA, since a relying party looks a certificate up in the CRL of its own issuer. It
// does not check the signatures; use CheckSignatureFrom with each issuer.
func ParseCRLs(b []byte) ([]*x509.RevocationList, error) {
	const field = "crl"
	if len(b) > maxCRL {
		return nil, invalidf(field, "CRL is %d bytes, at most %d allowed", len(b), maxCRL)
	}
	if !bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte(pemBegin)) {
		crl, err := x509.ParseRevocationList(b)
		if err != nil {
			return nil, invalidErr(field, err, "parse CRL")
		}
		return []*x509.RevocationList{crl}, nil
	}
	blocks, err := splitPEM(field, b, maxCRL)
	if err != nil {
		return nil, err
	}
	out := make([]*x509.RevocationList, 0, len(blocks))
	for i, block := range blocks {
		if block.Type != blockCRL {
			return nil, invalidf(field, "PEM block %d is %q, expected %q", i, block.Type, blockCRL)
		}
		crl, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			return nil, invalidErr(field, err, "parse CRL %d", i)
		}
		out = append(out, crl)
	}
	return out, nil
}
