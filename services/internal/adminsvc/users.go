package adminsvc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/paging"
	"github.com/warden-sec/warden/services/internal/password"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/token"
)

// errLoginFailed is the same for an unknown user and a wrong password, so the answer does not tell
// which names exist.
var errLoginFailed = fmt.Errorf("%w: wrong user name or password", apierr.ErrUnauthenticated)

// Login exchanges a user name and password for a bearer token.
func (s *Service) Login(ctx context.Context, req *adminv1.LoginRequest) (*adminv1.LoginResponse, error) {
	c := authn.FromContext(ctx)
	src := sourceKey(c.Peer)
	name := req.GetUsername()
	if !usernameRE.MatchString(name) {
		s.srcFails.fail(src)
		return nil, apierr.InvalidArg("username", "must match %s", usernameRE)
	}
	if s.srcFails.blocked(src) || s.userFails.blocked(name) {
		s.cfg.Audit.RecordDenied(ctx, c, adminv1.AdminService_Login_FullMethodName,
			fmt.Errorf("login as %q refused: too many failed attempts", name))
		return nil, fmt.Errorf("%w: too many failed logins; wait and retry", apierr.ErrExhausted)
	}
	kv, rec, err := s.getUser(ctx, name)
	found := err == nil
	if err != nil && !errors.Is(err, apierr.ErrNotFound) {
		return nil, err
	}
	hash := s.dummyHash
	if found {
		hash = rec.PasswordHash
	}
	ok, err := password.Verify(req.GetPassword(), hash)
	if err != nil && found {
		return nil, fmt.Errorf("login %s: stored hash: %w", name, err)
	}
	if !ok || !found {
		s.srcFails.fail(src)
		s.userFails.fail(name)
		reason := "wrong password"
		if !found {
			reason = "unknown user"
		}
		s.cfg.Audit.Record(ctx, audit.Event{Target: "user/" + name, Outcome: audit.Denied, Reason: "login failed: " + reason})
		return nil, errLoginFailed
	}

	tok, err := token.New(token.BearerPrefix)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	expires := now.Add(s.cfg.TokenLifetime)
	lease, err := s.cfg.Store.GrantLease(ctx, s.cfg.TokenLifetime)
	if err != nil {
		return nil, fmt.Errorf("login %s: %w", name, err)
	}
	trec := tokenRecord{User: name, Role: rec.Role, Expires: expires, MustChange: rec.MustChangePassword, Created: now}
	hashOfToken := tok.Hash()
	conds := []store.Cond{store.AtRevision(keyUser(name), kv.ModRevision)}
	ops := []store.Op{
		store.PutWithLeaseOp(keyToken(hashOfToken), encodeJSON(trec), lease),
		store.PutWithLeaseOp(keyUserToken(name, hashOfToken), nil, lease),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "user/" + name, Outcome: audit.Success, Reason: "login",
			Details: map[string]string{"token": tok.String(), "must_change_password": fmt.Sprint(rec.MustChangePassword)}}),
	}
	if password.NeedsRehash(rec.PasswordHash) {
		if h, err := password.Hash(req.GetPassword()); err == nil {
			rec.PasswordHash = h
			ops = append(ops, store.PutOp(keyUser(name), encodeJSON(rec)))
		}
	}
	if _, err := s.cfg.Store.Txn(ctx, conds, ops); err != nil {
		s.revokeLease(ctx, lease)
		if errors.Is(err, store.ErrConflict) {
			// The user changed (password, deletion) while the password was being checked.
			return nil, fmt.Errorf("%w: the account changed during login; retry", apierr.ErrUnauthenticated)
		}
		return nil, fmt.Errorf("login %s: %w", name, err)
	}
	return &adminv1.LoginResponse{
		Token:              tok.Value(),
		ExpiresAt:          timestamppb.New(expires),
		MustChangePassword: rec.MustChangePassword,
		Role:               roleToProto(rec.Role),
	}, nil
}

