package policysvc

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
)

// net5 is a complete, valid network: reach[2] is coreapp:communication.
func net5() *policyv1.NetworkSettings {
	z := func(name, cidr string) *policyv1.Zone { return &policyv1.Zone{Name: name, Cidrs: []string{cidr}} }
	r := func(ep policyv1.Endpoint, from ...string) *policyv1.Reach {
		return &policyv1.Reach{Endpoint: ep, FromZones: from}
	}
	return &policyv1.NetworkSettings{
		Zones: []*policyv1.Zone{
			z("clients", "10.1.0.0/24"), z("management", "10.2.0.0/24"), z("webapp", "10.3.0.0/24"),
			z("coreapp", "10.4.0.0/24"), z("db", "10.5.0.0/24"),
		},
		Reach: []*policyv1.Reach{
			r(policyv1.Endpoint_ENDPOINT_WEBAPP_API, "clients", "management"),
			r(policyv1.Endpoint_ENDPOINT_WEBAPP_ADMIN, "management"),
			r(policyv1.Endpoint_ENDPOINT_COREAPP_COMMUNICATION, "webapp"),
			r(policyv1.Endpoint_ENDPOINT_COREAPP_CONTROL, "coreapp"),
			r(policyv1.Endpoint_ENDPOINT_DB, "webapp", "coreapp"),
		},
	}
}

// docWith returns a valid document (the defaults with a filled-in network) changed by edit.
func docWith(edit func(d *policyv1.PolicyDocument)) *policyv1.PolicyDocument {
	d := defaultDocument()
	d.Defaults.Network = net5()
	d.Roles = map[string]*policyv1.PolicySettings{}
	d.Nodes = map[string]*policyv1.PolicySettings{}
	if edit != nil {
		edit(d)
	}
	return d
}

func settings(d *policyv1.PolicyDocument, scope string) *policyv1.PolicySettings {
	kind, key, _ := strings.Cut(scope, ":")
	var m map[string]*policyv1.PolicySettings
	switch kind {
	case "defaults":
		return d.Defaults
	case "roles":
		m = d.Roles
	default:
		m = d.Nodes
	}
	if m[key] == nil {
		m[key] = &policyv1.PolicySettings{}
	}
	return m[key]
}

func headers(d *policyv1.PolicyDocument, scope string) *policyv1.WebAdminHeaders {
	s := settings(d, scope)
	if s.Headers == nil {
		s.Headers = &policyv1.WebAdminHeaders{}
	}
	return s.Headers
}

func dbSSL(d *policyv1.PolicyDocument, scope string) *policyv1.DBSSLSettings {
	s := settings(d, scope)
	if s.DbSsl == nil {
		s.DbSsl = &policyv1.DBSSLSettings{}
	}
	return s.DbSsl
}

func extra(d *policyv1.PolicyDocument, scope, k, v string) {
	h := headers(d, scope)
	if h.Extra == nil {
		h.Extra = map[string]string{}
	}
	h.Extra[k] = v
}

type want struct {
	path      string
	contains  string
	downgrade bool
}

func hasIssue(list []Issue, w want) bool {
	return slices.ContainsFunc(list, func(i Issue) bool {
		return i.Field == w.path && strings.Contains(i.Message, w.contains) && i.Downgrade == w.downgrade
	})
}

