package adminsvc

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/authn"
)

func roleToProto(r authn.Role) adminv1.UserRole {
	switch r {
	case authn.RoleAdmin:
		return adminv1.UserRole_USER_ROLE_ADMIN
	case authn.RoleAuditor:
		return adminv1.UserRole_USER_ROLE_AUDITOR
	default:
		return adminv1.UserRole_USER_ROLE_UNSPECIFIED
	}
}

func roleFromProto(r adminv1.UserRole) (authn.Role, bool) {
	switch r {
	case adminv1.UserRole_USER_ROLE_ADMIN:
		return authn.RoleAdmin, true
	case adminv1.UserRole_USER_ROLE_AUDITOR:
		return authn.RoleAuditor, true
	default:
		return "", false
	}
}

func userToProto(name string, u userRecord, rev int64) *adminv1.User {
	return &adminv1.User{
		Username:           name,
		Role:               roleToProto(u.Role),
		MustChangePassword: u.MustChangePassword,
		CreatedAt:          timestamppb.New(u.Created),
		Version:            rev,
	}
}
