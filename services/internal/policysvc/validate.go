package policysvc

import (
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/dbssl"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/issue"
	"github.com/warden-sec/warden/services/internal/netzone"
	"github.com/warden-sec/warden/services/internal/tlsprofile"
	"github.com/warden-sec/warden/services/internal/webheaders"
)

// Issue is a finding on a document; Field holds the full field path
// ("defaults.headers.strict_transport_security", "nodes[web-1].db_ssl.verify").
type Issue = issue.Issue

// roleLookup returns the registered role of a node, or "" when the node is not registered (its node
// override is then checked on top of the defaults only).
type roleLookup func(node string) string

// evaluation is the outcome of checking a document against the current one.
type evaluation struct {
	// errs are refused whatever the caller says.
	errs []Issue
	// warnings include every downgrade in force (findings marked Downgrade).
	warnings []Issue
	// downgrades weaken security relative to the current version: storing the document needs
	// allow_downgrade with a reason.
	downgrades []Issue
}

// evaluate checks next; cur is the current version's document (nil when there is none, so that every
// downgrade relative to the built-in policy counts as new).
func evaluate(next, cur *policyv1.PolicyDocument, role roleLookup) evaluation {
	errs, warns := validateDoc(next, role)
	var ev evaluation
	for _, e := range errs {
		// A validator error marked Downgrade is well-formed and may be accepted as a downgrade.
		if e.Downgrade {
			ev.warnings = append(ev.warnings, e)
		} else {
			ev.errs = append(ev.errs, e)
		}
	}
	ev.warnings = sortIssues(append(ev.warnings, warns...))
	ev.downgrades = downgrades(cur, next, role, errs)
	return ev
}

// needsApproval reports whether storing the document needs allow_downgrade with a reason.
func (ev evaluation) needsApproval() bool { return len(ev.downgrades) > 0 }

// allWarnings are the warnings with the downgrades versus the current version added.
func (ev evaluation) allWarnings() []Issue {
	return sortIssues(append(slices.Clone(ev.warnings), ev.downgrades...))
}

// scope is one effective policy a document defines.
type scope struct{ role, node string }

func scopesOf(role roleLookup, docs ...*policyv1.PolicyDocument) []scope {
	out := []scope{{}}
	seen := map[scope]bool{{}: true}
	add := func(s scope) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, d := range docs {
		for _, r := range slices.Sorted(maps.Keys(d.GetRoles())) {
			if r == roleWebapp || r == roleCoreapp {
				add(scope{role: r})
			}
		}
	}
	for _, d := range docs {
		for _, n := range slices.Sorted(maps.Keys(d.GetNodes())) {
			r := ""
			if role != nil {
				r = role(n)
			}
			add(scope{role: r, node: n})
		}
	}
	return out
}

// validateDoc checks a document on its own: the structure of every layer, then every effective policy
// it defines (deployment, each role override, each node override), with each finding reported at the
// field that supplied the offending value.
func validateDoc(doc *policyv1.PolicyDocument, role roleLookup) (errs, warns []Issue) {
	errs = structural(doc)
	for i, sc := range scopesOf(role, doc) {
		e := resolve(doc, sc.role, sc.node)
		se, sw := e.validate()
		errs, warns = append(errs, se...), append(warns, sw...)
		if i == 0 {
			// Only the defaults carry a network.
			ne, nw := netzone.Validate(e.Network)
			errs, warns = append(errs, e.networkIssues(ne)...), append(warns, e.networkIssues(nw)...)
		}
	}
	return sortIssues(errs), sortIssues(warns)
}

