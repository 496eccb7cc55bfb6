package policysvc

import (
	"net/http"
	"net/netip"
	"slices"
	"strconv"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/dbssl"
	"github.com/warden-sec/warden/services/internal/netzone"
	"github.com/warden-sec/warden/services/internal/tlsprofile"
	"github.com/warden-sec/warden/services/internal/webheaders"
)

// Roles that may carry an override (the keys of PolicyDocument.roles).
const (
	roleWebapp  = "webapp"
	roleCoreapp = "coreapp"
)

// effective is the policy in force for one scope (deployment, role or node) after layering
// defaults ← role override ← node override onto the built-in values. src records which document field
// supplied each setting, so that a finding of a validator (which knows only the setting) can be reported
// at the field the operator has to change.
type effective struct {
	Profile   tlsprofile.Name
	Mode      webheaders.Mode
	Headers   webheaders.Headers
	APIPrefix string
	DBSSL     dbssl.Settings
	Network   netzone.Rules

	// src maps a setting ("tls.profile", "headers.mode", "headers.x_frame_options",
	// "headers.referrer_policy", "headers.extra[X-Foo]", "db_ssl.verify") to the full path of the field
	// that set it. Built-in values have no entry.
	src map[string]string
	// reachIdx is the index in defaults.network.reach of each endpoint's entry, when the document
	// supplies the reach list; zonesFromDoc says the same for the zones.
	reachIdx     map[netzone.Endpoint]int
	zonesFromDoc bool
}

// layer is one PolicySettings of a document with the path it lives at.
type layer struct {
	path string // "defaults", "roles[webapp]", "nodes[web-1]"
	s    *policyv1.PolicySettings
}

// layers returns the layers that apply to a node of role (either may be empty), widest first.
func layers(doc *policyv1.PolicyDocument, role, node string) []layer {
	out := []layer{{"defaults", doc.GetDefaults()}}
	if s, ok := doc.GetRoles()[role]; ok && role != "" {
		out = append(out, layer{keyPath("roles", role), s})
	}
	if s, ok := doc.GetNodes()[node]; ok && node != "" {
		out = append(out, layer{keyPath("nodes", node), s})
	}
	return out
}

// keyPath formats a map entry's path. Keys made of plain visible characters are written bare
// ("roles[webapp]"); anything else is quoted so that a path can always be read back unambiguously.
func keyPath(field, key string) string {
	plain := key != ""
	for i := range len(key) {
		if c := key[i]; c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '"' {
			plain = false
			break
		}
	}
	if plain {
		return field + "[" + key + "]"
	}
	return field + "[" + strconv.Quote(key) + "]"
}

// headerField ties a WebAdminHeaders field to the webheaders setting it controls.
type headerField struct {
	name   string // in the policy API
	whName string // in webheaders' findings
	get    func(*policyv1.WebAdminHeaders) *string
	set    func(*webheaders.Headers, string)
}

var headerFields = []headerField{
	{"content_security_policy", "content_security_policy",
		func(h *policyv1.WebAdminHeaders) *string { return h.ContentSecurityPolicy },
		func(w *webheaders.Headers, v string) { w.ContentSecurityPolicy = v }},
	{"x_content_security_policy", "legacy_x_content_security_policy",
		func(h *policyv1.WebAdminHeaders) *string { return h.XContentSecurityPolicy_ },
		func(w *webheaders.Headers, v string) { w.LegacyXContentSecurityPolicy = v }},
	{"x_frame_options", "x_frame_options",
		func(h *policyv1.WebAdminHeaders) *string { return h.XFrameOptions },
		func(w *webheaders.Headers, v string) { w.XFrameOptions = v }},
	{"x_xss_protection", "x_xss_protection",
		func(h *policyv1.WebAdminHeaders) *string { return h.XXssProtection },
		func(w *webheaders.Headers, v string) { w.XXSSProtection = v }},
	{"x_content_type_options", "x_content_type_options",
		func(h *policyv1.WebAdminHeaders) *string { return h.XContentTypeOptions },
		func(w *webheaders.Headers, v string) { w.XContentTypeOptions = v }},
	{"strict_transport_security", "strict_transport_security",
		func(h *policyv1.WebAdminHeaders) *string { return h.StrictTransportSecurity },
		func(w *webheaders.Headers, v string) { w.StrictTransportSecurity = v }},
}

