package adminsvc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

const goodPassword = "N3w-Passw0rd!"

// bearer returns ctx carrying the token as grpcurl would send it.
func bearer(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func wantCode(t *testing.T, err error, want codes.Code, what string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

// loginChanged creates (as admin over mTLS) a user of role, logs in, changes the password and returns
// a token that is no longer restricted.
func loginChanged(t *testing.T, env *wardentest.Env, admin adminv1.AdminServiceClient, name string, role adminv1.UserRole) string {
	t.Helper()
	ctx := t.Context()
	if _, err := admin.CreateUser(ctx, &adminv1.CreateUserRequest{Username: name, Role: role, InitialPassword: "Init1al-Pw!"}); err != nil {
		t.Fatalf("CreateUser %s: %v", name, err)
	}
	anon := adminv1.NewAdminServiceClient(env.AnonConn())
	lr, err := anon.Login(ctx, &adminv1.LoginRequest{Username: name, Password: "Init1al-Pw!"})
	if err != nil {
		t.Fatalf("Login %s: %v", name, err)
	}
	if !lr.MustChangePassword {
		t.Fatal("a new user's first token must require a password change")
	}
	if _, err := anon.ChangePassword(bearer(ctx, lr.Token), &adminv1.ChangePasswordRequest{Username: name, OldPassword: "Init1al-Pw!", NewPassword: goodPassword}); err != nil {
		t.Fatalf("ChangePassword %s: %v", name, err)
	}
	return lr.Token
}

func TestBootstrapAdminLoginFlow(t *testing.T) {
	t.Parallel()
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	pw := env.InitialPassword()
	anon := adminv1.NewAdminServiceClient(env.AnonConn())

	lr, err := anon.Login(ctx, &adminv1.LoginRequest{Username: "admin", Password: pw})
	if err != nil {
		t.Fatalf("Login with the initial password: %v", err)
	}
	if !lr.MustChangePassword || lr.Role != adminv1.UserRole_USER_ROLE_ADMIN || !strings.HasPrefix(lr.Token, "wbt_") {
		t.Fatalf("Login = must_change %v role %v; want a must-change admin token", lr.MustChangePassword, lr.Role)
	}
	if d := time.Until(lr.ExpiresAt.AsTime()); d < 6*24*time.Hour || d > 7*24*time.Hour+time.Minute {
		t.Fatalf("token lifetime %v, want 7 days", d)
	}
	tctx := bearer(ctx, lr.Token)

	_, err = anon.ListUsers(tctx, &adminv1.ListUsersRequest{})
	wantCode(t, err, codes.PermissionDenied, "ListUsers with a must-change token")
	_, err = anon.CreateUser(tctx, &adminv1.CreateUserRequest{Username: "x", Role: adminv1.UserRole_USER_ROLE_ADMIN, InitialPassword: goodPassword})
	wantCode(t, err, codes.PermissionDenied, "CreateUser with a must-change token")
	who, err := anon.WhoAmI(tctx, &adminv1.WhoAmIRequest{})
	if err != nil || who.Identity != "user:admin" || who.Role != "admin" || who.Method != "token" {
		t.Fatalf("WhoAmI = %v, %v", who, err)
	}

	for _, tc := range []struct{ pw, rule string }{
		{"Sh0rt!", "at least 8"},
		{"nodigits-Here", "digit"},
		{"n0-upper-case", "upper-case"},
		{"N0-LOWER-CASE", "lower-case"},
		{"N0special1234", "special"},
		{strings.Repeat("Aa1!", 17), "at most 64"},
	} {
		t.Run("weak/"+tc.rule, func(t *testing.T) {
			_, err := anon.ChangePassword(tctx, &adminv1.ChangePasswordRequest{Username: "admin", OldPassword: pw, NewPassword: tc.pw})
			wantCode(t, err, codes.InvalidArgument, "weak password")
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "new_password") || !strings.Contains(msg, tc.rule) {
				t.Fatalf("message %q does not name the field and the rule %q", msg, tc.rule)
			}
		})
	}
	_, err = anon.ChangePassword(tctx, &adminv1.ChangePasswordRequest{Username: "admin", OldPassword: "Wrong-0ld!", NewPassword: goodPassword})
	wantCode(t, err, codes.InvalidArgument, "wrong old password")
	// A must-change admin token may not reset another account.
	_, err = anon.ChangePassword(tctx, &adminv1.ChangePasswordRequest{Username: "someone", NewPassword: goodPassword})
	wantCode(t, err, codes.PermissionDenied, "must-change admin resetting another user")

	if _, err := anon.ChangePassword(tctx, &adminv1.ChangePasswordRequest{Username: "admin", OldPassword: pw, NewPassword: goodPassword}); err != nil {
		t.Fatalf("ChangePassword: %v", err)
	}
	// The same token now works as admin.
	users, err := anon.ListUsers(tctx, &adminv1.ListUsersRequest{})
	if err != nil {
		t.Fatalf("ListUsers after the change: %v", err)
	}
	if len(users.Users) != 1 || users.Users[0].Username != "admin" || users.Users[0].MustChangePassword {
		t.Fatalf("users = %v", users.Users)
	}
	_, err = anon.Login(ctx, &adminv1.LoginRequest{Username: "admin", Password: pw})
	wantCode(t, err, codes.Unauthenticated, "login with the old password")
	lr2, err := anon.Login(ctx, &adminv1.LoginRequest{Username: "admin", Password: goodPassword})
	if err != nil || lr2.MustChangePassword {
		t.Fatalf("login with the new password = %v, %v", lr2, err)
	}

	// Logout revokes the calling token only.
	if _, err := anon.Logout(tctx, &adminv1.LogoutRequest{}); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		_, err := anon.WhoAmI(tctx, &adminv1.WhoAmIRequest{})
		return status.Code(err) == codes.Unauthenticated
	}, "logged-out token refused")
	if _, err := anon.WhoAmI(bearer(ctx, lr2.Token), &adminv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("the other token must survive Logout: %v", err)
	}
	_, err = anon.Logout(ctx, &adminv1.LogoutRequest{})
	wantCode(t, err, codes.Unauthenticated, "Logout without a token")

	t.Run("malformed tokens", func(t *testing.T) {
		for _, tok := range []string{"wbt_short", "wjt_" + strings.Repeat("A", 43), "wbt_" + strings.Repeat("A", 43)} {
			_, err := anon.WhoAmI(bearer(ctx, tok), &adminv1.WhoAmIRequest{})
			wantCode(t, err, codes.Unauthenticated, "token "+tok[:4])
		}
	})
}

