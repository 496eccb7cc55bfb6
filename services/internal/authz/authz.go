// Package authz decides whether a caller may invoke an RPC. The decision is data: Table maps every full
// method name to who may call it, and anything missing from the table is denied.
package authz

import (
	"errors"
	"fmt"

	"github.com/warden-sec/warden/services/internal/authn"
)

// Who is a set of caller classes.
type Who uint16

// Caller classes. The *Self classes admit a node only when the request names that node in node_id;
// UserSelf admits a token holder only for its own username.
const (
	Anyone        Who = 1 << iota // no credential needed (the connection is still TLS)
	Authenticated                 // any authenticated caller
	Admin
	Auditor
	Webapp // any Webapp node
	Coreapp
	WebappSelf // a Webapp node acting on itself
	CoreappSelf
	UserSelf // an operator acting on its own account
)

// Nodes is any node of either role; NodeSelf is either role acting on itself.
const (
	Nodes    = Webapp | Coreapp
	NodeSelf = WebappSelf | CoreappSelf
)

// Rule is one entry of the table.
type Rule struct {
	Who Who
	// OwnerChecked marks rules that admit nodes for a resource named by something other than node_id
	// (e.g. a certificate serial): the handler checks the resource belongs to the caller.
	OwnerChecked bool
}

// ErrDenied is wrapped by every refusal that is not an authentication failure.
var ErrDenied = errors.New("permission denied")

// ErrUnauthenticated is returned when the rule needs credentials the call lacks.
var ErrUnauthenticated = errors.New("unauthenticated")

// NodeNamer is implemented by requests that name a node (generated getters).
type NodeNamer interface{ GetNodeId() string }

// UserNamer is implemented by requests that name a user.
type UserNamer interface{ GetUsername() string }

// passwordChangeOnly are the methods a token that must change its password may still call.
var passwordChangeOnly = map[string]bool{
	methodChangePassword: true,
	methodWhoAmI:         true,
	methodLogout:         true,
}

// Authorize returns nil when c may call method with req. req may be nil for streams before the first
// message; then *Self rules are deferred by returning ErrNeedRequest.
func Authorize(c authn.Caller, method string, req any) error {
	rule, ok := Table[method]
	if !ok {
		return fmt.Errorf("%w: %s is not in the authorisation table", ErrDenied, method)
	}
	if rule.Who&Anyone != 0 {
		return nil
	}
	if c.Method == authn.MethodNone {
		return fmt.Errorf("%w: %s needs a client certificate or a bearer token", ErrUnauthenticated, method)
	}
	if c.MustChangePassword && !passwordChangeOnly[method] {
		return fmt.Errorf("%w: the password must be changed first (AdminService/ChangePassword)", ErrDenied)
	}
	if rule.Who&Authenticated != 0 {
		return nil
	}
	switch c.Role {
	case authn.RoleAdmin:
		if rule.Who&Admin != 0 {
			return nil
		}
	case authn.RoleAuditor:
		if rule.Who&Auditor != 0 {
			return nil
		}
	case authn.RoleWebapp:
		if rule.Who&Webapp != 0 || (rule.Who&WebappSelf != 0 && namesNode(req, c.Name)) {
			return nil
		}
	case authn.RoleCoreapp:
		if rule.Who&Coreapp != 0 || (rule.Who&CoreappSelf != 0 && namesNode(req, c.Name)) {
			return nil
		}
	}
	if rule.Who&UserSelf != 0 && c.Method == authn.MethodToken {
		if u, ok := req.(UserNamer); ok && u.GetUsername() == c.Name {
			return nil
		}
	}
	return fmt.Errorf("%w: %s may not call %s", ErrDenied, c, method)
}

func namesNode(req any, name string) bool {
	n, ok := req.(NodeNamer)
	return ok && n.GetNodeId() != "" && n.GetNodeId() == name
}
