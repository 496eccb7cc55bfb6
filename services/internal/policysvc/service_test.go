package policysvc_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/policysvc"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

type env struct {
	*wardentest.Env
	admin policyv1.PolicyServiceClient
	st    *store.Store
}

func start(t *testing.T) env {
	t.Helper()
	e := wardentest.Start(t, wardentest.Options{Services: []string{"policy"}})
	return env{Env: e, admin: policyv1.NewPolicyServiceClient(e.AdminConn()), st: e.Platform.Client.Namespace(policysvc.Prefix)}
}

func (e env) current(t *testing.T) *policyv1.PolicyVersion {
	t.Helper()
	resp, err := e.admin.GetPolicy(t.Context(), &policyv1.GetPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetPolicy()
}

// etcdState is the raw current pointer and the number of stored versions.
func (e env) etcdState(t *testing.T) (store.KV, int) {
	t.Helper()
	kv, err := e.st.Get(t.Context(), "current")
	if err != nil {
		t.Fatal(err)
	}
	kvs, _, _, err := e.st.List(t.Context(), "versions/", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return kv, len(kvs)
}

func wantCode(t *testing.T, err error, code codes.Code, contains ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("error = %v, want %s", err, code)
	}
	for _, c := range contains {
		if !strings.Contains(status.Convert(err).Message(), c) {
			t.Fatalf("error %q does not mention %q", status.Convert(err).Message(), c)
		}
	}
}

func withProfile(doc *policyv1.PolicyDocument, p policyv1.TLSProfile) *policyv1.PolicyDocument {
	d := proto.CloneOf(doc)
	d.Defaults.Tls = &policyv1.TLSSettings{Profile: p}
	return d
}

func recvSnapshot(t *testing.T, s interface {
	Recv() (*policyv1.WatchPolicyResponse, error)
}) *policyv1.WatchPolicyResponse {
	t.Helper()
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if !m.GetHeartbeat() {
			return m
		}
	}
}