func TestRolesAndRevocation(t *testing.T) {
	t.Parallel()
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	admin := adminv1.NewAdminServiceClient(env.AdminConn())
	anon := adminv1.NewAdminServiceClient(env.AnonConn())

	audTok := loginChanged(t, env, admin, "carol", adminv1.UserRole_USER_ROLE_AUDITOR)
	actx := bearer(ctx, audTok)
	if _, err := anon.ListUsers(actx, &adminv1.ListUsersRequest{}); err != nil {
		t.Fatalf("auditor ListUsers: %v", err)
	}
	if _, err := anon.ListAuditEvents(actx, &adminv1.ListAuditEventsRequest{}); err != nil {
		t.Fatalf("auditor ListAuditEvents: %v", err)
	}
	_, err := anon.CreateUser(actx, &adminv1.CreateUserRequest{Username: "mallory", Role: adminv1.UserRole_USER_ROLE_ADMIN, InitialPassword: goodPassword})
	wantCode(t, err, codes.PermissionDenied, "auditor CreateUser")
	_, err = anon.RewrapSealed(actx, &adminv1.RewrapSealedRequest{})
	wantCode(t, err, codes.PermissionDenied, "auditor RewrapSealed")
	_, err = anon.ChangePassword(actx, &adminv1.ChangePasswordRequest{Username: "admin", NewPassword: goodPassword})
	wantCode(t, err, codes.PermissionDenied, "auditor changing another user's password")

	t.Run("create user validation", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			req  *adminv1.CreateUserRequest
			code codes.Code
		}{
			{"bad name", &adminv1.CreateUserRequest{Username: "Bad Name", Role: adminv1.UserRole_USER_ROLE_ADMIN, InitialPassword: goodPassword}, codes.InvalidArgument},
			{"no role", &adminv1.CreateUserRequest{Username: "dave", InitialPassword: goodPassword}, codes.InvalidArgument},
			{"weak", &adminv1.CreateUserRequest{Username: "dave", Role: adminv1.UserRole_USER_ROLE_ADMIN, InitialPassword: "weak"}, codes.InvalidArgument},
			{"exists", &adminv1.CreateUserRequest{Username: "carol", Role: adminv1.UserRole_USER_ROLE_ADMIN, InitialPassword: goodPassword}, codes.AlreadyExists},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := admin.CreateUser(ctx, tc.req)
				wantCode(t, err, tc.code, tc.name)
			})
		}
	})

	// An admin reset revokes the user's tokens and makes it change the password again.
	extra, err := anon.Login(ctx, &adminv1.LoginRequest{Username: "carol", Password: goodPassword})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ChangePassword(ctx, &adminv1.ChangePasswordRequest{Username: "carol", NewPassword: "Res3t-by-admin"}); err != nil {
		t.Fatalf("admin reset: %v", err)
	}
	for _, tok := range []string{audTok, extra.Token} {
		etcdtest.Eventually(t, 10*time.Second, func() bool {
			_, err := anon.WhoAmI(bearer(ctx, tok), &adminv1.WhoAmIRequest{})
			return status.Code(err) == codes.Unauthenticated
		}, "tokens revoked by an admin reset")
	}
	lr, err := anon.Login(ctx, &adminv1.LoginRequest{Username: "carol", Password: "Res3t-by-admin"})
	if err != nil || !lr.MustChangePassword {
		t.Fatalf("login after reset = %v, %v; want a must-change token", lr, err)
	}

	// RevokeTokens and DeleteUser.
	rt, err := admin.RevokeTokens(ctx, &adminv1.RevokeTokensRequest{Username: "carol"})
	if err != nil || rt.Revoked != 1 {
		t.Fatalf("RevokeTokens = %v, %v; want 1", rt, err)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		_, err := anon.WhoAmI(bearer(ctx, lr.Token), &adminv1.WhoAmIRequest{})
		return status.Code(err) == codes.Unauthenticated
	}, "RevokeTokens takes effect")
	if _, err := admin.DeleteUser(ctx, &adminv1.DeleteUserRequest{Username: "carol"}); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	_, err = anon.Login(ctx, &adminv1.LoginRequest{Username: "carol", Password: "Res3t-by-admin"})
	wantCode(t, err, codes.Unauthenticated, "login of a deleted user")
	_, err = admin.DeleteUser(ctx, &adminv1.DeleteUserRequest{Username: "carol"})
	wantCode(t, err, codes.NotFound, "delete twice")
}

