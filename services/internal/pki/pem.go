package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// Size limits stop a hostile upload from costing more than parsing a
// realistic one; each is far above what a legitimate input needs.
const (
	maxCertsPEM  = 1 << 20
	maxKeyPEM    = 64 << 10
	maxBundlePEM = 1 << 20
)

const (
	blockCertificate  = "CERTIFICATE"
	blockPKCS8Key     = "PRIVATE KEY"
	blockSEC1Key      = "EC PRIVATE KEY"
	blockPKCS1Key     = "RSA PRIVATE KEY"
	blockEncryptedKey = "ENCRYPTED PRIVATE KEY"
	blockECParameters = "EC PARAMETERS"
	blockCSR          = "CERTIFICATE REQUEST"
	blockCRL          = "X509 CRL"
	pemBegin          = "-----BEGIN "
	pemEnd            = "-----END "
)

// maxPEMErrorSnippet keeps error messages readable when the input is binary.
const maxPEMErrorSnippet = 32

// splitPEM decodes every PEM block of b. Unlike looping over pem.Decode, it
// refuses any text outside the blocks, because pem.Decode silently skips it
// and a truncated or concatenated upload would otherwise pass unnoticed.
func splitPEM(field string, b []byte, limit int) ([]*pem.Block, error) {
	if len(b) > limit {
		return nil, invalidf(field, "input is %d bytes, at most %d allowed", len(b), limit)
	}
	var blocks []*pem.Block
	rest := b
	for {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		offset := len(b) - len(rest)
		if !bytes.HasPrefix(rest, []byte(pemBegin)) {
			return nil, invalidf(field, "unexpected data at byte %d: %q (expected a PEM block)", offset, snippet(rest))
		}
		end := bytes.Index(rest, []byte(pemEnd))
		if end < 0 {
			return nil, invalidf(field, "PEM block at byte %d has no END line", offset)
		}
		lineEnd := len(rest)
		if nl := bytes.IndexByte(rest[end:], '\n'); nl >= 0 {
			lineEnd = end + nl + 1
		}
		// One BEGIN per candidate block, or pem.Decode would skip a broken
		// block and return the next one in its place.
		candidate := rest[:lineEnd]
		if bytes.Count(candidate, []byte(pemBegin)) != 1 {
			return nil, invalidf(field, "PEM block at byte %d has no matching END line", offset)
		}
		block, tail := pem.Decode(candidate)
		if block == nil || len(bytes.TrimSpace(tail)) != 0 {
			return nil, invalidf(field, "malformed PEM block at byte %d", offset)
		}
		blocks = append(blocks, block)
		rest = rest[lineEnd:]
	}
	if len(blocks) == 0 {
		return nil, invalidf(field, "no PEM data found")
	}
	return blocks, nil
}

func snippet(b []byte) []byte {
	if len(b) > maxPEMErrorSnippet {
		return b[:maxPEMErrorSnippet]
	}
	return b
}

// EncodeCertsPEM encodes certs as consecutive CERTIFICATE blocks.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// Writing to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: blockCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCertsPEM parses one or more CERTIFICATE blocks, at most 1 MiB in all,
// with nothing but whitespace around them.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	return parseCertsPEM("certs_pem", b)
}

func parseCertsPEM(field string, b []byte) ([]*x509.Certificate, error) {
	blocks, err := splitPEM(field, b, maxCertsPEM)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, block := range blocks {
		c, err := parseCertBlock(field, i, block)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, nil
}

func parseCertBlock(field string, i int, block *pem.Block) (*x509.Certificate, error) {
	if block.Type != blockCertificate {
		return nil, invalidf(field, "PEM block %d is %q, expected %q", i+1, block.Type, blockCertificate)
	}
	if len(block.Headers) != 0 {
		return nil, invalidf(field, "certificate %d has PEM headers, which are not allowed", i+1)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, invalidErr(field, err, "certificate %d", i+1)
	}
	return c, nil
}

// MarshalKeyPEM encodes k as an unencrypted PKCS#8 "PRIVATE KEY" block.
func MarshalKeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal %T as PKCS#8: %w", k, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockPKCS8Key, Bytes: der}), nil
}

// ParseKeyPEM parses exactly one unencrypted private key in PKCS#8, SEC 1 or
// PKCS#1 form. An "EC PARAMETERS" block, as `openssl ecparam -genkey` writes
// before the key, is ignored.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	const field = "key_pem"
	blocks, err := splitPEM(field, b, maxKeyPEM)
	if err != nil {
		return nil, err
	}
	var key crypto.Signer
	for _, block := range blocks {
		switch {
		case block.Type == blockECParameters:
			continue
		case isKeyBlock(block.Type):
			if key != nil {
				return nil, invalidf(field, "more than one private key")
			}
			if key, err = parseKeyBlock(field, block); err != nil {
				return nil, err
			}
		default:
			return nil, invalidf(field, "unexpected PEM block %q, expected a private key", block.Type)
		}
	}
	if key == nil {
		return nil, invalidf(field, "no private key found")
	}
	return key, nil
}

func isKeyBlock(typ string) bool {
	switch typ {
	case blockPKCS8Key, blockSEC1Key, blockPKCS1Key, blockEncryptedKey:
		return true
	}
	return false
}

func parseKeyBlock(field string, block *pem.Block) (crypto.Signer, error) {
	if block.Type == blockEncryptedKey || block.Headers["Proc-Type"] != "" {
		return nil, invalidf(field, "private key is encrypted; upload it decrypted")
	}
	if len(block.Headers) != 0 {
		return nil, invalidf(field, "private key has PEM headers, which are not allowed")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case blockPKCS8Key:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case blockSEC1Key:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case blockPKCS1Key:
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, invalidErr(field, err, "parse %s", block.Type)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, invalidf(field, "%T keys cannot sign certificates", key)
	}
	return signer, nil
}
