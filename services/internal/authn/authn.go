package authn

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/warden-sec/warden/services/internal/identity"
)

// ErrUnauthenticated is returned for credentials that are present but not acceptable.
var ErrUnauthenticated = errors.New("unauthenticated")

// RevocationChecker answers whether a certificate serial (lowercase hex) has been revoked.
type RevocationChecker interface {
	IsRevoked(serial string) bool
}

// TokenUser is what a valid bearer token stands for.
type TokenUser struct {
	Name               string
	Role               Role
	MustChangePassword bool
	TokenHash          string
}

// TokenVerifier checks bearer tokens.
type TokenVerifier interface {
	VerifyToken(ctx context.Context, token string) (TokenUser, error)
}

// Authenticator turns a connection and its metadata into a Caller.
type Authenticator struct {
	TrustDomain string
	Revoked     RevocationChecker
	Tokens      TokenVerifier // nil: tokens are refused
}

// Authenticate inspects the peer's verified certificate chain, then a bearer token. A client
// certificate wins over a token; a call with neither is anonymous (authz decides whether that is
// enough, e.g. for Bootstrap and Login).
func (a *Authenticator) Authenticate(ctx context.Context) (Caller, error) {
	c := Caller{Method: MethodNone}
	p, ok := peer.FromContext(ctx)
	if ok {
		c.Peer = p.Addr.String()
		if ci, ok := p.AuthInfo.(connInfo); ok && ci.leaf != nil {
			return a.fromCertificate(c, ci)
		}
	}
	token, err := bearer(ctx)
	if err != nil {
		return c, err
	}
	if token == "" {
		return c, nil
	}
	if a.Tokens == nil {
		return c, fmt.Errorf("%w: bearer tokens are not accepted by this server", ErrUnauthenticated)
	}
	u, err := a.Tokens.VerifyToken(ctx, token)
	if err != nil {
		return c, err
	}
	c.Method, c.Name, c.Role, c.MustChangePassword, c.TokenHash = MethodToken, u.Name, u.Role, u.MustChangePassword, u.TokenHash
	return c, nil
}

func (a *Authenticator) fromCertificate(c Caller, ci connInfo) (Caller, error) {
	serial, id := ci.serial, ci.id
	if a.Revoked != nil && a.Revoked.IsRevoked(serial) {
		return c, fmt.Errorf("%w: certificate %s is revoked", ErrUnauthenticated, serial)
	}
	if ci.idErr != nil {
		return c, fmt.Errorf("%w: %v", ErrUnauthenticated, ci.idErr)
	}
	if id.TrustDomain != a.TrustDomain {
		return c, fmt.Errorf("%w: identity %s is outside trust domain %s", ErrUnauthenticated, id, a.TrustDomain)
	}
	c.Method, c.ID, c.Serial, c.Name = MethodMTLS, id, serial, id.Name
	switch id.Kind {
	case identity.KindAdmin:
		c.Role = RoleAdmin
	case identity.KindAuditor:
		c.Role = RoleAuditor
	case identity.KindControlPlane:
		c.Role = RoleControlPlane
	case identity.KindNode:
		switch id.Role {
		case identity.RoleWebapp:
			c.Role = RoleWebapp
		case identity.RoleCoreapp:
			c.Role = RoleCoreapp
		}
	}
	if c.Role == RoleAnonymous {
		return c, fmt.Errorf("%w: identity %s has no role", ErrUnauthenticated, id)
	}
	return c, nil
}

// bearer extracts "authorization: Bearer <token>"; a malformed header is an error, not anonymity.
func bearer(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", nil
	}
	if len(vals) > 1 {
		return "", fmt.Errorf("%w: more than one authorization header", ErrUnauthenticated)
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
		return "", fmt.Errorf("%w: authorization header must be \"Bearer <token>\"", ErrUnauthenticated)
	}
	return strings.TrimSpace(tok), nil
}