func TestLoginRateLimitIsAudited(t *testing.T) {
	t.Parallel()
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	admin := adminv1.NewAdminServiceClient(env.AdminConn())
	anon := adminv1.NewAdminServiceClient(env.AnonConn())
	const secret = "Init1al-Pw!"
	if _, err := admin.CreateUser(ctx, &adminv1.CreateUserRequest{Username: "bob", Role: adminv1.UserRole_USER_ROLE_ADMIN, InitialPassword: secret}); err != nil {
		t.Fatal(err)
	}
	const wrong = "Wrong-Guess-1"
	for range 5 {
		_, err := anon.Login(ctx, &adminv1.LoginRequest{Username: "bob", Password: wrong})
		wantCode(t, err, codes.Unauthenticated, "wrong password")
	}
	_, err := anon.Login(ctx, &adminv1.LoginRequest{Username: "bob", Password: secret})
	wantCode(t, err, codes.ResourceExhausted, "login after 5 failures, even with the right password")

	resp, err := admin.ListAuditEvents(ctx, &adminv1.ListAuditEventsRequest{TargetPrefix: "user/bob", Outcome: adminv1.Outcome_OUTCOME_DENIED})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Events) < 5 {
		t.Fatalf("%d denied events for bob, want at least 5 failed logins", len(resp.Events))
	}
	for _, ev := range resp.Events {
		if ev.Method != adminv1.AdminService_Login_FullMethodName || !strings.HasPrefix(ev.Actor, "anonymous") {
			t.Fatalf("failed-login event %v", ev)
		}
	}
	var limited bool
	all, err := admin.ListAuditEvents(ctx, &adminv1.ListAuditEventsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range all.Events {
		s := ev.String()
		if strings.Contains(s, wrong) || strings.Contains(s, secret) {
			t.Fatalf("a password reached the audit log: %v", ev)
		}
		limited = limited || strings.Contains(ev.Reason, "too many failed attempts")
	}
	if !limited {
		t.Fatal("the rate-limited attempt is not in the audit log")
	}
}

