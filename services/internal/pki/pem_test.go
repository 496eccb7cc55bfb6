package pki

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
)

func TestParseCertsPEM(t *testing.T) {
	a, _ := makeCert(t, certSpec{cn: "a"})
	b, _ := makeCert(t, certSpec{cn: "b"})
	two := EncodeCertsPEM(a, b)

	got, err := ParseCertsPEM(append([]byte("\n\r\n  "), append(two, "\n\n"...)...))
	if err != nil {
		t.Fatalf("ParseCertsPEM of two certificates with surrounding whitespace: %v", err)
	}
	if len(got) != 2 || !got[0].Equal(a) || !got[1].Equal(b) {
		t.Fatalf("ParseCertsPEM returned %d certificates, want a then b", len(got))
	}

	crlf := bytes.ReplaceAll(two, []byte("\n"), []byte("\r\n"))
	if got, err := ParseCertsPEM(crlf); err != nil || len(got) != 2 {
		t.Fatalf("ParseCertsPEM with CRLF line endings = %d certs, %v; want 2, nil", len(got), err)
	}

	one := EncodeCertsPEM(a)
	brokenThenGood := append([]byte("-----BEGIN CERTIFICATE-----\n!!!!\n"), one...)
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "no PEM data found"},
		{"whitespace", []byte(" \n\t"), "no PEM data found"},
		{"leading text", append([]byte("subject=CN = a\n"), one...), "unexpected data at byte 0"},
		{"trailing garbage", append(append([]byte{}, one...), "garbage"...), "unexpected data at byte"},
		{"text between blocks", append(append(append([]byte{}, one...), "Bag Attributes\n"...), one...), "unexpected data"},
		{"truncated", one[:len(one)-10], "malformed PEM block"},
		{"no END line", one[:len(one)/2], "has no END line"},
		{"broken block before a good one", brokenThenGood, "no matching END line"},
		{"bad base64", []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), "malformed PEM block"},
		{"other block type", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), `PEM block 1 is "PRIVATE KEY"`},
		{"headers", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"X": "y"}, Bytes: a.Raw}), "PEM headers"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}}), "certificate 1: x509:"},
		{"too large", []byte(strings.Repeat(" ", maxCertsPEM+1)), "at most 1048576"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := ParseCertsPEM(tt.in)
			if err == nil {
				t.Fatalf("ParseCertsPEM = %d certificates, want error", len(certs))
			}
			requireInvalid(t, err, "certs_pem", tt.want)
		})
	}
}

func TestWithField(t *testing.T) {
	_, err := ParseCSR([]byte("x"))
	relabelled := WithField(err, "request.csr")
	requireInvalid(t, relabelled, "request.csr", "request.csr: unexpected data")
	requireInvalid(t, err, "csr_pem", "csr_pem: unexpected data")

	plain := bytes.ErrTooLarge
	if got := WithField(plain, "x"); got != plain {
		t.Fatalf("WithField changed a non-validation error: %v", got)
	}
}

func TestSerialMatchesHexFormatting(t *testing.T) {
	for _, n := range []*big.Int{big.NewInt(1), big.NewInt(0x0abc), new(big.Int).Lsh(big.NewInt(0xfe), 120), big.NewInt(-5)} {
		if got, want := Serial(n), fmt.Sprintf("%x", n); got != want {
			t.Errorf("Serial(%v) = %q, want %q (the form stored before)", n, got, want)
		}
	}
}