// Logout revokes the token the call carries.
func (s *Service) Logout(ctx context.Context, _ *adminv1.LogoutRequest) (*adminv1.LogoutResponse, error) {
	c := authn.FromContext(ctx)
	if c.Method != authn.MethodToken || c.TokenHash == "" {
		return nil, apierr.FailedPrecondition("Logout revokes the bearer token of the call, and this call carries none")
	}
	_, err := s.cfg.Store.Txn(ctx, nil, []store.Op{
		store.DeleteOp(keyToken(c.TokenHash)),
		store.DeleteOp(keyUserToken(c.Name, c.TokenHash)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "user/" + c.Name, Outcome: audit.Success, Reason: "logout"}),
	})
	if err != nil {
		return nil, fmt.Errorf("logout: %w", err)
	}
	return &adminv1.LogoutResponse{}, nil
}

// ChangePassword sets a password. A user changing its own password proves the old one; an admin
// resetting someone else's does not, and the user must then change it again at next login, since the
// admin knows it. Either way every other token of the user is revoked.
func (s *Service) ChangePassword(ctx context.Context, req *adminv1.ChangePasswordRequest) (*adminv1.ChangePasswordResponse, error) {
	c := authn.FromContext(ctx)
	name := req.GetUsername()
	if !usernameRE.MatchString(name) {
		return nil, apierr.InvalidArg("username", "must match %s", usernameRE)
	}
	self := c.Method == authn.MethodToken && c.Name == name
	if !self && (c.Role != authn.RoleAdmin || c.MustChangePassword) {
		// The table admits admins for any user; an admin token that must change its own password first
		// gets no further than its own account.
		return nil, fmt.Errorf("%w: only the user itself or an admin may change %s's password", apierr.ErrPermission, name)
	}
	if err := validatePassword("new_password", req.GetNewPassword()); err != nil {
		return nil, err
	}
	kv, rec, err := s.getUser(ctx, name)
	if err != nil {
		return nil, err
	}
	if self {
		if s.userFails.blocked(name) {
			return nil, fmt.Errorf("%w: too many failed password checks; wait and retry", apierr.ErrExhausted)
		}
		ok, err := password.Verify(req.GetOldPassword(), rec.PasswordHash)
		if err != nil {
			return nil, fmt.Errorf("change password of %s: stored hash: %w", name, err)
		}
		if !ok {
			s.userFails.fail(name)
			s.cfg.Audit.Record(ctx, audit.Event{Target: "user/" + name, Outcome: audit.Denied, Reason: "change password: wrong old password"})
			return nil, apierr.InvalidArg("old_password", "does not match the current password")
		}
	}
	if self && req.GetNewPassword() == req.GetOldPassword() {
		return nil, apierr.InvalidArg("new_password", "must differ from the current password")
	}
	hash, err := password.Hash(req.GetNewPassword())
	if err != nil {
		return nil, err
	}
	rec.PasswordHash = hash
	rec.MustChangePassword = !self
	ops := []store.Op{
		store.PutOp(keyUser(name), encodeJSON(rec)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "user/" + name, Outcome: audit.Success, Reason: "password changed",
			Details: map[string]string{"by_self": fmt.Sprint(self), "must_change_password": fmt.Sprint(rec.MustChangePassword)}}),
	}
	keep := ""
	if self {
		// The calling token stays and loses its restriction, so the user carries on without logging in
		// again; it keeps its lease and so its expiry.
		keep = c.TokenHash
		tkv, err := s.cfg.Store.Get(ctx, keyToken(c.TokenHash))
		if err != nil {
			return nil, fmt.Errorf("change password of %s: calling token: %w", name, err)
		}
		trec, err := decodeToken(tkv.Value)
		if err != nil {
			return nil, err
		}
		trec.MustChange = false
		ops = append(ops, store.PutWithLeaseOp(keyToken(c.TokenHash), encodeJSON(trec), tkv.Lease))
	}
	if _, err := s.cfg.Store.Txn(ctx, []store.Cond{store.AtRevision(keyUser(name), kv.ModRevision)}, ops); err != nil {
		return nil, fmt.Errorf("change password of %s: %w", name, err)
	}
	if _, err := s.revokeTokens(ctx, name, keep); err != nil {
		return nil, err
	}
	return &adminv1.ChangePasswordResponse{}, nil
}

