package node

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/agent/agenttest"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

func TestFileNames(t *testing.T) {
	want := map[certv1.CertKind][2]string{
		certv1.CertKind_CERT_KIND_IDENTITY:              {"identity.crt", "identity.key"},
		certv1.CertKind_CERT_KIND_WEBAPP_HTTPS:          {"webapp-https.crt", "webapp-https.key"},
		certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION: {"coreapp-communication.crt", "coreapp-communication.key"},
		certv1.CertKind_CERT_KIND_COREAPP_CONTROL:       {"coreapp-control.crt", "coreapp-control.key"},
		certv1.CertKind_CERT_KIND_DB_CLIENT:             {"db-client.crt", "db-client.key"},
	}
	for kind, names := range want {
		if CertFile(kind) != names[0] || KeyFile(kind) != names[1] {
			t.Errorf("%v: files %s, %s; want %s, %s", kind, CertFile(kind), KeyFile(kind), names[0], names[1])
		}
	}
	for _, tc := range []struct {
		role identity.Role
		kind certv1.CertKind
		want bool
	}{
		{identity.RoleWebapp, certv1.CertKind_CERT_KIND_WEBAPP_HTTPS, true},
		{identity.RoleWebapp, certv1.CertKind_CERT_KIND_COREAPP_CONTROL, false},
		{identity.RoleWebapp, certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION, false},
		{identity.RoleCoreapp, certv1.CertKind_CERT_KIND_WEBAPP_HTTPS, false},
		{identity.RoleCoreapp, certv1.CertKind_CERT_KIND_COREAPP_CONTROL, true},
		{identity.RoleCoreapp, certv1.CertKind_CERT_KIND_DB_CLIENT, true},
	} {
		if got := roleHolds(tc.role, tc.kind); got != tc.want {
			t.Errorf("roleHolds(%s, %v) = %v, want %v", tc.role, tc.kind, got, tc.want)
		}
	}
}

func TestRenewAt(t *testing.T) {
	ca := agenttest.NewCA(t)
	leaf := ca.Mint(agenttest.Node(identity.RoleWebapp, "w1"), 10*time.Hour).Cert
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	at := renewAt(leaf, 0.5)
	lo := leaf.NotBefore.Add(time.Duration(float64(life) * (0.5 - renewJitter)))
	hi := leaf.NotBefore.Add(life / 2)
	if at.Before(lo) || at.After(hi) {
		t.Errorf("renewAt(0.5) = %s, want within [%s, %s]", at, lo, hi)
	}
	if again := renewAt(leaf, 0.5); !again.Equal(at) {
		t.Errorf("renewAt is not stable: %s then %s", at, again)
	}
	for _, bad := range []float64{0, -1, 1, 2} {
		got := renewAt(leaf, bad)
		def := leaf.NotBefore.Add(time.Duration(float64(life) * defaultRenewFraction))
		if got.After(def) || got.Before(def.Add(-time.Duration(float64(life)*renewJitter))) {
			t.Errorf("renewAt(%v) = %s, want the default fraction", bad, got)
		}
	}
}

