package adminsvc

import (
	"encoding/base64"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
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

func pageSize(n int32, def, limit int) (int, error) {
	switch {
	case n < 0:
		return 0, apierr.InvalidArg("page_size", "must not be negative")
	case n == 0:
		return def, nil
	default:
		return min(int(n), limit), nil
	}
}

// Page tokens are opaque to clients: base64url of the last key of the page, validated on the way back.
func encodePageToken(last string) string { return base64.RawURLEncoding.EncodeToString([]byte(last)) }

func decodePageToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil {
		return "", fmt.Errorf("page token: %w", err)
	}
	// The decoder skips line breaks; a token has exactly one spelling.
	if encodePageToken(string(b)) != tok {
		return "", errors.New("page token: not canonical")
	}
	return string(b), nil
}