// The "done when" of the issue: a SetPolicy reaches a subscribed watcher with the new version.
func TestSetPolicyReachesWatcher(t *testing.T) {
	e := start(t)
	node := policyv1.NewPolicyServiceClient(e.NodeConn(identity.RoleWebapp, "web-1"))
	ctx := t.Context()

	v1 := e.current(t)
	if v1.GetNumber() != 1 || v1.GetAuthor() != "wardend" || v1.GetRevision() == 0 {
		t.Fatalf("initial version = %v", v1)
	}
	stream, err := node.WatchPolicy(ctx, &policyv1.WatchPolicyRequest{NodeId: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	first := recvSnapshot(t, stream)
	r := first.GetRendered()
	// web-1 is not registered: it is rendered with its identity's role.
	if r.GetPolicyNumber() != 1 || r.GetNodeId() != "web-1" || r.GetRole() != "webapp" || r.GetEnv()["WA_WEB_SECURITY_LEVEL"] != "MODERN" {
		t.Fatalf("first snapshot = %v", r)
	}
	if _, ok := r.GetEnv()["WA_SECRET"]; ok {
		t.Fatal("policy rendered WA_SECRET")
	}

	// Without allow_downgrade nothing is stored and nothing is sent.
	_, err = e.admin.SetPolicy(ctx, &policyv1.SetPolicyRequest{Document: withProfile(v1.GetDocument(), policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE)})
	wantCode(t, err, codes.FailedPrecondition, "defaults.tls.profile", "allow_downgrade")
	if e.current(t).GetNumber() != 1 {
		t.Fatal("refused downgrade was stored")
	}

	set, err := e.admin.SetPolicy(ctx, &policyv1.SetPolicyRequest{
		Document: withProfile(v1.GetDocument(), policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE), ExpectedRevision: v1.GetRevision(),
		Message: "legacy clients", AllowDowngrade: true, DowngradeReason: "old Android fleet until June",
	})
	if err != nil {
		t.Fatal(err)
	}
	v2 := set.GetPolicy()
	if v2.GetNumber() != 2 || v2.GetDowngradeReason() != "old Android fleet until June" || !strings.HasPrefix(v2.GetAuthor(), "spiffe://") {
		t.Fatalf("stored version = %v", v2)
	}
	if !hasIssue(v2.GetWarnings(), "defaults.tls.profile", "lowered from MODERN to INTERMEDIATE") {
		t.Fatalf("accepted downgrade not recorded as a warning: %v", v2.GetWarnings())
	}

	// The accepted downgrade is audited with its reason, in the transaction that stored it.
	if ev := findAudit(t, e, "policy/versions/2"); ev == nil || !strings.Contains(ev.GetReason(), "old Android fleet") ||
		!strings.Contains(ev.GetDetails()["downgrades"], "defaults.tls.profile") {
		t.Fatalf("audit event = %v", ev)
	}
	if ev := findAudit(t, e, "policy"); ev == nil || ev.GetOutcome() != audit.Denied {
		t.Fatalf("refused downgrade audit event = %v", ev)
	}
	g, ok := e.Platform.Metrics.(prometheus.Gatherer)
	if !ok {
		t.Fatalf("metrics registry %T cannot be gathered", e.Platform.Metrics)
	}
	if v := gauge(t, g, "warden_policy_current_number"); v != 2 {
		t.Fatalf("warden_policy_current_number = %v, want 2", v)
	}

	next := recvSnapshot(t, stream)
	if next.GetVersion() <= first.GetVersion() || next.GetRendered().GetPolicyNumber() != 2 ||
		next.GetRendered().GetEnv()["WA_WEB_SECURITY_LEVEL"] != "INTERMEDIATE" || next.GetRendered().GetTls().GetMinVersion() != "TLS1.2" {
		t.Fatalf("after SetPolicy: version %d (was %d), rendered %v", next.GetVersion(), first.GetVersion(), next.GetRendered())
	}
	if !hasIssue(next.GetRendered().GetWarnings(), "defaults.tls.profile", "weaker than MODERN") {
		t.Fatalf("downgrade in force not shown: %v", next.GetRendered().GetWarnings())
	}

	// A watcher that already holds this version gets nothing new, and an ack (a write under the
	// service's prefix that does not change the policy) does not produce a snapshot either.
	wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	same, err := node.WatchPolicy(wctx, &policyv1.WatchPolicyRequest{NodeId: "web-1", LastVersion: next.GetVersion()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.AckPolicy(ctx, &policyv1.AckPolicyRequest{NodeId: "web-1", Version: next.GetVersion(), PolicyNumber: 2}); err != nil {
		t.Fatal(err)
	}
	// The stream ends at the deadline: by the client's clock (DeadlineExceeded) or the server's (EOF).
	if m, err := same.Recv(); m != nil || (!errors.Is(err, io.EOF) && status.Code(err) != codes.DeadlineExceeded) {
		t.Fatalf("unchanged watcher got %v, %v; want nothing until the deadline", m, err)
	}

	st, err := e.admin.ListPolicyStatus(ctx, &policyv1.ListPolicyStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetCurrentNumber() != 2 || len(st.GetNodes()) != 1 || st.GetNodes()[0].GetNodeId() != "web-1" ||
		st.GetNodes()[0].GetPolicyNumber() != 2 || st.GetNodes()[0].GetAckedAt() == nil {
		t.Fatalf("status = %v", st)
	}

	// A routine success is status, not an audit event; a node that could not apply the policy is.
	if ev := findAudit(t, e, "policy/acks/web-1"); ev != nil {
		t.Fatalf("a successful ack was audited: %v", ev)
	}
	if _, err := node.AckPolicy(ctx, &policyv1.AckPolicyRequest{NodeId: "web-1", Version: next.GetVersion(), PolicyNumber: 2, Error: "nft: permission denied"}); err != nil {
		t.Fatal(err)
	}
	if ev := findAudit(t, e, "policy/acks/web-1"); ev == nil || ev.GetOutcome() != audit.Failed || ev.GetReason() != "nft: permission denied" {
		t.Fatalf("failed ack audit event = %v", ev)
	}
}

func findAudit(t *testing.T, e env, target string) *adminv1.AuditEvent {
	t.Helper()
	kvs, _, _, err := e.Platform.Audit.Store().List(t.Context(), "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		ev := &adminv1.AuditEvent{}
		if err := proto.Unmarshal(kv.Value, ev); err == nil && ev.GetTarget() == target {
			return ev
		}
	}
	return nil
}

func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func hasIssue(list []*policyv1.Issue, path, contains string) bool {
	for _, i := range list {
		if i.GetFieldPath() == path && strings.Contains(i.GetMessage(), contains) {
			return true
		}
	}
	return false
}

func TestAckAndStatus(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	web2 := policyv1.NewPolicyServiceClient(e.NodeConn(identity.RoleWebapp, "web-2"))
	core1 := policyv1.NewPolicyServiceClient(e.NodeConn(identity.RoleCoreapp, "core-1"))
	cases := []struct {
		name   string
		client policyv1.PolicyServiceClient
		req    *policyv1.AckPolicyRequest
		code   codes.Code
	}{
		{"own ack", web2, &policyv1.AckPolicyRequest{NodeId: "web-2", Version: 5, PolicyNumber: 1}, codes.OK},
		{"ack with an error", core1, &policyv1.AckPolicyRequest{NodeId: "core-1", Version: 5, PolicyNumber: 1, Error: "reload failed"}, codes.OK},
		{"another node's ack", web2, &policyv1.AckPolicyRequest{NodeId: "core-1", PolicyNumber: 1}, codes.PermissionDenied},
		{"admin is not a node", e.admin, &policyv1.AckPolicyRequest{NodeId: "web-2", PolicyNumber: 1}, codes.PermissionDenied},
		{"no such version", web2, &policyv1.AckPolicyRequest{NodeId: "web-2", PolicyNumber: 9}, codes.InvalidArgument},
		{"no version", web2, &policyv1.AckPolicyRequest{NodeId: "web-2"}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.client.AckPolicy(ctx, tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("AckPolicy = %v, want %s", err, tc.code)
			}
		})
	}
	page1, err := e.admin.ListPolicyStatus(ctx, &policyv1.ListPolicyStatusRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(page1.GetNodes()) != 1 || page1.GetNodes()[0].GetNodeId() != "core-1" || page1.GetNodes()[0].GetError() != "reload failed" || page1.GetNextPageToken() == "" {
		t.Fatalf("page 1 = %v", page1)
	}
	page2, err := e.admin.ListPolicyStatus(ctx, &policyv1.ListPolicyStatusRequest{PageSize: 1, PageToken: page1.GetNextPageToken()})
	if err != nil {
		t.Fatal(err)
	}
	if len(page2.GetNodes()) != 1 || page2.GetNodes()[0].GetNodeId() != "web-2" || page2.GetNextPageToken() != "" {
		t.Fatalf("page 2 = %v", page2)
	}
	_, err = e.admin.ListPolicyStatus(ctx, &policyv1.ListPolicyStatusRequest{PageToken: "!!"})
	wantCode(t, err, codes.InvalidArgument, "page_token")
}

func TestSetPolicyValidationAndDowngrades(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	base := e.current(t).GetDocument()
	edit := func(f func(d *policyv1.PolicyDocument)) *policyv1.PolicyDocument {
		d := proto.CloneOf(base)
		f(d)
		return d
	}
	cases := []struct {
		name     string
		req      *policyv1.SetPolicyRequest
		code     codes.Code
		contains []string
	}{
		{"no document", &policyv1.SetPolicyRequest{}, codes.InvalidArgument, []string{"document"}},
		{"invalid header, every error with its path", &policyv1.SetPolicyRequest{Document: edit(func(d *policyv1.PolicyDocument) {
			d.Defaults.Headers.XFrameOptions = proto.String("ALLOW-FROM https://x")
			d.Roles = map[string]*policyv1.PolicySettings{"webapp": {Network: &policyv1.NetworkSettings{}}}
		})}, codes.InvalidArgument, []string{"defaults.headers.x_frame_options", "roles[webapp].network"}},
		{"invalid even with allow_downgrade", &policyv1.SetPolicyRequest{AllowDowngrade: true, DowngradeReason: "x", Document: edit(func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Reach[2].FromZones = []string{"clients"}
		})}, codes.InvalidArgument, []string{"defaults.network.reach[2].from_zones[0]"}},
		{"verify off", &policyv1.SetPolicyRequest{Document: edit(func(d *policyv1.PolicyDocument) {
			d.Nodes = map[string]*policyv1.PolicySettings{"web-1": {DbSsl: &policyv1.DBSSLSettings{Verify: proto.Bool(false)}}}
		})}, codes.FailedPrecondition, []string{"nodes[web-1].db_ssl.verify"}},
		{"HSTS below the minimum", &policyv1.SetPolicyRequest{Document: edit(func(d *policyv1.PolicyDocument) {
			d.Defaults.Headers.StrictTransportSecurity = proto.String("max-age=60; includeSubDomains")
		})}, codes.FailedPrecondition, []string{"defaults.headers.strict_transport_security"}},
		{"wider zones", &policyv1.SetPolicyRequest{Document: edit(func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Zones[1].Cidrs = []string{"10.2.0.0/24"}
		})}, codes.FailedPrecondition, []string{"defaults.network.reach[0].from_zones", "defaults.network.reach[1].from_zones"}},
		{"allow_downgrade without a reason", &policyv1.SetPolicyRequest{AllowDowngrade: true, Document: edit(func(d *policyv1.PolicyDocument) {
			d.Roles = map[string]*policyv1.PolicySettings{"webapp": {Tls: &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_OLD}}}
		})}, codes.FailedPrecondition, []string{"roles[webapp].tls.profile"}},
	}
	before, count := e.etcdState(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.admin.SetPolicy(ctx, tc.req)
			wantCode(t, err, tc.code, tc.contains...)
			after, n := e.etcdState(t)
			if after.ModRevision != before.ModRevision || n != count {
				t.Fatalf("refused SetPolicy changed etcd: current rev %d → %d, versions %d → %d", before.ModRevision, after.ModRevision, count, n)
			}
			if tc.req.GetDocument() == nil {
				return
			}
			// The dry run reports the same findings.
			v, err := e.admin.ValidatePolicy(ctx, &policyv1.ValidatePolicyRequest{Document: tc.req.GetDocument()})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.contains {
				list := v.GetWarnings()
				if tc.code == codes.InvalidArgument {
					list = v.GetErrors()
				}
				if !strings.Contains(issuePaths(list), c) {
					t.Fatalf("ValidatePolicy %v / %v lacks %s", v.GetErrors(), v.GetWarnings(), c)
				}
			}
		})
	}
}