func TestAuditListAndWatch(t *testing.T) {
	t.Parallel()
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	admin := adminv1.NewAdminServiceClient(env.AdminConn())
	names := []string{"u1", "u2", "u3", "u4", "u5"}
	for _, n := range names {
		if _, err := admin.CreateUser(ctx, &adminv1.CreateUserRequest{Username: n, Role: adminv1.UserRole_USER_ROLE_AUDITOR, InitialPassword: goodPassword}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("pages newest first", func(t *testing.T) {
		var got []string
		token := ""
		for range 10 {
			resp, err := admin.ListAuditEvents(ctx, &adminv1.ListAuditEventsRequest{PageSize: 2, PageToken: token,
				Method: "CreateUser", Outcome: adminv1.Outcome_OUTCOME_SUCCESS})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Events {
				got = append(got, strings.TrimPrefix(ev.Target, "user/"))
			}
			if token = resp.NextPageToken; token == "" {
				break
			}
		}
		want := []string{"u5", "u4", "u3", "u2", "u1"}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("CreateUser events %v, want %v", got, want)
		}
	})

	t.Run("filters", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			req  *adminv1.ListAuditEventsRequest
			want int
		}{
			{"target prefix", &adminv1.ListAuditEventsRequest{TargetPrefix: "user/u3"}, 1},
			{"actor", &adminv1.ListAuditEventsRequest{Actor: "spiffe://warden.local/admin/admin", Method: "CreateUser"}, 5},
			{"other actor", &adminv1.ListAuditEventsRequest{Actor: "user:nobody"}, 0},
			{"future", &adminv1.ListAuditEventsRequest{Since: timestampIn(time.Hour)}, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := admin.ListAuditEvents(ctx, tc.req)
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Events) != tc.want {
					t.Fatalf("%d events, want %d: %v", len(resp.Events), tc.want, resp.Events)
				}
			})
		}
		_, err := admin.ListAuditEvents(ctx, &adminv1.ListAuditEventsRequest{PageToken: "not-a-token"})
		wantCode(t, err, codes.InvalidArgument, "bad page token")
	})

	t.Run("watch sees a new event", func(t *testing.T) {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		stream, err := admin.WatchAuditEvents(wctx, &adminv1.WatchAuditEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		// The stream is established once the server has answered headers.
		if _, err := stream.Header(); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(200 * time.Millisecond)
			_, _ = admin.CreateUser(ctx, &adminv1.CreateUserRequest{Username: "watched", Role: adminv1.UserRole_USER_ROLE_AUDITOR, InitialPassword: goodPassword})
		}()
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
			if strings.HasPrefix(resp.Event.Target, "user/u") {
				t.Fatalf("after_revision 0 replayed an old event: %v", resp.Event)
			}
			if resp.Event.Target == "user/watched" && resp.Revision > 0 {
				break
			}
		}
		// Resuming from an old revision replays history.
		stream2, err := admin.WatchAuditEvents(wctx, &adminv1.WatchAuditEventsRequest{AfterRevision: 1})
		if err != nil {
			t.Fatal(err)
		}
		first, err := stream2.Recv()
		if err != nil || first.Revision <= 1 {
			t.Fatalf("resume from revision 1: %v, %v", first, err)
		}
	})
}

func TestGetStatus(t *testing.T) {
	t.Parallel()
	env := wardentest.Start(t, wardentest.Options{})
	admin := adminv1.NewAdminServiceClient(env.AdminConn())
	st, err := admin.GetStatus(t.Context(), &adminv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range st.Services {
		names = append(names, s.Name)
		if s.Health != "SERVING" {
			t.Fatalf("service %s health %s", s.Name, s.Health)
		}
	}
	if !strings.Contains(strings.Join(names, ","), adminv1.AdminService_ServiceDesc.ServiceName) || len(names) < 2 {
		t.Fatalf("hosted services %v", names)
	}
	if !st.EtcdHealthy || strings.Join(st.EtcdEndpoints, ",") != "embedded" || st.TrustDomain != "warden.local" || st.ReplicaId == "" {
		t.Fatalf("status %v", st)
	}
	// The leader is elected shortly after start.
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		st, err = admin.GetStatus(t.Context(), &adminv1.GetStatusRequest{})
		return err == nil && st.LeaderReplicaId == st.ReplicaId
	}, "this replica leads the periodic jobs")
	if !strings.Contains(strings.Join(st.Warnings, "\n"), "dev-mode seal key") {
		t.Fatalf("warnings %v lack the dev seal key", st.Warnings)
	}
	if d := time.Since(st.ServerTime.AsTime()); d < -time.Minute || d > time.Minute {
		t.Fatalf("server time off by %v", d)
	}
}

func timestampIn(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(time.Now().Add(d)) }
