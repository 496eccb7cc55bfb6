package policysvc

import (
	"fmt"
	"maps"
	"slices"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/dbssl"
	"github.com/warden-sec/warden/services/internal/netzone"
)

// envSecurityLevel selects the Webapp's TLS profile; its values are tlsprofile names.
const envSecurityLevel = "WA_WEB_SECURITY_LEVEL"

// render computes what a node of role in zone applies under doc (version number); node selects a node
// override ("" for none). The result leaves NodeId empty because it is shared by every node with the
// same inputs (see forNode). WA_SECRET is never part of it: secrets are the secret service's.
func render(doc *policyv1.PolicyDocument, number uint64, role, zone, node string) (*policyv1.RenderedPolicy, error) {
	if role != roleWebapp && role != roleCoreapp {
		return nil, apierr.InvalidArg("role", "%q is not %q or %q", role, roleWebapp, roleCoreapp)
	}
	e := resolve(doc, role, node)
	out := &policyv1.RenderedPolicy{PolicyNumber: number, Role: role, Env: map[string]string{}}
	var warns []Issue
	switch role {
	case roleWebapp:
		maps.Copy(out.Env, e.DBSSL.WebappEnv())
		out.Env[envSecurityLevel] = string(e.Profile)
		t, err := renderedTLS(e.Profile)
		if err != nil {
			return nil, fmt.Errorf("render TLS profile: %w", err)
		}
		out.Tls = t
		out.AdminHeaders = e.Headers.Map()
		out.ApiPathPrefix = e.APIPrefix
	case roleCoreapp:
		env, deprecated := e.DBSSL.CoreappEnv()
		maps.Copy(out.Env, env)
		for _, d := range deprecated {
			warns = append(warns, Issue{Field: "env." + dbssl.EnvConnectionOption, Message: d})
		}
	}
	for _, ep := range netzone.RoleEndpoints(role) {
		al := &policyv1.Allowlist{Endpoint: endpointEnum(ep), Cidrs: []string{}}
		for _, p := range e.Network.Allowlist(ep) {
			al.Cidrs = append(al.Cidrs, p.String())
		}
		out.Allowlists = append(out.Allowlists, al)
	}
	out.Nftables = netzone.NFTables(e.Network, role, netzone.DefaultPorts())

	// Downgrades in force, whatever version introduced them.
	errs, ws := e.validate()
	ne, nw := netzone.Validate(e.Network)
	for _, i := range slices.Concat(errs, ws, e.networkIssues(ne), e.networkIssues(nw)) {
		if i.Downgrade {
			warns = append(warns, i)
		}
	}
	warns = append(warns, e.zoneWarnings(role, zone)...)
	out.Warnings = issuesPB(sortIssues(warns))
	return out, nil
}

// zoneWarnings checks the node's registered zone against what its role must reach: Webapps talk to
// the Coreapps' communication service and both apps to the database.
func (e effective) zoneWarnings(role, zone string) []Issue {
	if zone == "" {
		return nil
	}
	if !slices.ContainsFunc(e.Network.Zones, func(z netzone.Zone) bool { return z.Name == zone }) {
		return []Issue{{Field: "defaults.network.zones",
			Message: fmt.Sprintf("the node's zone %q is not a zone of the policy", zone)}}
	}
	needs := []netzone.Endpoint{netzone.DB}
	if role == roleWebapp {
		needs = []netzone.Endpoint{netzone.CoreappCommunication, netzone.DB}
	}
	var out []Issue
	for _, ep := range needs {
		if !slices.Contains(e.Network.Reach[ep], zone) {
			out = append(out, Issue{Field: e.reachPath(ep),
				Message: fmt.Sprintf("the node is in zone %q, which may not reach %s", zone, ep)})
		}
	}
	return out
}

// forNode returns r for one node without copying the shared maps and lists, which nobody mutates.
func forNode(r *policyv1.RenderedPolicy, node string) *policyv1.RenderedPolicy {
	return &policyv1.RenderedPolicy{
		PolicyNumber: r.GetPolicyNumber(), NodeId: node, Role: r.GetRole(), Env: r.GetEnv(), Tls: r.GetTls(),
		AdminHeaders: r.GetAdminHeaders(), ApiPathPrefix: r.GetApiPathPrefix(), Allowlists: r.GetAllowlists(),
		Nftables: r.GetNftables(), Warnings: r.GetWarnings(),
	}
}
