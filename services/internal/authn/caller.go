// Package authn establishes who is calling: an mTLS peer with a SPIFFE identity, an operator with a
// bearer token, or nobody. It only authenticates; what a caller may do is package authz's job.
package authn

import (
	"context"

	"github.com/warden-sec/warden/services/internal/identity"
)

// Role is what a caller is, for authorisation.
type Role string

// Roles. A node's role is its application role; admins and auditors are operators.
const (
	RoleAnonymous    Role = ""
	RoleAdmin        Role = "admin"
	RoleAuditor      Role = "auditor"
	RoleWebapp       Role = "webapp"
	RoleCoreapp      Role = "coreapp"
	RoleControlPlane Role = "controlplane"
)

// Method is how a caller authenticated.
type Method string

// Authentication methods.
const (
	MethodNone  Method = "none"
	MethodMTLS  Method = "mtls"
	MethodToken Method = "token"
)

// Caller is the authenticated party of one RPC.
type Caller struct {
	Role   Role
	Method Method
	// Name is the node id, the admin/auditor name of a certificate, or the user name of a token.
	Name string
	// ID is set for mTLS callers.
	ID identity.ID
	// Serial is the certificate serial (hex) of an mTLS caller.
	Serial string
	// TokenHash identifies the bearer token of a token caller (for Logout).
	TokenHash string
	// MustChangePassword restricts a token caller to ChangePassword.
	MustChangePassword bool
	// Peer is the remote address.
	Peer string
}

// IsNode reports whether the caller is a Webapp or Coreapp node.
func (c Caller) IsNode() bool { return c.Role == RoleWebapp || c.Role == RoleCoreapp }

// String names the caller in logs and the audit log.
func (c Caller) String() string {
	switch c.Method {
	case MethodMTLS:
		return c.ID.String()
	case MethodToken:
		return "user:" + c.Name
	default:
		return "anonymous@" + c.Peer
	}
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// FromContext returns the caller of the RPC ctx belongs to; an anonymous caller when none was set.
func FromContext(ctx context.Context) Caller {
	c, ok := ctx.Value(callerKey{}).(Caller)
	if !ok {
		return Caller{Method: MethodNone}
	}
	return c
}