func TestDefaultDocumentIsValid(t *testing.T) {
	ev := evaluate(defaultDocument(), nil, nil)
	if len(ev.errs) != 0 || len(ev.downgrades) != 0 {
		t.Fatalf("built-in defaults: errors %v, downgrades %v; want none", ev.errs, ev.downgrades)
	}
	for _, w := range ev.warnings {
		if w.Downgrade {
			t.Errorf("built-in defaults carry a downgrade: %v", w)
		}
	}
	if ev := evaluate(docWith(nil), docWith(nil), nil); len(ev.errs)+len(ev.warnings)+len(ev.downgrades) != 0 {
		t.Fatalf("complete policy: %v %v %v; want no findings", ev.errs, ev.warnings, ev.downgrades)
	}
	// Filling in the built-in (empty) zones opens the endpoints: netzone.Wider calls that a downgrade.
	if ev := evaluate(docWith(nil), defaultDocument(), nil); len(ev.downgrades) != 5 {
		t.Fatalf("opening every endpoint: downgrades %v, want one per endpoint", ev.downgrades)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(d *policyv1.PolicyDocument)
		want want
	}{
		{"unknown role", func(d *policyv1.PolicyDocument) { settings(d, "roles:admin") }, want{"roles[admin]", "unknown role", false}},
		{"bad node id", func(d *policyv1.PolicyDocument) { settings(d, "nodes:Web1") }, want{"nodes[Web1]", "not a node id", false}},
		{"node id needing quotes", func(d *policyv1.PolicyDocument) { settings(d, "nodes:a b") }, want{`nodes["a b"]`, "not a node id", false}},
		{"unknown profile", func(d *policyv1.PolicyDocument) { d.Defaults.Tls.Profile = 9 }, want{"defaults.tls.profile", "unknown TLS profile 9", false}},
		{"unknown header mode", func(d *policyv1.PolicyDocument) { headers(d, "roles:webapp").Mode = 7 }, want{"roles[webapp].headers.mode", "unknown header mode 7", false}},
		{"relative api prefix", func(d *policyv1.PolicyDocument) { headers(d, "defaults").ApiPathPrefix = proto.String("v1/") }, want{"defaults.headers.api_path_prefix", "does not start with '/'", false}},
		{"api prefix with query", func(d *policyv1.PolicyDocument) { headers(d, "nodes:web-1").ApiPathPrefix = proto.String("/v1?x") }, want{"nodes[web-1].headers.api_path_prefix", "'?'", false}},
		{"extra twice in one layer", func(d *policyv1.PolicyDocument) {
			extra(d, "defaults", "X-Foo", "a")
			extra(d, "defaults", "x-foo", "b")
		}, want{"defaults.headers.extra[x-foo]", "same header as extra[X-Foo]", false}},
		{"network in a role", func(d *policyv1.PolicyDocument) { settings(d, "roles:webapp").Network = net5() }, want{"roles[webapp].network", "deployment-wide", false}},
		{"network in a node", func(d *policyv1.PolicyDocument) { settings(d, "nodes:web-1").Network = &policyv1.NetworkSettings{} }, want{"nodes[web-1].network", "deployment-wide", false}},
		{"unset endpoint", func(d *policyv1.PolicyDocument) { d.Defaults.Network.Reach[0].Endpoint = 0 }, want{"defaults.network.reach[0].endpoint", "unknown or unset endpoint", false}},
		{"endpoint twice", func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Reach[1].Endpoint = policyv1.Endpoint_ENDPOINT_WEBAPP_API
		}, want{"defaults.network.reach[1].endpoint", "already listed in reach[0]", false}},
		{"bad zone name", func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Zones = append(d.Defaults.Network.Zones, &policyv1.Zone{Name: "Bad Zone"})
		}, want{"defaults.network.zones[5].name", "not a valid zone name", false}},
		{"zone twice", func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Zones = append(d.Defaults.Network.Zones, &policyv1.Zone{Name: "db"})
		}, want{"defaults.network.zones[5].name", "defined twice", false}},
		{"unparsable CIDR", func(d *policyv1.PolicyDocument) { d.Defaults.Network.Zones[0].Cidrs = []string{"10.1.0.0/24", "nope"} }, want{"defaults.network.zones[0].cidrs[1]", "not a valid prefix", false}},
		{"host bits", func(d *policyv1.PolicyDocument) { d.Defaults.Network.Zones[0].Cidrs = []string{"10.1.0.1/24"} }, want{"defaults.network.zones[0].cidrs[0]", "host bits", false}},
		{"communication from clients", func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Reach[2].FromZones = []string{"webapp", "clients"}
		}, want{"defaults.network.reach[2].from_zones[1]", "may only be reached from the webapp zone", false}},
		{"control from webapp", func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Reach[3].FromZones = []string{"webapp"}
		}, want{"defaults.network.reach[3].from_zones[0]", "may only be reached from the coreapp zone", false}},
		{"unknown zone in reach", func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Reach[0].FromZones = []string{"clients", "internet"}
		}, want{"defaults.network.reach[0].from_zones[1]", `unknown zone "internet"`, false}},
		{"frame options", func(d *policyv1.PolicyDocument) { headers(d, "defaults").XFrameOptions = proto.String("ALLOW-FROM x") }, want{"defaults.headers.x_frame_options", "not DENY or SAMEORIGIN", false}},
		{"content type options", func(d *policyv1.PolicyDocument) {
			headers(d, "roles:webapp").XContentTypeOptions = proto.String("sniff")
		}, want{"roles[webapp].headers.x_content_type_options", "not nosniff", false}},
		{"xss protection", func(d *policyv1.PolicyDocument) { headers(d, "defaults").XXssProtection = proto.String("2") }, want{"defaults.headers.x_xss_protection", "not 0 or 1", false}},
		{"malformed HSTS", func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").StrictTransportSecurity = proto.String("max-age=abc")
		}, want{"defaults.headers.strict_transport_security", "not a number", false}},
		{"header injection", func(d *policyv1.PolicyDocument) {
			headers(d, "nodes:web-1").ContentSecurityPolicy = proto.String("default-src 'self'\r\nSet-Cookie: a=b")
		}, want{"nodes[web-1].headers.content_security_policy", "header injection", false}},
		{"legacy CSP injection", func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").XContentSecurityPolicy_ = proto.String("a\nb")
		}, want{"defaults.headers.x_content_security_policy", "header injection", false}},
		{"bad CSP directive", func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").ContentSecurityPolicy = proto.String("default_src 'self'")
		}, want{"defaults.headers.content_security_policy", "not a directive name", false}},
		{"extra names a security header", func(d *policyv1.PolicyDocument) { extra(d, "defaults", "Strict-Transport-Security", "max-age=1") }, want{"defaults.headers.extra[Strict-Transport-Security]", "set strict_transport_security instead", false}},
		{"extra names the legacy CSP", func(d *policyv1.PolicyDocument) { extra(d, "defaults", "X-Content-Security-Policy", "x") }, want{"defaults.headers.extra[X-Content-Security-Policy]", "set x_content_security_policy instead", false}},
		{"extra hop-by-hop", func(d *policyv1.PolicyDocument) { extra(d, "roles:webapp", "Connection", "close") }, want{"roles[webapp].headers.extra[Connection]", "hop-by-hop", false}},
		{"extra server-owned", func(d *policyv1.PolicyDocument) { extra(d, "defaults", "Set-Cookie", "a=b") }, want{"defaults.headers.extra[Set-Cookie]", "managed by the server", false}},
		{"extra invalid name", func(d *policyv1.PolicyDocument) { extra(d, "defaults", "X Bad", "1") }, want{`defaults.headers.extra["X Bad"]`, "not a valid header name", false}},
		{"referrer policy through extra", func(d *policyv1.PolicyDocument) { extra(d, "nodes:web-1", "referrer-policy", "bogus") }, want{"nodes[web-1].headers.extra[referrer-policy]", "not a referrer policy", false}},
		{"COOP through extra", func(d *policyv1.PolicyDocument) { extra(d, "defaults", "Cross-Origin-Opener-Policy", "nope") }, want{"defaults.headers.extra[Cross-Origin-Opener-Policy]", "not one of", false}},
		{"relative db path", func(d *policyv1.PolicyDocument) { dbSSL(d, "nodes:web-1").CaPath = proto.String("certs/ca.crt") }, want{"nodes[web-1].db_ssl.ca_path", "not an absolute path", false}},
		{"unclean db path", func(d *policyv1.PolicyDocument) {
			dbSSL(d, "roles:coreapp").KeyPath = proto.String("/usr/local/waent/data/certs/../k.key")
		}, want{"roles[coreapp].db_ssl.key_path", "not clean", false}},
		{"control character in db path", func(d *policyv1.PolicyDocument) { dbSSL(d, "defaults").CertPath = proto.String("/a\x00b") }, want{"defaults.db_ssl.cert_path", "control character", false}},
		{"key without cert", func(d *policyv1.PolicyDocument) { dbSSL(d, "nodes:web-1").CertPath = proto.String("") }, want{"nodes[web-1].db_ssl.cert_path", "needs a client certificate", false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := evaluate(docWith(tc.edit), nil, nil)
			if !hasIssue(ev.errs, tc.want) {
				t.Fatalf("errors %v\nwant %+v", ev.errs, tc.want)
			}
		})
	}
}

