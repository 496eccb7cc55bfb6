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

// ParseCRL parses a CRL in DER or as one PEM "X509 CRL" block. It does not
// check the signature; use CheckSignatureFrom with the issuer.
func ParseCRL(b []byte) (*x509.RevocationList, error) {
	const field = "crl"
	if len(b) > maxCRL {
		return nil, invalidf(field, "CRL is %d bytes, at most %d allowed", len(b), maxCRL)
	}
	der := b
	if bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte(pemBegin)) {
		blocks, err := splitPEM(field, b, maxCRL)
		if err != nil {
			return nil, err
		}
		if len(blocks) != 1 || blocks[0].Type != blockCRL {
			return nil, invalidf(field, "expected exactly one %q PEM block", blockCRL)
		}
		der = blocks[0].Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, invalidErr(field, err, "parse CRL")
	}
	return crl, nil
}