// WhoAmI returns the caller.
func (s *Service) WhoAmI(ctx context.Context, _ *adminv1.WhoAmIRequest) (*adminv1.WhoAmIResponse, error) {
	c := authn.FromContext(ctx)
	return &adminv1.WhoAmIResponse{Identity: c.String(), Role: string(c.Role), Method: string(c.Method)}, nil
}

// CreateUser adds an operator that must change its password at first login.
func (s *Service) CreateUser(ctx context.Context, req *adminv1.CreateUserRequest) (*adminv1.CreateUserResponse, error) {
	name := req.GetUsername()
	if !usernameRE.MatchString(name) {
		return nil, apierr.InvalidArg("username", "must match %s", usernameRE)
	}
	role, ok := roleFromProto(req.GetRole())
	if !ok {
		return nil, apierr.InvalidArg("role", "must be USER_ROLE_ADMIN or USER_ROLE_AUDITOR")
	}
	if err := validatePassword("initial_password", req.GetInitialPassword()); err != nil {
		return nil, err
	}
	// Hashing is deliberately slow; a name that is taken is refused before it (the transaction below
	// still decides races).
	if _, err := s.cfg.Store.Get(ctx, keyUser(name)); err == nil {
		return nil, apierr.AlreadyExists("user " + name)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("create user %s: %w", name, err)
	}
	hash, err := password.Hash(req.GetInitialPassword())
	if err != nil {
		return nil, err
	}
	rec := userRecord{Role: role, PasswordHash: hash, MustChangePassword: true, Created: s.cfg.Now()}
	rev, err := s.cfg.Store.Txn(ctx, []store.Cond{store.MustNotExist(keyUser(name))}, []store.Op{
		store.PutOp(keyUser(name), encodeJSON(rec)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "user/" + name, Outcome: audit.Success, Reason: "user created",
			Details: map[string]string{"role": string(role)}}),
	})
	if errors.Is(err, store.ErrConflict) {
		return nil, apierr.AlreadyExists("user " + name)
	}
	if err != nil {
		return nil, fmt.Errorf("create user %s: %w", name, err)
	}
	return &adminv1.CreateUserResponse{User: userToProto(name, rec, rev)}, nil
}

const (
	defaultUserPage = 100
	maxUserPage     = 1000
)

// ListUsers pages through operators by name.
func (s *Service) ListUsers(ctx context.Context, req *adminv1.ListUsersRequest) (*adminv1.ListUsersResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultUserPage, maxUserPage)
	if err != nil {
		return nil, err
	}
	after := ""
	if req.GetPageToken() != "" {
		name, err := paging.After(req.GetPageToken(), "")
		if err != nil || !usernameRE.MatchString(name) {
			return nil, apierr.InvalidArg("page_token", "not a token from next_page_token")
		}
		after = keyUser(name)
	}
	kvs, _, more, err := s.cfg.Store.List(ctx, prefixUsers, after, size)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	resp := &adminv1.ListUsersResponse{}
	for _, kv := range kvs {
		rec, err := decodeUser(kv.Value)
		if err != nil {
			return nil, err
		}
		resp.Users = append(resp.Users, userToProto(strings.TrimPrefix(kv.Key, prefixUsers), rec, kv.ModRevision))
	}
	if more && len(kvs) > 0 {
		resp.NextPageToken = paging.Token(strings.TrimPrefix(kvs[len(kvs)-1].Key, prefixUsers))
	}
	return resp, nil
}

