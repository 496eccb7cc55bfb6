package node

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/pki"
)

// defaultRenewFraction applies when a snapshot does not give one (or gives nonsense).
const defaultRenewFraction = 2.0 / 3.0

// renewJitter is the largest share of a certificate's life by which its renewal is moved earlier, so
// that nodes bootstrapped together do not all renew in the same second.
const renewJitter = 0.05

// noCurrentRetry is how long a certificate that was obtained because the control plane showed no
// current one is kept although a snapshot still shows none: that snapshot may have been built before
// the issuance (or the server may never show it), and re-issuing on every snapshot would loop, since
// each issuance produces a new snapshot.
const noCurrentRetry = time.Minute

// reasonNoCurrent is the issue reason for a snapshot without a current certificate of the kind.
const reasonNoCurrent = "control plane holds no current certificate of this kind"

// held is one certificate with its key as the node holds it.
type held struct {
	kind     certv1.CertKind
	certPEM  []byte
	keyPEM   []byte
	chain    []*x509.Certificate // leaf first
	tls      *tls.Certificate
	external bool
	// noCurrentAt is when this process obtained it for reasonNoCurrent; zero otherwise.
	noCurrentAt time.Time
}

func (h *held) leaf() *x509.Certificate { return h.chain[0] }

func (h *held) serial() string { return pki.Serial(h.leaf().SerialNumber) }

// parseHeld checks that certPEM (leaf first, then its chain) and keyPEM belong together.
func parseHeld(kind certv1.CertKind, certPEM, keyPEM []byte) (*held, error) {
	chain, err := pki.ParseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s certificate: %w", KindName(kind), err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s key pair: %w", KindName(kind), err)
	}
	pair.Leaf = chain[0]
	return &held{kind: kind, certPEM: certPEM, keyPEM: keyPEM, chain: chain, tls: &pair}, nil
}

// loadHeld reads kind's files from dir; it returns an error matching fs.ErrNotExist if either is
// missing.
func loadHeld(dir string, kind certv1.CertKind) (*held, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile(kind)))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile(kind)))
	if err != nil {
		return nil, err
	}
	return parseHeld(kind, certPEM, keyPEM)
}

// renewAt is when a certificate should be renewed: at fraction of its life, moved earlier by a jitter of
// up to renewJitter of its life that is fixed per certificate (derived from its serial), so that the
// time is the same after a restart.
func renewAt(leaf *x509.Certificate, fraction float64) time.Time {
	if !(fraction > 0 && fraction < 1) {
		fraction = defaultRenewFraction
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	sum := sha256.Sum256(leaf.SerialNumber.Bytes())
	j := float64(binary.BigEndian.Uint64(sum[:8])) / float64(^uint64(0))
	at := float64(life) * (fraction - renewJitter*j)
	return leaf.NotBefore.Add(time.Duration(at))
}

// issueCheck is what a reconciliation knows when it decides whether a kind needs a new certificate.
type issueCheck struct {
	roots   *x509.CertPool
	revoked map[string]bool
	// activeIssuer is the id (fingerprint) of the CA that issues now, from any current certificate of
	// the snapshot; "" when the snapshot shows none.
	activeIssuer string
	now          time.Time
}

// issueReason says why the node must request a new certificate of r's kind, or "" if what it holds
// will do. checkSANs is false for requirements the agent made up (no SANs known).
func issueReason(h *held, r *certv1.RequiredCertificate, checkSANs bool, c issueCheck) string {
	if h == nil {
		return "none held"
	}
	leaf := h.leaf()
	if !c.now.Before(leaf.NotAfter) {
		return "expired"
	}
	inter := x509.NewCertPool()
	for _, cert := range h.chain[1:] {
		inter.AddCert(cert)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: c.roots, Intermediates: inter, CurrentTime: c.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return "does not verify against the trust bundle"
	}
	if c.revoked[h.serial()] {
		return "revoked"
	}
	if !c.now.Before(renewAt(leaf, r.GetRenewFraction())) {
		return "renewal due"
	}
	if checkSANs && !sameSANs(leaf, r.GetDnsNames(), r.GetIpAddresses()) {
		return "names changed"
	}
	switch {
	case c.activeIssuer != "":
		// Any current certificate names the CA that issues now (e.g. after a CA activation).
		if !issuedBy(chains, c.activeIssuer) {
			return "not from the active CA"
		}
	case r.GetCurrent() == nil:
		if !h.noCurrentAt.IsZero() && c.now.Sub(h.noCurrentAt) < noCurrentRetry {
			return ""
		}
		return reasonNoCurrent
	}
	return ""
}

// issuedBy reports whether any verified chain runs through the CA with fingerprint id.
func issuedBy(chains [][]*x509.Certificate, id string) bool {
	for _, chain := range chains {
		for _, cert := range chain[1:] {
			if pki.Fingerprint(cert) == id {
				return true
			}
		}
	}
	return false
}

// sameSANs compares a certificate's DNS and IP SANs with the wanted ones as sets.
func sameSANs(leaf *x509.Certificate, dns, ips []string) bool {
	gotDNS := slices.Clone(leaf.DNSNames)
	wantDNS := slices.Clone(dns)
	slices.Sort(gotDNS)
	slices.Sort(wantDNS)
	if !slices.Equal(slices.Compact(gotDNS), slices.Compact(wantDNS)) {
		return false
	}
	var gotIP, wantIP []string
	for _, ip := range leaf.IPAddresses {
		gotIP = append(gotIP, ip.String())
	}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return false
		}
		wantIP = append(wantIP, ip.String())
	}
	slices.Sort(gotIP)
	slices.Sort(wantIP)
	return slices.Equal(slices.Compact(gotIP), slices.Compact(wantIP))
}

// activeIssuer returns the issuer of the snapshot's current certificates.
func activeIssuer(snap *certv1.WatchCredentialsResponse) string {
	for _, r := range snap.GetRequired() {
		if id := r.GetCurrent().GetIssuerId(); id != "" {
			return id
		}
	}
	return ""
}

// parseBundle parses a trust bundle and returns the pool and the fingerprints of its CAs.
func parseBundle(pemBytes []byte) (*x509.CertPool, []string, error) {
	if len(pemBytes) == 0 {
		return nil, nil, errors.New("empty trust bundle")
	}
	certs, err := pki.ParseCertsPEM(pemBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("trust bundle: %w", err)
	}
	pool := x509.NewCertPool()
	fps := make([]string, 0, len(certs))
	for _, c := range certs {
		pool.AddCert(c)
		fps = append(fps, pki.Fingerprint(c))
	}
	return pool, fps, nil
}

// parseCRL returns the revoked serials of the CRLs, one per trusted CA (empty input: none). Serials are
// random and 128 bits long, so one set serves the certificates of every CA.
func parseCRL(pemBytes []byte) (map[string]bool, error) {
	out := map[string]bool{}
	if len(pemBytes) == 0 {
		return out, nil
	}
	crls, err := pki.ParseCRLs(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("CRL: %w", err)
	}
	for _, crl := range crls {
		for _, e := range crl.RevokedCertificateEntries {
			out[pki.Serial(e.SerialNumber)] = true
		}
	}
	return out, nil
}

// readOptional reads a file that may be missing.
func readOptional(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}