func structural(doc *policyv1.PolicyDocument) []Issue {
	var errs []Issue
	errf := func(path, format string, args ...any) {
		errs = append(errs, Issue{Field: path, Message: fmt.Sprintf(format, args...)})
	}
	all := []layer{{"defaults", doc.GetDefaults()}}
	for _, r := range slices.Sorted(maps.Keys(doc.GetRoles())) {
		p := keyPath("roles", r)
		if r != roleWebapp && r != roleCoreapp {
			errf(p, "unknown role %q: overrides exist for %q and %q", r, roleWebapp, roleCoreapp)
		}
		all = append(all, layer{p, doc.GetRoles()[r]})
	}
	for _, n := range slices.Sorted(maps.Keys(doc.GetNodes())) {
		p := keyPath("nodes", n)
		if err := identity.ValidName(n); err != nil {
			errf(p, "not a node id: %v", err)
		}
		all = append(all, layer{p, doc.GetNodes()[n]})
	}
	for _, l := range all {
		if p := l.s.GetTls().GetProfile(); p != policyv1.TLSProfile_TLS_PROFILE_UNSPECIFIED && profileNames[p] == "" {
			errf(l.path+".tls.profile", "unknown TLS profile %d", int32(p))
		}
		h := l.s.GetHeaders()
		if m := h.GetMode(); m != policyv1.HeaderMode_HEADER_MODE_UNSPECIFIED && headerModes[m] == "" {
			errf(l.path+".headers.mode", "unknown header mode %d", int32(m))
		}
		if h != nil && h.ApiPathPrefix != nil {
			if msg := checkAPIPrefix(*h.ApiPathPrefix); msg != "" {
				errf(l.path+".headers.api_path_prefix", "%s", msg)
			}
		}
		seen := map[string]string{}
		for _, k := range slices.Sorted(maps.Keys(h.GetExtra())) {
			c := http.CanonicalHeaderKey(k)
			if prev, ok := seen[c]; ok {
				errf(l.path+".headers."+keyPath("extra", k), "same header as extra[%s] (header names are case-insensitive)", prev)
			}
			seen[c] = k
		}
		if l.path != "defaults" && l.s.GetNetwork() != nil {
			errf(l.path+".network", "network segregation is deployment-wide: set it in defaults.network")
		}
	}
	eps := map[policyv1.Endpoint]int{}
	for i, r := range doc.GetDefaults().GetNetwork().GetReach() {
		p := fmt.Sprintf("defaults.network.reach[%d].endpoint", i)
		ep := r.GetEndpoint()
		if _, ok := endpoints[ep]; !ok {
			errf(p, "unknown or unset endpoint %d", int32(ep))
			continue
		}
		if j, dup := eps[ep]; dup {
			errf(p, "%s already listed in reach[%d]", endpoints[ep], j)
			continue
		}
		eps[ep] = i
	}
	return errs
}

func checkAPIPrefix(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("%q does not start with '/'", p)
	case strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '?' || r == '#' }):
		return "contains white space, a control character, '?' or '#'"
	}
	return ""
}

// validate checks one effective policy (everything but the network).
func (e effective) validate() (errs, warns []Issue) {
	if e.Profile != tlsprofile.Modern {
		warns = append(warns, Issue{Field: e.path("tls.profile", "defaults.tls.profile"),
			Message: fmt.Sprintf("%s is weaker than %s, the default", e.Profile, tlsprofile.Modern), Downgrade: true})
	}
	if !webheaders.IsAdminPath("/", e.APIPrefix) {
		warns = append(warns, Issue{Field: e.path("headers.api_path_prefix", "defaults.headers.api_path_prefix"),
			Message: "every path is an API path: the Web Admin gets no security headers", Downgrade: true})
	}
	he, hw := webheaders.Validate(e.Headers)
	errs, warns = append(errs, e.headerIssues(he)...), append(warns, e.headerIssues(hw)...)
	de, dw := dbssl.Validate(e.DBSSL)
	errs, warns = append(errs, e.dbIssues(de)...), append(warns, e.dbIssues(dw)...)
	return errs, warns
}

// path is where setting came from, or fallback for a built-in value.
func (e effective) path(setting, fallback string) string {
	if p, ok := e.src[setting]; ok {
		return p
	}
	return fallback
}