// DeleteUser removes an operator and revokes its tokens.
func (s *Service) DeleteUser(ctx context.Context, req *adminv1.DeleteUserRequest) (*adminv1.DeleteUserResponse, error) {
	name := req.GetUsername()
	if !usernameRE.MatchString(name) {
		return nil, apierr.InvalidArg("username", "must match %s", usernameRE)
	}
	kv, _, err := s.getUser(ctx, name)
	if err != nil {
		return nil, err
	}
	_, err = s.cfg.Store.Txn(ctx, []store.Cond{store.AtRevision(keyUser(name), kv.ModRevision)}, []store.Op{
		store.DeleteOp(keyUser(name)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "user/" + name, Outcome: audit.Success, Reason: "user deleted"}),
	})
	if err != nil {
		return nil, fmt.Errorf("delete user %s: %w", name, err)
	}
	if _, err := s.revokeTokens(ctx, name, ""); err != nil {
		return nil, err
	}
	return &adminv1.DeleteUserResponse{}, nil
}

// RevokeTokens revokes every token of a user.
func (s *Service) RevokeTokens(ctx context.Context, req *adminv1.RevokeTokensRequest) (*adminv1.RevokeTokensResponse, error) {
	name := req.GetUsername()
	if !usernameRE.MatchString(name) {
		return nil, apierr.InvalidArg("username", "must match %s", usernameRE)
	}
	if _, _, err := s.getUser(ctx, name); err != nil {
		return nil, err
	}
	n, err := s.revokeTokens(ctx, name, "")
	if err != nil {
		return nil, err
	}
	s.cfg.Audit.Record(ctx, audit.Event{Target: "user/" + name, Outcome: audit.Success, Reason: "tokens revoked",
		Details: map[string]string{"revoked": fmt.Sprint(n)}})
	return &adminv1.RevokeTokensResponse{Revoked: int32(min(n, 1<<31-1))}, nil
}

// revokeBatch keeps each revocation transaction well under etcd's limit of operations per
// transaction (128 by default): two deletes per token.
const revokeBatch = 50

// revokeTokens deletes every token of name except keep. Users can hold many tokens, so this runs in
// batches after the change that caused it; a failure half-way leaves the rest for a retry of
// RevokeTokens and is reported.
func (s *Service) revokeTokens(ctx context.Context, name, keep string) (int, error) {
	revoked := 0
	after := ""
	for {
		kvs, _, more, err := s.cfg.Store.List(ctx, prefixUserTokensOf(name), after, revokeBatch)
		if err != nil {
			return revoked, fmt.Errorf("revoke tokens of %s: %w", name, err)
		}
		var ops []store.Op
		for _, kv := range kvs {
			after = kv.Key
			h := hashFromUserTokenKey(name, kv.Key)
			if h == keep {
				continue
			}
			ops = append(ops, store.DeleteOp(keyToken(h)), store.DeleteOp(kv.Key))
		}
		if len(ops) > 0 {
			if _, err := s.cfg.Store.Txn(ctx, nil, ops); err != nil {
				return revoked, fmt.Errorf("revoke tokens of %s: %w", name, err)
			}
			revoked += len(ops) / 2
		}
		if !more {
			return revoked, nil
		}
	}
}

func (s *Service) getUser(ctx context.Context, name string) (store.KV, userRecord, error) {
	kv, err := s.cfg.Store.Get(ctx, keyUser(name))
	if errors.Is(err, store.ErrNotFound) {
		return kv, userRecord{}, apierr.NotFound("user " + name)
	}
	if err != nil {
		return kv, userRecord{}, fmt.Errorf("get user %s: %w", name, err)
	}
	rec, err := decodeUser(kv.Value)
	return kv, rec, err
}

func (s *Service) revokeLease(ctx context.Context, id int64) {
	if err := s.cfg.Store.RevokeLease(context.WithoutCancel(ctx), id); err != nil {
		s.cfg.Log.Debug("revoke unused lease", "err", err)
	}
}

// validatePassword names every rule the password breaks.
func validatePassword(field, pw string) error {
	err := password.Validate(pw)
	if err == nil {
		return nil
	}
	var rules []string
	for _, line := range strings.Split(err.Error(), "\n") {
		rules = append(rules, strings.TrimPrefix(line, "password: "))
	}
	return apierr.InvalidArg(field, "%s", strings.Join(rules, "; "))
}