func issuePaths(list []*policyv1.Issue) string {
	var b strings.Builder
	for _, i := range list {
		b.WriteString(i.GetFieldPath() + " ")
	}
	return b.String()
}

func TestOptimisticConcurrency(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	v1 := e.current(t)
	doc := proto.CloneOf(v1.GetDocument())
	doc.Defaults.Headers.ContentSecurityPolicy = proto.String("default-src 'self'; frame-ancestors 'none'")
	v2, err := e.admin.SetPolicy(ctx, &policyv1.SetPolicyRequest{Document: doc, ExpectedRevision: v1.GetRevision(), Message: "tighter CSP"})
	if err != nil {
		t.Fatal(err)
	}
	before, count := e.etcdState(t)
	if before.ModRevision != v2.GetPolicy().GetRevision() {
		t.Fatalf("revision %d is not the current pointer's %d", v2.GetPolicy().GetRevision(), before.ModRevision)
	}
	// A writer that read version 1 is refused.
	_, err = e.admin.SetPolicy(ctx, &policyv1.SetPolicyRequest{Document: v1.GetDocument(), ExpectedRevision: v1.GetRevision()})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = e.admin.RollbackPolicy(ctx, &policyv1.RollbackPolicyRequest{ToNumber: 1, ExpectedRevision: v1.GetRevision()})
	wantCode(t, err, codes.FailedPrecondition)
	after, n := e.etcdState(t)
	if after.ModRevision != before.ModRevision || string(after.Value) != string(before.Value) || n != count {
		t.Fatal("a stale write changed etcd")
	}
	if got := e.current(t); got.GetNumber() != 2 || got.GetMessage() != "tighter CSP" {
		t.Fatalf("current = %v", got)
	}
}