// extraNamed are the webheaders settings the policy API has no field for: operators tune them through
// WebAdminHeaders.extra under their header name, and they are validated by their own rules there.
type extraField struct {
	header string // canonical
	whName string
	set    func(*webheaders.Headers, string)
}

var extraNamed = []extraField{
	{"Referrer-Policy", "referrer_policy", func(w *webheaders.Headers, v string) { w.ReferrerPolicy = v }},
	{"Cross-Origin-Opener-Policy", "cross_origin_opener_policy", func(w *webheaders.Headers, v string) { w.CrossOriginOpenerPolicy = v }},
	{"Cross-Origin-Resource-Policy", "cross_origin_resource_policy", func(w *webheaders.Headers, v string) { w.CrossOriginResourcePolicy = v }},
	{"Cache-Control", "cache_control", func(w *webheaders.Headers, v string) { w.CacheControl = v }},
}

type dbField struct {
	name string // in the policy API and in dbssl's findings
	str  func(*policyv1.DBSSLSettings) *string
	set  func(*dbssl.Settings, string)
}

var dbPathFields = []dbField{
	{"key_path", func(d *policyv1.DBSSLSettings) *string { return d.KeyPath }, func(s *dbssl.Settings, v string) { s.KeyPath = v }},
	{"cert_path", func(d *policyv1.DBSSLSettings) *string { return d.CertPath }, func(s *dbssl.Settings, v string) { s.CertPath = v }},
	{"ca_path", func(d *policyv1.DBSSLSettings) *string { return d.CaPath }, func(s *dbssl.Settings, v string) { s.CAPath = v }},
}

var profileNames = map[policyv1.TLSProfile]tlsprofile.Name{
	policyv1.TLSProfile_TLS_PROFILE_MODERN:       tlsprofile.Modern,
	policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE: tlsprofile.Intermediate,
	policyv1.TLSProfile_TLS_PROFILE_OLD:          tlsprofile.Old,
}

var headerModes = map[policyv1.HeaderMode]webheaders.Mode{
	policyv1.HeaderMode_HEADER_MODE_RECOMMENDED: webheaders.Recommended,
	policyv1.HeaderMode_HEADER_MODE_COMPATIBLE:  webheaders.Compatible,
}

var endpoints = map[policyv1.Endpoint]netzone.Endpoint{
	policyv1.Endpoint_ENDPOINT_WEBAPP_API:            netzone.WebappAPI,
	policyv1.Endpoint_ENDPOINT_WEBAPP_ADMIN:          netzone.WebappAdmin,
	policyv1.Endpoint_ENDPOINT_COREAPP_COMMUNICATION: netzone.CoreappCommunication,
	policyv1.Endpoint_ENDPOINT_COREAPP_CONTROL:       netzone.CoreappControl,
	policyv1.Endpoint_ENDPOINT_DB:                    netzone.DB,
}

func endpointEnum(ep netzone.Endpoint) policyv1.Endpoint {
	for k, v := range endpoints {
		if v == ep {
			return k
		}
	}
	return policyv1.Endpoint_ENDPOINT_UNSPECIFIED
}

// profileRank orders profiles from strongest (0) to weakest, as tlsprofile.All lists them.
func profileRank(n tlsprofile.Name) int {
	return slices.IndexFunc(tlsprofile.All(), func(p tlsprofile.Profile) bool { return p.Name == n })
}

