package audit

import (
	"context"

	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/identity"
)

// System returns ctx attributed to the control plane itself, for changes made by background jobs
// (promotions, retirements, first-start defaults) rather than by a caller: the audit log then names
// spiffe://<td>/controlplane/wardend and the replica that acted.
func System(ctx context.Context, trustDomain, replicaID string) context.Context {
	return authn.WithCaller(ctx, authn.Caller{
		Role:   authn.RoleControlPlane,
		Method: authn.MethodMTLS,
		Name:   identity.ControlPlaneName,
		ID:     identity.ControlPlaneID(trustDomain),
		Peer:   "replica " + replicaID,
	})
}