func TestHistoryDiffRollback(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	v1 := e.current(t)
	profiles := []policyv1.TLSProfile{policyv1.TLSProfile_TLS_PROFILE_OLD, policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE, policyv1.TLSProfile_TLS_PROFILE_MODERN}
	for _, p := range profiles { // versions 2, 3, 4
		if _, err := e.admin.SetPolicy(ctx, &policyv1.SetPolicyRequest{Document: withProfile(v1.GetDocument(), p), Message: p.String(),
			AllowDowngrade: true, DowngradeReason: "test"}); err != nil {
			t.Fatal(err)
		}
	}

	var numbers []uint64
	tok := ""
	for range 10 {
		page, err := e.admin.ListPolicyHistory(ctx, &policyv1.ListPolicyHistoryRequest{PageSize: 3, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.GetVersions() {
			numbers = append(numbers, v.GetNumber())
		}
		if tok = page.GetNextPageToken(); tok == "" {
			break
		}
	}
	if want := []uint64{4, 3, 2, 1}; !equal(numbers, want) {
		t.Fatalf("history = %v, want %v", numbers, want)
	}

	d, err := e.admin.DiffPolicy(ctx, &policyv1.DiffPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d.GetFromNumber() != 3 || d.GetToNumber() != 4 || len(d.GetChanges()) != 1 ||
		d.GetChanges()[0].GetFieldPath() != "defaults.tls.profile" || d.GetChanges()[0].GetOldValue() != "TLS_PROFILE_INTERMEDIATE" || d.GetChanges()[0].GetNewValue() != "TLS_PROFILE_MODERN" {
		t.Fatalf("diff = %v", d)
	}
	if d, err := e.admin.DiffPolicy(ctx, &policyv1.DiffPolicyRequest{FromNumber: 1, ToNumber: 4}); err != nil || len(d.GetChanges()) != 0 {
		t.Fatalf("diff 1..4 = %v, %v; want no changes", d, err)
	}
	_, err = e.admin.DiffPolicy(ctx, &policyv1.DiffPolicyRequest{ToNumber: 1})
	wantCode(t, err, codes.InvalidArgument, "from_number")

	// Rolling back to OLD is a downgrade like any other.
	_, err = e.admin.RollbackPolicy(ctx, &policyv1.RollbackPolicyRequest{ToNumber: 2})
	wantCode(t, err, codes.FailedPrecondition, "defaults.tls.profile")
	rb, err := e.admin.RollbackPolicy(ctx, &policyv1.RollbackPolicyRequest{ToNumber: 2, ExpectedRevision: e.current(t).GetRevision(),
		AllowDowngrade: true, DowngradeReason: "revert to the old fleet setting"})
	if err != nil {
		t.Fatal(err)
	}
	got := rb.GetPolicy()
	if got.GetNumber() != 5 || got.GetRollbackOf() != 2 || !proto.Equal(got.GetDocument(), withProfile(v1.GetDocument(), profiles[0])) ||
		got.GetMessage() != "rollback to version 2" {
		t.Fatalf("rollback = %v", got)
	}
	_, err = e.admin.RollbackPolicy(ctx, &policyv1.RollbackPolicyRequest{ToNumber: 42})
	wantCode(t, err, codes.NotFound)
	_, err = e.admin.GetPolicy(ctx, &policyv1.GetPolicyRequest{Number: 42})
	wantCode(t, err, codes.NotFound)
	if old, err := e.admin.GetPolicy(ctx, &policyv1.GetPolicyRequest{Number: 3}); err != nil || old.GetPolicy().GetMessage() != "TLS_PROFILE_INTERMEDIATE" {
		t.Fatalf("GetPolicy(3) = %v, %v", old, err)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRenderAndImport(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	web1 := policyv1.NewPolicyServiceClient(e.NodeConn(identity.RoleWebapp, "web-1"))
	core1 := policyv1.NewPolicyServiceClient(e.NodeConn(identity.RoleCoreapp, "core-1"))
	cases := []struct {
		name   string
		client policyv1.PolicyServiceClient
		req    *policyv1.RenderPolicyRequest
		code   codes.Code
		check  func(r *policyv1.RenderedPolicy) bool
	}{
		{"node renders itself", web1, &policyv1.RenderPolicyRequest{NodeId: "web-1"}, codes.OK, func(r *policyv1.RenderedPolicy) bool {
			return r.GetRole() == "webapp" && r.GetEnv()["WA_WEB_SECURITY_LEVEL"] == "MODERN" && r.GetAdminHeaders()["X-Frame-Options"] == "DENY"
		}},
		{"coreapp renders itself", core1, &policyv1.RenderPolicyRequest{NodeId: "core-1"}, codes.OK, func(r *policyv1.RenderedPolicy) bool {
			return r.GetRole() == "coreapp" && r.GetEnv()["WA_DB_CONNECTION_OPTION"] != "" && hasIssue(r.GetWarnings(), "env.WA_DB_CONNECTION_OPTION", "deprecated")
		}},
		{"node may not preview a role", web1, &policyv1.RenderPolicyRequest{Role: "coreapp"}, codes.PermissionDenied, nil},
		{"node may not render another", web1, &policyv1.RenderPolicyRequest{NodeId: "core-1"}, codes.PermissionDenied, nil},
		{"admin role preview", e.admin, &policyv1.RenderPolicyRequest{Role: "coreapp", Number: 1}, codes.OK, func(r *policyv1.RenderedPolicy) bool {
			return r.GetNodeId() == "" && r.GetPolicyNumber() == 1 && strings.Contains(r.GetNftables(), "tcp dport 6252")
		}},
		{"admin, unregistered node with a role", e.admin, &policyv1.RenderPolicyRequest{NodeId: "web-9", Role: "webapp"}, codes.OK, func(r *policyv1.RenderedPolicy) bool {
			return r.GetNodeId() == "web-9" && r.GetTls().GetMinVersion() == "TLS1.3"
		}},
		{"admin, unregistered node", e.admin, &policyv1.RenderPolicyRequest{NodeId: "web-9"}, codes.NotFound, nil},
		{"admin, bad role", e.admin, &policyv1.RenderPolicyRequest{Role: "db"}, codes.InvalidArgument, nil},
		{"admin, no such version", e.admin, &policyv1.RenderPolicyRequest{Role: "webapp", Number: 9}, codes.NotFound, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.client.RenderPolicy(ctx, tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("RenderPolicy = %v, want %s", err, tc.code)
			}
			if tc.check != nil && !tc.check(resp.GetRendered()) {
				t.Fatalf("rendered = %v", resp.GetRendered())
			}
		})
	}

	imp, err := e.admin.ImportDBConnectionOption(ctx, &policyv1.ImportDBConnectionOptionRequest{
		Value: `{"ssl":{"ca":"/etc/ssl/db-ca.pem","rejectUnauthorized":false},"connectTimeout":5}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if imp.GetDbSsl().GetCaPath() != "/etc/ssl/db-ca.pem" || imp.GetDbSsl().Verify == nil || imp.GetDbSsl().GetVerify() ||
		!hasIssue(imp.GetWarnings(), "value", "connectTimeout") || !hasIssue(imp.GetWarnings(), "db_ssl.verify", "not verified") ||
		!hasIssue(imp.GetWarnings(), "db_ssl.ca_path", "outside") {
		t.Fatalf("import = %v", imp)
	}
	_, err = e.admin.ImportDBConnectionOption(ctx, &policyv1.ImportDBConnectionOptionRequest{Value: `{"ssl":`})
	wantCode(t, err, codes.InvalidArgument, "value")
}

// The watcher's stream ends cleanly when the client goes away.
func TestWatchPolicyCancel(t *testing.T) {
	e := start(t)
	node := policyv1.NewPolicyServiceClient(e.NodeConn(identity.RoleCoreapp, "core-1"))
	ctx, cancel := context.WithCancel(t.Context())
	s, err := node.WatchPolicy(ctx, &policyv1.WatchPolicyRequest{NodeId: "core-1"})
	if err != nil {
		t.Fatal(err)
	}
	if m := recvSnapshot(t, s); m.GetRendered().GetRole() != "coreapp" {
		t.Fatalf("snapshot = %v", m)
	}
	cancel()
	if _, err := s.Recv(); status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
		t.Fatalf("recv after cancel = %v", err)
	}
	other := policyv1.NewPolicyServiceClient(e.NodeConn(identity.RoleCoreapp, "core-2"))
	s2, err := other.WatchPolicy(t.Context(), &policyv1.WatchPolicyRequest{NodeId: "core-1"})
	if err == nil {
		_, err = s2.Recv()
	}
	wantCode(t, err, codes.PermissionDenied)
}
