package secretsvc

import (
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/identity"
)

// Input limits.
const (
	maxValueSize     = 64 << 10
	minWASecretSize  = 16
	maxScopeNodes    = 1000
	minRotation      = time.Hour
	minTimeout       = time.Second
	maxSetting       = 365 * 24 * time.Hour
	maxReasonLen     = 1024
	defaultPageSize  = 100
	maxPageSize      = 1000
	maxHeldSecrets   = 256
	maxHeldVersions  = 64
	maxApplyErrorLen = 1024
	maxRTT           = time.Minute
)

var roles = []string{string(identity.RoleWebapp), string(identity.RoleCoreapp)}

func typeFromProto(t secretv1.SecretType) (string, error) {
	switch t {
	case secretv1.SecretType_SECRET_TYPE_WA_SECRET:
		return typeWASecret, nil
	case secretv1.SecretType_SECRET_TYPE_GENERIC:
		return typeGeneric, nil
	default:
		return "", apierr.InvalidArg("type", "must be SECRET_TYPE_WA_SECRET or SECRET_TYPE_GENERIC")
	}
}

func typeToProto(t string) secretv1.SecretType {
	switch t {
	case typeWASecret:
		return secretv1.SecretType_SECRET_TYPE_WA_SECRET
	case typeGeneric:
		return secretv1.SecretType_SECRET_TYPE_GENERIC
	default:
		return secretv1.SecretType_SECRET_TYPE_UNSPECIFIED
	}
}

func stateToProto(s string) secretv1.VersionState {
	switch s {
	case stateStaged:
		return secretv1.VersionState_VERSION_STATE_STAGED
	case stateActive:
		return secretv1.VersionState_VERSION_STATE_ACTIVE
	case stateRetiring:
		return secretv1.VersionState_VERSION_STATE_RETIRING
	default:
		return secretv1.VersionState_VERSION_STATE_UNSPECIFIED
	}
}

// scopeFromProto validates a scope; roles and node ids come back sorted and without duplicates.
func scopeFromProto(p *secretv1.Scope) (scope, error) {
	var sc scope
	for _, r := range p.GetRoles() {
		if !slices.Contains(roles, r) {
			return scope{}, apierr.InvalidArg("scope.roles", "%q is not a node role (webapp, coreapp)", r)
		}
		sc.Roles = append(sc.Roles, r)
	}
	if len(p.GetNodeIds()) > maxScopeNodes {
		return scope{}, apierr.InvalidArg("scope.node_ids", "%d nodes, at most %d", len(p.GetNodeIds()), maxScopeNodes)
	}
	for _, id := range p.GetNodeIds() {
		if err := identity.ValidName(id); err != nil {
			return scope{}, apierr.InvalidArg("scope.node_ids", "%v", err)
		}
		sc.NodeIDs = append(sc.NodeIDs, id)
	}
	slices.Sort(sc.Roles)
	sc.Roles = slices.Compact(sc.Roles)
	slices.Sort(sc.NodeIDs)
	sc.NodeIDs = slices.Compact(sc.NodeIDs)
	return sc, nil
}

func validName(name string) error {
	if err := identity.ValidName(name); err != nil {
		return apierr.InvalidArg("name", "%v", err)
	}
	return nil
}

// validValue checks a supplied value; an empty one means "generate".
func validValue(field, typ string, v []byte) error {
	if len(v) > maxValueSize {
		return apierr.InvalidArg(field, "%d bytes, at most %d", len(v), maxValueSize)
	}
	if typ == typeWASecret && len(v) > 0 && len(v) < minWASecretSize {
		return apierr.InvalidArg(field, "a WA_SECRET value needs at least %d bytes, got %d", minWASecretSize, len(v))
	}
	return nil
}

// settings are a secret's durations as requested; nil fields are unset.
type settings struct {
	rotation, grace, timeout *durationpb.Duration
}

// apply validates the set fields and writes them to rec; with defaults, unset and zero grace and
// timeout take their defaults (creation), otherwise unset fields keep their value (update). A grace
// period shorter than the replay window would drop a version while messages sealed under it could still
// be valid, so minGrace is the replay window.
func (st settings) apply(rec *secretRecord, defaults bool, minGrace time.Duration) error {
	if st.rotation != nil || defaults {
		d, err := duration("rotation_period", st.rotation)
		if err != nil {
			return err
		}
		if d != 0 && d < minRotation {
			return apierr.InvalidArg("rotation_period", "zero for none, otherwise at least %s", minRotation)
		}
		rec.RotationPeriod = d
	}
	if st.grace != nil || defaults {
		d, err := duration("grace_period", st.grace)
		if err != nil {
			return err
		}
		if d == 0 {
			d = DefaultGracePeriod
		}
		if d < minGrace {
			return apierr.InvalidArg("grace_period", "at least %s", minGrace)
		}
		rec.GracePeriod = d
	}
	if st.timeout != nil || defaults {
		d, err := duration("rotation_timeout", st.timeout)
		if err != nil {
			return err
		}
		if d == 0 {
			d = DefaultRotationTimeout
		}
		if d < minTimeout {
			return apierr.InvalidArg("rotation_timeout", "at least %s", minTimeout)
		}
		rec.RotationTimeout = d
	}
	return nil
}

func duration(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, apierr.InvalidArg(field, "%v", err)
	}
	v := d.AsDuration()
	if v < 0 || v > maxSetting {
		return 0, apierr.InvalidArg(field, "must be between 0 and %s", maxSetting)
	}
	return v, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func durOrNil(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// secretToProto is a secret's metadata; values never pass through here.
func secretToProto(rec *secretRecord, rev int64) *secretv1.Secret {
	p := &secretv1.Secret{
		Name:            rec.Name,
		Type:            typeToProto(rec.Type),
		Scope:           &secretv1.Scope{Roles: rec.Scope.Roles, NodeIds: rec.Scope.NodeIDs},
		RotationPeriod:  durOrNil(rec.RotationPeriod),
		GracePeriod:     durationpb.New(rec.GracePeriod),
		RotationTimeout: durationpb.New(rec.RotationTimeout),
		Version:         rev,
	}
	for i := len(rec.Versions) - 1; i >= 0; i-- {
		v := rec.Versions[i]
		p.Versions = append(p.Versions, &secretv1.SecretVersion{
			Number: v.Number, State: stateToProto(v.State), CreatedAt: ts(v.CreatedAt),
			ActivatedAt: ts(v.ActivatedAt), RetiringAt: ts(v.RetiringAt), Supplied: v.Supplied,
		})
	}
	return p
}
