package policysvc

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
)

func TestRender(t *testing.T) {
	doc := docWith(func(d *policyv1.PolicyDocument) {
		settings(d, "roles:webapp").Tls = &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE}
		settings(d, "nodes:web-1").Tls = &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_OLD}
		dbSSL(d, "nodes:web-1").Verify = proto.Bool(false)
		// Explicit values survive a role switching the mode.
		headers(d, "defaults").ContentSecurityPolicy = proto.String("default-src 'self'")
		headers(d, "roles:webapp").Mode = policyv1.HeaderMode_HEADER_MODE_COMPATIBLE
		headers(d, "roles:webapp").ApiPathPrefix = proto.String("/api/")
		extra(d, "defaults", "Permissions-Policy", "camera=()")
	})
	cases := []struct {
		name, role, zone, node string
		check                  func(t *testing.T, r *policyv1.RenderedPolicy)
	}{
		{"webapp role", roleWebapp, "", "", func(t *testing.T, r *policyv1.RenderedPolicy) {
			wantEnv(t, r, map[string]string{
				"WA_WEB_SECURITY_LEVEL": "INTERMEDIATE", "WA_DB_SSL_VERIFY": "1",
				"WA_DB_SSL_CA": "/usr/local/waent/data/certs/db-ca.crt",
			}, "WA_SECRET", "WA_DB_CONNECTION_OPTION")
			if r.GetTls().GetMinVersion() != "TLS1.2" || r.GetTls().GetMaxVersion() != "TLS1.3" || r.GetTls().GetGuideline() != "6.0" {
				t.Errorf("tls = %v", r.GetTls())
			}
			if len(r.GetTls().GetCipherSuites()) == 0 || r.GetTls().GetHstsMaxAge() == 0 {
				t.Errorf("tls suites/hsts missing: %v", r.GetTls())
			}
			h := r.GetAdminHeaders()
			if h["Content-Security-Policy"] != "default-src 'self'" || h["X-Xss-Protection"] != "1;" || h["Permissions-Policy"] != "camera=()" {
				t.Errorf("admin headers = %v", h)
			}
			if r.GetApiPathPrefix() != "/api/" {
				t.Errorf("api prefix = %q", r.GetApiPathPrefix())
			}
			if got := allowlists(r); got != "WEBAPP_API=10.1.0.0/24,10.2.0.0/24 WEBAPP_ADMIN=10.2.0.0/24" {
				t.Errorf("allowlists = %s", got)
			}
			if !strings.Contains(r.GetNftables(), "tcp dport 443") || !strings.Contains(r.GetNftables(), "10.1.0.0/24") {
				t.Errorf("nftables:\n%s", r.GetNftables())
			}
			if !hasPB(r.GetWarnings(), "roles[webapp].tls.profile", true) {
				t.Errorf("warnings %v lack the profile downgrade in force", r.GetWarnings())
			}
		}},
		{"node override wins", roleWebapp, "", "web-1", func(t *testing.T, r *policyv1.RenderedPolicy) {
			wantEnv(t, r, map[string]string{"WA_WEB_SECURITY_LEVEL": "OLD", "WA_DB_SSL_VERIFY": "0"})
			if r.GetTls().GetMinVersion() != "TLS1.0" {
				t.Errorf("tls = %v", r.GetTls())
			}
			for _, u := range r.GetTls().GetUnsupported() {
				if !strings.Contains(u, ": ") {
					t.Errorf("unsupported entry %q is not \"SUITE: why\"", u)
				}
			}
			if !hasPB(r.GetWarnings(), "nodes[web-1].db_ssl.verify", true) || !hasPB(r.GetWarnings(), "nodes[web-1].tls.profile", true) {
				t.Errorf("warnings %v", r.GetWarnings())
			}
		}},
		{"coreapp", roleCoreapp, "coreapp", "core-1", func(t *testing.T, r *policyv1.RenderedPolicy) {
			wantEnv(t, r, map[string]string{"WA_DB_SSL_KEY": "/usr/local/waent/data/certs/db-client.key"},
				"WA_SECRET", "WA_WEB_SECURITY_LEVEL", "WA_DB_SSL_VERIFY")
			if !strings.Contains(r.GetEnv()["WA_DB_CONNECTION_OPTION"], `"rejectUnauthorized":true`) {
				t.Errorf("connection option = %q", r.GetEnv()["WA_DB_CONNECTION_OPTION"])
			}
			if r.GetTls() != nil || r.GetAdminHeaders() != nil || r.GetApiPathPrefix() != "" {
				t.Errorf("coreapp got Webapp settings: %v", r)
			}
			if !hasPB(r.GetWarnings(), "env.WA_DB_CONNECTION_OPTION", false) {
				t.Errorf("no deprecation warning: %v", r.GetWarnings())
			}
			if got := allowlists(r); got != "COREAPP_COMMUNICATION=10.3.0.0/24 COREAPP_CONTROL=10.4.0.0/24" {
				t.Errorf("allowlists = %s", got)
			}
			if !strings.Contains(r.GetNftables(), "tcp dport 6250") {
				t.Errorf("nftables:\n%s", r.GetNftables())
			}
		}},
		{"webapp in the wrong zone", roleWebapp, "clients", "web-2", func(t *testing.T, r *policyv1.RenderedPolicy) {
			if !hasPB(r.GetWarnings(), "defaults.network.reach[2].from_zones", false) {
				t.Errorf("warnings %v", r.GetWarnings())
			}
		}},
		{"unknown zone", roleCoreapp, "mars", "", func(t *testing.T, r *policyv1.RenderedPolicy) {
			if !hasPB(r.GetWarnings(), "defaults.network.zones", false) {
				t.Errorf("warnings %v", r.GetWarnings())
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := render(doc, 7, tc.role, tc.zone, tc.node)
			if err != nil {
				t.Fatal(err)
			}
			if r.GetPolicyNumber() != 7 || r.GetRole() != tc.role {
				t.Fatalf("number/role = %d/%s", r.GetPolicyNumber(), r.GetRole())
			}
			tc.check(t, r)
		})
	}
	if _, err := render(doc, 1, "db", "", ""); err == nil {
		t.Fatal("render for role db succeeded")
	}
}