func TestValidationWarnings(t *testing.T) {
	cases := []struct {
		name string
		edit func(d *policyv1.PolicyDocument)
		want want
	}{
		{"intermediate profile", func(d *policyv1.PolicyDocument) {
			settings(d, "roles:webapp").Tls = &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE}
		}, want{"roles[webapp].tls.profile", "INTERMEDIATE is weaker than MODERN", true}},
		{"old profile on a node", func(d *policyv1.PolicyDocument) {
			settings(d, "nodes:web-1").Tls = &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_OLD}
		}, want{"nodes[web-1].tls.profile", "OLD is weaker", true}},
		{"verify off", func(d *policyv1.PolicyDocument) { dbSSL(d, "nodes:web-1").Verify = proto.Bool(false) }, want{"nodes[web-1].db_ssl.verify", "not verified", true}},
		{"db path outside certs", func(d *policyv1.PolicyDocument) { dbSSL(d, "defaults").CaPath = proto.String("/etc/ssl/ca.crt") }, want{"defaults.db_ssl.ca_path", "outside", false}},
		{"no CA", func(d *policyv1.PolicyDocument) { dbSSL(d, "roles:coreapp").CaPath = proto.String("") }, want{"roles[coreapp].db_ssl.ca_path", "no CA file", false}},
		{"HSTS below minimum (a downgrade)", func(d *policyv1.PolicyDocument) {
			headers(d, "roles:webapp").StrictTransportSecurity = proto.String("max-age=600; includeSubDomains")
		}, want{"roles[webapp].headers.strict_transport_security", "shorter than one year", true}},
		{"HSTS removed", func(d *policyv1.PolicyDocument) { headers(d, "defaults").StrictTransportSecurity = proto.String("") }, want{"defaults.headers.strict_transport_security", "not sent", true}},
		{"HSTS without subdomains", func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").StrictTransportSecurity = proto.String("max-age=63072000")
		}, want{"defaults.headers.strict_transport_security", "includeSubDomains missing", true}},
		{"HSTS preload", func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").StrictTransportSecurity = proto.String("max-age=63072000; includeSubDomains; preload")
		}, want{"defaults.headers.strict_transport_security", "preload", false}},
		{"frame options removed", func(d *policyv1.PolicyDocument) { headers(d, "defaults").XFrameOptions = proto.String("") }, want{"defaults.headers.x_frame_options", "not sent", true}},
		{"sameorigin", func(d *policyv1.PolicyDocument) {
			headers(d, "roles:webapp").XFrameOptions = proto.String("SAMEORIGIN")
		}, want{"roles[webapp].headers.x_frame_options", "SAMEORIGIN allows framing", true}},
		{"unsafe-eval", func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").ContentSecurityPolicy = proto.String("default-src 'self' 'unsafe-eval'")
		}, want{"defaults.headers.content_security_policy", "'unsafe-eval'", true}},
		{"no CSP at all", func(d *policyv1.PolicyDocument) { headers(d, "defaults").ContentSecurityPolicy = proto.String("") }, want{"defaults.headers.content_security_policy", "no content security policy", true}},
		{"compatible mode, blamed on the mode", func(d *policyv1.PolicyDocument) {
			headers(d, "roles:webapp").Mode = policyv1.HeaderMode_HEADER_MODE_COMPATIBLE
		}, want{"roles[webapp].headers.mode", "X-Content-Security-Policy is obsolete", false}},
		{"xss auditor on", func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").XXssProtection = proto.String("1; mode=block")
		}, want{"defaults.headers.x_xss_protection", "deprecated", false}},
		{"api prefix covers everything", func(d *policyv1.PolicyDocument) { headers(d, "defaults").ApiPathPrefix = proto.String("/") }, want{"defaults.headers.api_path_prefix", "every path is an API path", true}},
		{"extra empty value", func(d *policyv1.PolicyDocument) { extra(d, "defaults", "X-Custom", "") }, want{"defaults.headers.extra[X-Custom]", "empty value", false}},
		{"referrer unsafe-url", func(d *policyv1.PolicyDocument) { extra(d, "defaults", "Referrer-Policy", "unsafe-url") }, want{"defaults.headers.extra[Referrer-Policy]", "full URLs", true}},
		{"zone covers everything", func(d *policyv1.PolicyDocument) { d.Defaults.Network.Zones[0].Cidrs = []string{"0.0.0.0/0"} }, want{"defaults.network.zones[0].cidrs[0]", "covers every address", true}},
		{"overlapping zones", func(d *policyv1.PolicyDocument) { d.Defaults.Network.Zones[1].Cidrs = []string{"10.1.0.0/16"} }, want{"defaults.network.zones[1].cidrs", "overlaps", false}},
		{"db from clients", func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Reach[4].FromZones = []string{"webapp", "coreapp", "clients"}
		}, want{"defaults.network.reach[4].from_zones[2]", "meant for the apps only", true}},
		{"empty zone relied on", func(d *policyv1.PolicyDocument) { d.Defaults.Network.Zones[1].Cidrs = nil }, want{"defaults.network.reach[1].from_zones[0]", "has no networks", false}},
		{"zone listed twice in reach", func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Reach[1].FromZones = []string{"management", "management"}
		}, want{"defaults.network.reach[1].from_zones[1]", "listed twice", false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := evaluate(docWith(tc.edit), docWith(tc.edit), nil)
			if len(ev.errs) != 0 {
				t.Fatalf("unexpected errors %v", ev.errs)
			}
			if !hasIssue(ev.warnings, tc.want) {
				t.Fatalf("warnings %v\nwant %+v", ev.warnings, tc.want)
			}
			if len(ev.downgrades) != 0 {
				t.Fatalf("the same document as the current one is not a new downgrade, got %v", ev.downgrades)
			}
		})
	}
}