func heldOf(t *testing.T, l agenttest.Leaf, kind certv1.CertKind) *held {
	t.Helper()
	h, err := parseHeld(kind, l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestIssueReason(t *testing.T) {
	ca := agenttest.NewCA(t)
	other := agenttest.NewCA(t)
	id := agenttest.Node(identity.RoleWebapp, "w1")
	kind := certv1.CertKind_CERT_KIND_WEBAPP_HTTPS
	good := heldOf(t, ca.Mint(id, 10*time.Hour), kind)
	foreign := heldOf(t, other.Mint(id, 10*time.Hour), kind)
	now := time.Now()
	caID := pki.Fingerprint(ca.Cert)
	current := &certv1.Certificate{Serial: good.serial(), IssuerId: caID}
	req := func(mod func(r *certv1.RequiredCertificate)) *certv1.RequiredCertificate {
		r := &certv1.RequiredCertificate{Kind: kind, DnsNames: []string{"localhost"}, IpAddresses: []string{"127.0.0.1"}, RenewFraction: 0.6667, Current: current}
		if mod != nil {
			mod(r)
		}
		return r
	}
	base := issueCheck{roots: ca.Pool(), revoked: map[string]bool{}, activeIssuer: caID, now: now}
	recent := heldOf(t, ca.Mint(id, 10*time.Hour), kind)
	recent.noCurrentAt = now
	older := heldOf(t, ca.Mint(id, 10*time.Hour), kind)
	older.noCurrentAt = now.Add(-2 * noCurrentRetry)

	for _, tc := range []struct {
		name      string
		h         *held
		r         *certv1.RequiredCertificate
		checkSANs bool
		check     func(c issueCheck) issueCheck
		want      string
	}{
		{name: "up to date", h: good, r: req(nil), checkSANs: true, want: ""},
		{name: "none held", h: nil, r: req(nil), want: "none held"},
		{name: "expired", h: good, r: req(nil), check: func(c issueCheck) issueCheck { c.now = now.Add(11 * time.Hour); return c }, want: "expired"},
		{name: "renewal due", h: good, r: req(nil), check: func(c issueCheck) issueCheck { c.now = now.Add(7 * time.Hour); return c }, want: "renewal due"},
		{name: "renew fraction pushed", h: good, r: req(func(r *certv1.RequiredCertificate) { r.RenewFraction = 0.001 }), want: "renewal due"},
		{name: "not in bundle", h: foreign, r: req(nil), want: "does not verify against the trust bundle"},
		{name: "revoked", h: good, r: req(nil), check: func(c issueCheck) issueCheck { c.revoked = map[string]bool{good.serial(): true}; return c }, want: "revoked"},
		{name: "names changed", h: good, r: req(func(r *certv1.RequiredCertificate) { r.DnsNames = []string{"web.example"} }), checkSANs: true, want: "names changed"},
		{name: "names ignored for made-up requirement", h: good, r: req(func(r *certv1.RequiredCertificate) { r.DnsNames = nil }), checkSANs: false, want: ""},
		{name: "ip changed", h: good, r: req(func(r *certv1.RequiredCertificate) { r.IpAddresses = []string{"10.0.0.1"} }), checkSANs: true, want: "names changed"},
		{name: "other CA active", h: good, r: req(nil), check: func(c issueCheck) issueCheck { c.activeIssuer = pki.Fingerprint(other.Cert); return c }, want: "not from the active CA"},
		{name: "no current anywhere", h: good, r: req(func(r *certv1.RequiredCertificate) { r.Current = nil }), check: func(c issueCheck) issueCheck { c.activeIssuer = ""; return c }, want: reasonNoCurrent},
		{name: "no current but just re-issued for that", h: recent, r: req(func(r *certv1.RequiredCertificate) { r.Current = nil }), check: func(c issueCheck) issueCheck { c.activeIssuer = ""; return c }, want: ""},
		{name: "no current long after re-issuing for that", h: older, r: req(func(r *certv1.RequiredCertificate) { r.Current = nil }), check: func(c issueCheck) issueCheck { c.activeIssuer = ""; return c }, want: reasonNoCurrent},
		{name: "current of another kind names the issuer", h: good, r: req(func(r *certv1.RequiredCertificate) { r.Current = nil }), want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			if tc.check != nil {
				c = tc.check(c)
			}
			if got := issueReason(tc.h, tc.r, tc.checkSANs, c); got != tc.want {
				t.Errorf("issueReason = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseHeldRefusesMismatchedKey(t *testing.T) {
	ca := agenttest.NewCA(t)
	a := ca.Mint(agenttest.Node(identity.RoleWebapp, "a"), time.Hour)
	b := ca.Mint(agenttest.Node(identity.RoleWebapp, "b"), time.Hour)
	if _, err := parseHeld(certv1.CertKind_CERT_KIND_IDENTITY, a.CertPEM, b.KeyPEM); err == nil {
		t.Fatal("parseHeld accepted a key that does not belong to the certificate")
	}
}

func TestLoadHeldMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadHeld(dir, certv1.CertKind_CERT_KIND_IDENTITY); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("loadHeld on an empty dir: %v, want ErrNotExist", err)
	}
	ca := agenttest.NewCA(t)
	l := ca.Mint(agenttest.Node(identity.RoleWebapp, "w"), time.Hour)
	if err := os.WriteFile(filepath.Join(dir, "identity.crt"), l.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadHeld(dir, certv1.CertKind_CERT_KIND_IDENTITY); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("loadHeld without key: %v, want ErrNotExist", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "identity.key"), l.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := loadHeld(dir, certv1.CertKind_CERT_KIND_IDENTITY)
	if err != nil {
		t.Fatal(err)
	}
	if h.serial() != (&held{chain: []*x509.Certificate{l.Cert}}).serial() {
		t.Errorf("loaded serial %s", h.serial())
	}
}

// TestExpiredIdentityWithoutToken: an agent whose identity expired and that has no join token keeps
// running (it serves what it has) and says clearly what to do.
func TestExpiredIdentityWithoutToken(t *testing.T) {
	ca, err := pki.NewRootCA(agenttest.TrustDomain, 24*time.Hour, time.Now().Add(-5*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		t.Fatal(err)
	}
	id := agenttest.Node(identity.RoleWebapp, "web-1")
	cert, _, err := ca.Issue(pki.Template{ID: id, Lifetime: time.Hour, Client: true, Server: true}, key.Public(), time.Now().Add(-3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := pki.MarshalKeyPEM(key)
	dataDir := t.TempDir()
	certsDir := filepath.Join(dataDir, "certs")
	if err := os.MkdirAll(certsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certsDir, "identity.crt"), pki.EncodeCertsPEM(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certsDir, "identity.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	tracker := status.NewTracker(dataDir, status.Status{})
	a, err := New(Config{
		Role: identity.RoleWebapp, NodeID: "web-1", DataDir: dataDir, Servers: []string{"127.0.0.1:1"},
		GroupID: materialize.NoGroup, State: &live.State{}, Status: tracker, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ensureIdentity(t.Context()); err != nil {
		t.Fatalf("ensureIdentity: %v", err)
	}
	errs := strings.Join(tracker.Snapshot().Errors, "\n")
	if !strings.Contains(errs, "identity certificate expired") || !strings.Contains(errs, "--join-token") {
		t.Errorf("status errors %q do not explain the expired identity", errs)
	}

	// With another node's name the agent refuses to start rather than act as someone else.
	b, err := New(Config{
		Role: identity.RoleCoreapp, NodeID: "web-1", DataDir: dataDir, Servers: []string{"127.0.0.1:1"},
		GroupID: materialize.NoGroup, State: &live.State{}, Status: tracker, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ensureIdentity(t.Context()); err == nil || !strings.Contains(err.Error(), "--role") {
		t.Errorf("ensureIdentity with the wrong role = %v", err)
	}
}

// TestParseCRLEveryCA: during a CA rotation the snapshot carries one CRL per trusted CA; a certificate
// listed in any of them is refused.
func TestParseCRLEveryCA(t *testing.T) {
	oldCA, newCA := agenttest.NewCA(t), agenttest.NewCA(t)
	id := agenttest.Node(identity.RoleWebapp, "w1")
	fromOld, fromNew, kept := oldCA.Mint(id, time.Hour), newCA.Mint(id, time.Hour), newCA.Mint(id, time.Hour)
	crlPEM := func(ca *agenttest.CA, revoked ...agenttest.Leaf) []byte {
		var entries []pki.Revoked
		for _, l := range revoked {
			entries = append(entries, pki.Revoked{Serial: l.Cert.SerialNumber, At: time.Now()})
		}
		der, err := ca.CreateCRL(entries, 7, time.Now(), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	}
	tests := []struct {
		name    string
		in      []byte
		revoked []agenttest.Leaf
		err     string
	}{
		{name: "none yet", in: nil},
		{name: "one CA", in: crlPEM(newCA, fromNew), revoked: []agenttest.Leaf{fromNew}},
		{name: "rotation: both CAs", in: append(crlPEM(newCA, fromNew), crlPEM(oldCA, fromOld)...), revoked: []agenttest.Leaf{fromNew, fromOld}},
		{name: "second CRL broken", in: append(crlPEM(newCA), []byte("-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n")...), err: "parse CRL 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCRL(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseCRL error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.revoked) {
				t.Errorf("%d serials revoked, want %d", len(got), len(tt.revoked))
			}
			for _, l := range tt.revoked {
				if !got[pki.Serial(l.Cert.SerialNumber)] {
					t.Errorf("serial %s not revoked", pki.Serial(l.Cert.SerialNumber))
				}
			}
			if got[pki.Serial(kept.Cert.SerialNumber)] {
				t.Error("a certificate no CRL lists is revoked")
			}
		})
	}
}