func TestRenderBuiltInDefaults(t *testing.T) {
	r, err := render(&policyv1.PolicyDocument{}, 1, roleWebapp, "", "")
	if err != nil {
		t.Fatal(err)
	}
	wantEnv(t, r, map[string]string{"WA_WEB_SECURITY_LEVEL": "MODERN", "WA_DB_SSL_VERIFY": "1"})
	if r.GetTls().GetMinVersion() != "TLS1.3" || r.GetApiPathPrefix() != "/v1/" {
		t.Fatalf("tls %v prefix %q", r.GetTls(), r.GetApiPathPrefix())
	}
	if r.GetAdminHeaders()["Strict-Transport-Security"] == "" || r.GetAdminHeaders()["Referrer-Policy"] == "" {
		t.Fatalf("recommended headers missing: %v", r.GetAdminHeaders())
	}
	// The built-in zones are empty: every endpoint closed.
	for _, a := range r.GetAllowlists() {
		if len(a.GetCidrs()) != 0 {
			t.Fatalf("allowlist %v not empty", a)
		}
	}
	if slices.ContainsFunc(r.GetWarnings(), func(i *policyv1.Issue) bool { return i.GetDowngrade() }) {
		t.Fatalf("downgrade warnings on the defaults: %v", r.GetWarnings())
	}
}

func wantEnv(t *testing.T, r *policyv1.RenderedPolicy, want map[string]string, absent ...string) {
	t.Helper()
	for k, v := range want {
		if got, ok := r.GetEnv()[k]; !ok || got != v {
			t.Errorf("env %s = %q, want %q", k, got, v)
		}
	}
	for _, k := range absent {
		if _, ok := r.GetEnv()[k]; ok {
			t.Errorf("env has %s", k)
		}
	}
}

func allowlists(r *policyv1.RenderedPolicy) string {
	var parts []string
	for _, a := range r.GetAllowlists() {
		parts = append(parts, strings.TrimPrefix(a.GetEndpoint().String(), "ENDPOINT_")+"="+strings.Join(a.GetCidrs(), ","))
	}
	return strings.Join(parts, " ")
}

func hasPB(list []*policyv1.Issue, path string, downgrade bool) bool {
	return slices.ContainsFunc(list, func(i *policyv1.Issue) bool {
		return i.GetFieldPath() == path && i.GetDowngrade() == downgrade
	})
}

func TestDiff(t *testing.T) {
	from := docWith(nil)
	to := docWith(func(d *policyv1.PolicyDocument) {
		d.Defaults.Tls.Profile = policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE
		headers(d, "defaults").StrictTransportSecurity = proto.String("")
		extra(d, "roles:webapp", "Referrer-Policy", "same-origin")
		dbSSL(d, "nodes:web-1").Verify = proto.Bool(false)
		d.Defaults.Network.Zones[0].Cidrs = append(d.Defaults.Network.Zones[0].Cidrs, "10.9.0.0/24")
		d.Defaults.Network.Reach = d.Defaults.Network.Reach[:4]
	})
	got := diff(from, to)
	want := []*policyv1.Change{
		{FieldPath: "defaults.headers.strict_transport_security", OldValue: "", NewValue: `""`},
		{FieldPath: "defaults.network.reach[4].endpoint", OldValue: "ENDPOINT_DB", NewValue: ""},
		{FieldPath: "defaults.network.reach[4].from_zones[0]", OldValue: "webapp", NewValue: ""},
		{FieldPath: "defaults.network.reach[4].from_zones[1]", OldValue: "coreapp", NewValue: ""},
		{FieldPath: "defaults.network.zones[0].cidrs[1]", OldValue: "", NewValue: "10.9.0.0/24"},
		{FieldPath: "defaults.tls.profile", OldValue: "TLS_PROFILE_MODERN", NewValue: "TLS_PROFILE_INTERMEDIATE"},
		{FieldPath: "nodes[web-1].db_ssl.verify", OldValue: "", NewValue: "false"},
		{FieldPath: "roles[webapp].headers.extra[Referrer-Policy]", OldValue: "", NewValue: "same-origin"},
	}
	if len(got) != len(want) {
		t.Fatalf("diff = %v\nwant %v", got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("change %d = %v, want %v", i, got[i], want[i])
		}
	}
	if d := diff(from, proto.Clone(from).(*policyv1.PolicyDocument)); len(d) != 0 {
		t.Fatalf("diff of equal documents = %v", d)
	}
}