func TestDowngradesAgainstCurrent(t *testing.T) {
	cases := []struct {
		name      string
		cur, next func(d *policyv1.PolicyDocument)
		want      []want // exactly these
	}{
		{"profile lowered", nil, func(d *policyv1.PolicyDocument) {
			d.Defaults.Tls.Profile = policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE
		}, []want{{"defaults.tls.profile", "TLS profile lowered from MODERN to INTERMEDIATE", true}}},
		{"profile lowered for a node only", nil, func(d *policyv1.PolicyDocument) {
			settings(d, "nodes:web-1").Tls = &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_OLD}
		}, []want{{"nodes[web-1].tls.profile", "from MODERN to OLD", true}}},
		{"profile raised", func(d *policyv1.PolicyDocument) {
			d.Defaults.Tls.Profile = policyv1.TLSProfile_TLS_PROFILE_OLD
		}, func(d *policyv1.PolicyDocument) {
			d.Defaults.Tls.Profile = policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE
		}, nil},
		{"verify turned off", nil, func(d *policyv1.PolicyDocument) {
			dbSSL(d, "roles:webapp").Verify = proto.Bool(false)
		}, []want{{"roles[webapp].db_ssl.verify", "verification turned off", true}}},
		{"HSTS lowered below the minimum", nil, func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").StrictTransportSecurity = proto.String("max-age=600; includeSubDomains")
		}, []want{{"defaults.headers.strict_transport_security", "shorter than one year", true}}},
		{"HSTS already below the minimum", func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").StrictTransportSecurity = proto.String("max-age=600; includeSubDomains")
		}, func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").StrictTransportSecurity = proto.String("max-age=6000; includeSubDomains")
		}, nil},
		{"HSTS above the minimum but shorter", nil, func(d *policyv1.PolicyDocument) {
			headers(d, "defaults").StrictTransportSecurity = proto.String("max-age=31536000; includeSubDomains")
		}, nil},
		{"zone widened", nil, func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Zones[1].Cidrs = []string{"10.2.0.0/16"}
		}, []want{
			{"defaults.network.reach[0].from_zones", "webapp:api becomes reachable", true},
			{"defaults.network.reach[1].from_zones", "webapp:admin becomes reachable", true},
		}},
		{"zone added to reach", nil, func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Reach[1].FromZones = []string{"management", "clients"}
		}, []want{{"defaults.network.reach[1].from_zones", "webapp:admin becomes reachable", true}}},
		{"zone narrowed", nil, func(d *policyv1.PolicyDocument) {
			d.Defaults.Network.Zones[0].Cidrs = []string{"10.1.0.0/25"}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := evaluate(docWith(tc.next), docWith(tc.cur), nil)
			if len(ev.errs) != 0 {
				t.Fatalf("unexpected errors %v", ev.errs)
			}
			if len(ev.downgrades) != len(tc.want) {
				t.Fatalf("downgrades %v\nwant %+v", ev.downgrades, tc.want)
			}
			for _, w := range tc.want {
				if !hasIssue(ev.downgrades, w) {
					t.Fatalf("downgrades %v\nwant %+v", ev.downgrades, w)
				}
				if !hasIssue(ev.allWarnings(), w) {
					t.Fatalf("downgrade %+v missing from the warnings", w)
				}
			}
		})
	}
}

func TestNodeScopeUsesRegisteredRole(t *testing.T) {
	// The webapp role lowers HSTS; node web-1 is a webapp and so inherits it, coreapp core-1 does not.
	doc := docWith(func(d *policyv1.PolicyDocument) {
		headers(d, "roles:webapp").StrictTransportSecurity = proto.String("max-age=600; includeSubDomains")
		headers(d, "nodes:web-1").XFrameOptions = proto.String("SAMEORIGIN")
		headers(d, "nodes:core-1").XFrameOptions = proto.String("SAMEORIGIN")
	})
	role := func(n string) string { return map[string]string{"web-1": "webapp", "core-1": "coreapp"}[n] }
	ev := evaluate(doc, docWith(nil), role)
	if !hasIssue(ev.downgrades, want{"roles[webapp].headers.strict_transport_security", "shorter than one year", true}) {
		t.Fatalf("downgrades %v", ev.downgrades)
	}
	if !hasIssue(ev.warnings, want{"nodes[web-1].headers.x_frame_options", "SAMEORIGIN", true}) {
		t.Fatalf("warnings %v", ev.warnings)
	}
}