// resolve computes the effective policy of a node of role ("" for the deployment defaults or a role
// preview) and id node ("" for none). Values that validation refuses (unknown enum numbers, network
// outside defaults) are ignored here, so that resolving never fails on any document.
func resolve(doc *policyv1.PolicyDocument, role, node string) effective {
	e := effective{
		Profile:   tlsprofile.Modern,
		Mode:      webheaders.Recommended,
		APIPrefix: webheaders.DefaultAPIPrefix,
		DBSSL:     dbssl.Defaults(),
		Network:   netzone.Defaults(),
		src:       map[string]string{},
	}
	ls := layers(doc, role, node)
	for _, l := range ls {
		if p, ok := profileNames[l.s.GetTls().GetProfile()]; ok {
			e.Profile = p
			e.src["tls.profile"] = l.path + ".tls.profile"
		}
		if m, ok := headerModes[l.s.GetHeaders().GetMode()]; ok {
			e.Mode = m
			e.src["headers.mode"] = l.path + ".headers.mode"
		}
	}
	// The mode chooses the base values; explicit fields of every layer then apply on top in order, so
	// a role that switches the mode keeps the deployment's explicit values.
	e.Headers = webheaders.Defaults(e.Mode)
	e.Headers.Extra = map[string]string{}
	extraCanon := map[string]string{} // canonical name → key in e.Headers.Extra
	for _, l := range ls {
		h := l.s.GetHeaders()
		if h == nil {
			continue
		}
		for _, f := range headerFields {
			if v := f.get(h); v != nil {
				f.set(&e.Headers, *v)
				e.src["headers."+f.name] = l.path + ".headers." + f.name
			}
		}
		if h.ApiPathPrefix != nil {
			e.APIPrefix = *h.ApiPathPrefix
			e.src["headers.api_path_prefix"] = l.path + ".headers.api_path_prefix"
		}
		e.mergeExtra(l.path, h.GetExtra(), extraCanon)
	}
	for _, l := range ls {
		d := l.s.GetDbSsl()
		if d == nil {
			continue
		}
		for _, f := range dbPathFields {
			if v := f.str(d); v != nil {
				f.set(&e.DBSSL, *v)
				e.src["db_ssl."+f.name] = l.path + ".db_ssl." + f.name
			}
		}
		if d.Verify != nil {
			e.DBSSL.Verify = *d.Verify
			e.src["db_ssl.verify"] = l.path + ".db_ssl.verify"
		}
	}
	e.network(doc.GetDefaults().GetNetwork())
	return e
}

// mergeExtra applies one layer's extra headers in key order (deterministic even when a layer names
// one header twice in different case, which validation refuses).
func (e *effective) mergeExtra(path string, extra map[string]string, canon map[string]string) {
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := extra[k]
		c := http.CanonicalHeaderKey(k)
		field := path + ".headers." + keyPath("extra", k)
		if i := slices.IndexFunc(extraNamed, func(n extraField) bool { return n.header == c }); i >= 0 {
			extraNamed[i].set(&e.Headers, v)
			e.src["headers."+extraNamed[i].whName] = field
			continue
		}
		if prev, ok := canon[c]; ok {
			delete(e.Headers.Extra, prev)
		}
		canon[c] = k
		e.Headers.Extra[k] = v
		e.src["headers."+keyPath("extra", k)] = field
	}
}

// network converts defaults.network; an empty zone or reach list inherits the built-in one (repeated
// fields have no presence, and an empty reach would silently close every endpoint).
func (e *effective) network(n *policyv1.NetworkSettings) {
	e.reachIdx = map[netzone.Endpoint]int{}
	if len(n.GetZones()) > 0 {
		e.zonesFromDoc = true
		e.Network.Zones = nil
		for _, z := range n.GetZones() {
			nz := netzone.Zone{Name: z.GetName()}
			for _, c := range z.GetCidrs() {
				// An unparsable prefix stays in place as the zero Prefix, which netzone.Validate reports
				// at the same index.
				p, _ := netip.ParsePrefix(c)
				nz.CIDRs = append(nz.CIDRs, p)
			}
			e.Network.Zones = append(e.Network.Zones, nz)
		}
	}
	if len(n.GetReach()) > 0 {
		e.Network.Reach = map[netzone.Endpoint][]string{}
		for i, r := range n.GetReach() {
			ep, ok := endpoints[r.GetEndpoint()]
			if !ok {
				continue
			}
			if _, dup := e.reachIdx[ep]; dup {
				continue
			}
			e.reachIdx[ep] = i
			e.Network.Reach[ep] = slices.Clone(r.GetFromZones())
		}
	}
}