func (e effective) headerIssues(in []Issue) []Issue {
	out := make([]Issue, 0, len(in))
	for _, is := range in {
		f := is.Field
		p := "defaults.headers"
		switch i := slices.IndexFunc(headerFields, func(h headerField) bool { return h.whName == f }); {
		case i >= 0:
			name := headerFields[i].name
			p = e.path("headers."+name, e.path("headers.mode", "defaults.headers."+name))
		case strings.HasPrefix(f, "extra[") && strings.HasSuffix(f, "]"):
			if k, err := strconv.Unquote(f[len("extra[") : len(f)-1]); err == nil {
				p = e.path("headers."+keyPath("extra", k), "defaults.headers.extra")
			}
		default:
			if j := slices.IndexFunc(extraNamed, func(x extraField) bool { return x.whName == f }); j >= 0 {
				p = e.path("headers."+f, e.path("headers.mode", "defaults.headers.mode"))
			}
		}
		is.Field = p
		is.Message = strings.ReplaceAll(is.Message, "legacy_x_content_security_policy", "x_content_security_policy")
		out = append(out, is)
	}
	return out
}

func (e effective) dbIssues(in []Issue) []Issue {
	out := make([]Issue, 0, len(in))
	for _, is := range in {
		is.Field = e.path("db_ssl."+is.Field, "defaults.db_ssl."+is.Field)
		out = append(out, is)
	}
	return out
}

var reachField = regexp.MustCompile(`^reach\["([^"]*)"\](?:\[(\d+)\])?$`)

func (e effective) networkIssues(in []Issue) []Issue {
	out := make([]Issue, 0, len(in))
	for _, is := range in {
		f := is.Field
		p := "defaults.network"
		switch m := reachField.FindStringSubmatch(f); {
		case strings.HasPrefix(f, "zones") && e.zonesFromDoc:
			p = "defaults.network." + f
		case m != nil:
			p = e.reachPath(netzone.Endpoint(m[1]))
			if i, ok := e.reachIdx[netzone.Endpoint(m[1])]; ok && m[2] != "" {
				p = fmt.Sprintf("defaults.network.reach[%d].from_zones[%s]", i, m[2])
			}
		}
		is.Field = p
		out = append(out, is)
	}
	return out
}

// reachPath is the field listing who may reach ep.
func (e effective) reachPath(ep netzone.Endpoint) string {
	if i, ok := e.reachIdx[ep]; ok {
		return fmt.Sprintf("defaults.network.reach[%d].from_zones", i)
	}
	return "defaults.network.reach"
}

// downgrades lists what next weakens relative to cur: a weaker TLS profile, database verification
// turned off, reach widened (netzone.Wider), and validator findings that are downgrades (HSTS below the
// minimum or removed, X-Frame-Options removed, …) at a field where cur had none.
func downgrades(cur, next *policyv1.PolicyDocument, role roleLookup, nextErrs []Issue) []Issue {
	var out []Issue
	had := map[string]bool{}
	if cur != nil {
		curErrs, _ := validateDoc(cur, role)
		for _, e := range curErrs {
			if e.Downgrade {
				had[e.Field] = true
			}
		}
	}
	for _, e := range nextErrs {
		if e.Downgrade && !had[e.Field] {
			out = append(out, e)
		}
	}
	for i, sc := range scopesOf(role, cur, next) {
		a, b := resolve(cur, sc.role, sc.node), resolve(next, sc.role, sc.node)
		if profileRank(b.Profile) > profileRank(a.Profile) {
			out = append(out, Issue{Field: b.path("tls.profile", "defaults.tls.profile"),
				Message: fmt.Sprintf("TLS profile lowered from %s to %s", a.Profile, b.Profile), Downgrade: true})
		}
		if a.DBSSL.Verify && !b.DBSSL.Verify {
			out = append(out, Issue{Field: b.path("db_ssl.verify", "defaults.db_ssl.verify"),
				Message: "database server certificate verification turned off", Downgrade: true})
		}
		if i == 0 {
			for _, ep := range netzone.Wider(a.Network, b.Network) {
				out = append(out, Issue{Field: b.reachPath(netzone.Endpoint(ep)),
					Message: fmt.Sprintf("%s becomes reachable from addresses the current policy does not admit", ep), Downgrade: true})
			}
		}
	}
	return sortIssues(out)
}

// sortIssues orders by path and message and drops repeats (a value set in the defaults is seen again
// in every role and node scope that inherits it).
func sortIssues(in []Issue) []Issue {
	slices.SortStableFunc(in, func(a, b Issue) int {
		return cmp.Or(cmp.Compare(a.Field, b.Field), cmp.Compare(a.Message, b.Message))
	})
	return slices.Compact(in)
}
