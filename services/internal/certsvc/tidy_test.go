package certsvc

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

// certKeys are the keys tidy may remove for a certificate, and whether each exists now.
func (e *env) certKeys(node, serial string) map[string]bool {
	e.t.Helper()
	out := map[string]bool{}
	for _, prefix := range []string{keyCert(serial), keyNodeCert(node, serial)} {
		out[prefix] = len(e.dump(prefix)) == 1
	}
	for k, v := range e.dump(prefByKey + node + "/") {
		if v == serial {
			out[strings.TrimPrefix(k, Prefix)] = true
		}
	}
	return out
}

func TestTidyPrunesLongExpiredCertificates(t *testing.T) {
	// The job tidies once at start and then not for a very long time (the clock below moves by days):
	// the calls below are the only ones after that. A run is bounded to one certificate, so a backlog
	// is worked off over several runs.
	e := start(t, func(c *Config) { c.TidyEvery, c.tidyMax = 100*365*24*time.Hour, 1 })
	ctx := t.Context()
	admin := e.adminClient()
	web := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP)
	first := web.cert.Leaf.SerialNumber.Text(16)
	_, csr := newCSR(t, pki.DefaultKeyType, "web-1")
	renewed, err := e.nodeClient(web).IssueCertificate(ctx, &certv1.IssueCertificateRequest{NodeId: "web-1", Kind: certv1.CertKind_CERT_KIND_IDENTITY, CsrPem: csr})
	if err != nil {
		t.Fatal(err)
	}
	current := renewed.GetCertificate().GetSerial()
	gone := e.bootstrapNode("web-2", certv1.NodeRole_NODE_ROLE_WEBAPP)
	goneSerial := gone.cert.Leaf.SerialNumber.Text(16)
	if _, err := admin.DecommissionNode(ctx, &certv1.DecommissionNodeRequest{NodeId: "web-2", Reason: "host retired"}); err != nil {
		t.Fatal(err)
	}
	firstKeys, goneKeys := e.certKeys("web-1", first), e.certKeys("web-2", goneSerial)
	for k, ok := range firstKeys {
		if !ok {
			t.Fatalf("before tidy, %s is missing: the test does not set up what it means to", k)
		}
	}

	e.clock.Advance(25 * time.Hour) // every identity above has expired, but within the retention
	if n, more, err := e.svc.tidy(ctx, e.clock.Now()); err != nil || n != 0 || more {
		t.Fatalf("tidy within the retention removed %d (more %v, %v)", n, more, err)
	}
	if _, err := admin.GetCertificate(ctx, &certv1.GetCertificateRequest{Serial: first}); err != nil {
		t.Fatalf("an expired certificate within the retention must still be shown: %v", err)
	}

	e.clock.Advance(DefaultRetention)
	total := 0
	for runs := 1; ; runs++ {
		n, more, err := e.svc.tidy(ctx, e.clock.Now())
		if err != nil || n > 1 {
			t.Fatalf("run %d, bounded to 1, removed %d (%v)", runs, n, err)
		}
		total += n
		if !more {
			break
		}
		if runs == 7 {
			t.Fatal("tidy keeps reporting more to do")
		}
	}
	// The harness's serving and admin certificates (an hour, no node) have expired as well.
	if total != 4 {
		t.Fatalf("tidy past the retention removed %d, want 4 (the renewed-away, the decommissioned node's, the harness's serving and admin)", total)
	}
	for _, keys := range []map[string]bool{firstKeys, goneKeys} {
		for k := range keys {
			if len(e.dump(k)) != 0 {
				t.Errorf("%s is still stored", k)
			}
		}
	}
	for _, serial := range []string{first, goneSerial} {
		if _, err := admin.GetCertificate(ctx, &certv1.GetCertificateRequest{Serial: serial}); status.Code(err) != codes.NotFound {
			t.Errorf("GetCertificate(%s) after tidy: %v, want NotFound", serial, err)
		}
	}
	// A node offline since its certificate expired keeps it: it is still the node's current one.
	if got, err := admin.GetCertificate(ctx, &certv1.GetCertificateRequest{Serial: current}); err != nil || got.GetCertificate().GetSerial() != current {
		t.Fatalf("the current (expired) certificate was pruned: %v", err)
	}
	if len(e.dump(keyCurrent("web-1", kindIdentity))) != 1 {
		t.Fatal("current/ of web-1 is gone")
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e.svc.pruned)
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 4 {
		t.Errorf("warden_cert_records_pruned_total: %v (%v), want 4", mfs, err)
	}
	audited := map[string]bool{}
	for _, ev := range e.auditEvents() {
		if ev.GetReason() == "records of expired certificates pruned" {
			for serial := range strings.SplitSeq(ev.GetDetails()["serials"], ",") {
				audited[serial] = true
			}
		}
	}
	if !audited[first] || !audited[goneSerial] || len(audited) != 4 {
		t.Errorf("audited as pruned: %v, want %s, %s and the harness's two", audited, first, goneSerial)
	}
	if n, _, err := e.svc.tidy(ctx, e.clock.Now()); err != nil || n != 0 {
		t.Fatalf("a second tidy removed %d (%v)", n, err)
	}
}

// TestTidyJobRuns: the elected replica's CRL job tidies every TidyEvery.
func TestTidyJobRuns(t *testing.T) {
	e := start(t, func(c *Config) { c.TidyEvery, c.Retention = 20*time.Millisecond, time.Hour })
	web := e.bootstrapNode("web-1", certv1.NodeRole_NODE_ROLE_WEBAPP)
	first := web.cert.Leaf.SerialNumber.Text(16)
	_, csr := newCSR(t, pki.DefaultKeyType, "web-1")
	if _, err := e.nodeClient(web).IssueCertificate(t.Context(), &certv1.IssueCertificateRequest{NodeId: "web-1", Kind: certv1.CertKind_CERT_KIND_IDENTITY, CsrPem: csr}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(26 * time.Hour)
	etcdtest.Eventually(t, 20*time.Second, func() bool { return len(e.dump(keyCert(first))) == 0 }, "the renewed-away identity pruned by the job")
}
