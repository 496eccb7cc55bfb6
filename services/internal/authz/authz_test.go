package authz

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/authn"
)

// TestTableCoversEveryMethod fails when an RPC is added without deciding who may call it, and when the
// table names a method that no longer exists.
func TestTableCoversEveryMethod(t *testing.T) {
	s := grpc.NewServer()
	certv1.RegisterCertServiceServer(s, certv1.UnimplementedCertServiceServer{})
	secretv1.RegisterSecretServiceServer(s, secretv1.UnimplementedSecretServiceServer{})
	policyv1.RegisterPolicyServiceServer(s, policyv1.UnimplementedPolicyServiceServer{})
	meshv1.RegisterMeshServiceServer(s, meshv1.UnimplementedMeshServiceServer{})
	adminv1.RegisterAdminServiceServer(s, adminv1.UnimplementedAdminServiceServer{})
	seen := map[string]bool{}
	for svc, info := range s.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			seen[full] = true
			if _, ok := Table[full]; !ok {
				t.Errorf("%s is missing from the authorisation table", full)
			}
		}
	}
	for m := range Table {
		if !seen[m] {
			t.Errorf("table entry %s matches no registered method", m)
		}
	}
	if len(seen) < 60 {
		t.Fatalf("only %d methods registered; the API has more", len(seen))
	}
}

func TestUnknownMethodDenied(t *testing.T) {
	err := Authorize(authn.Caller{Method: authn.MethodMTLS, Role: authn.RoleAdmin}, "/warden.cert.v1.CertService/Nope", nil)
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("err = %v, want ErrDenied", err)
	}
}

// TestDecisions checks every class of rule against every kind of caller.
func TestDecisions(t *testing.T) {
	admin := authn.Caller{Method: authn.MethodMTLS, Role: authn.RoleAdmin, Name: "admin"}
	auditor := authn.Caller{Method: authn.MethodMTLS, Role: authn.RoleAuditor, Name: "aud"}
	web := authn.Caller{Method: authn.MethodMTLS, Role: authn.RoleWebapp, Name: "web-1"}
	core := authn.Caller{Method: authn.MethodMTLS, Role: authn.RoleCoreapp, Name: "core-1"}
	anon := authn.Caller{Method: authn.MethodNone}
	userTok := authn.Caller{Method: authn.MethodToken, Role: authn.RoleAuditor, Name: "alice"}
	mustChange := authn.Caller{Method: authn.MethodToken, Role: authn.RoleAdmin, Name: "admin", MustChangePassword: true}

	cases := []struct {
		name   string
		caller authn.Caller
		method string
		req    any
		want   error // nil, ErrDenied or ErrUnauthenticated
	}{
		{"anon bootstrap", anon, certv1.CertService_Bootstrap_FullMethodName, &certv1.BootstrapRequest{}, nil},
		{"anon login", anon, adminv1.AdminService_Login_FullMethodName, &adminv1.LoginRequest{}, nil},
		{"anon list nodes", anon, certv1.CertService_ListNodes_FullMethodName, &certv1.ListNodesRequest{}, ErrUnauthenticated},
		{"anon watch", anon, certv1.CertService_WatchCredentials_FullMethodName, &certv1.WatchCredentialsRequest{NodeId: "web-1"}, ErrUnauthenticated},
		{"admin create node", admin, certv1.CertService_CreateNode_FullMethodName, &certv1.CreateNodeRequest{}, nil},
		{"auditor create node", auditor, certv1.CertService_CreateNode_FullMethodName, &certv1.CreateNodeRequest{}, ErrDenied},
		{"auditor list nodes", auditor, certv1.CertService_ListNodes_FullMethodName, &certv1.ListNodesRequest{}, nil},
		{"auditor reveal", auditor, secretv1.SecretService_RevealSecret_FullMethodName, &secretv1.RevealSecretRequest{}, ErrDenied},
		{"node own watch", web, certv1.CertService_WatchCredentials_FullMethodName, &certv1.WatchCredentialsRequest{NodeId: "web-1"}, nil},
		{"node other's watch", web, certv1.CertService_WatchCredentials_FullMethodName, &certv1.WatchCredentialsRequest{NodeId: "web-2"}, ErrDenied},
		{"node empty node_id", web, secretv1.SecretService_WatchSecrets_FullMethodName, &secretv1.WatchSecretsRequest{}, ErrDenied},
		{"node other's secrets", core, secretv1.SecretService_WatchSecrets_FullMethodName, &secretv1.WatchSecretsRequest{NodeId: "web-1"}, ErrDenied},
		{"admin cannot watch as node", admin, secretv1.SecretService_WatchSecrets_FullMethodName, &secretv1.WatchSecretsRequest{NodeId: "web-1"}, ErrDenied},
		{"webapp joins mesh", web, meshv1.MeshService_WatchPeers_FullMethodName, &meshv1.WatchPeersRequest{NodeId: "web-1"}, ErrDenied},
		{"coreapp joins mesh", core, meshv1.MeshService_WatchPeers_FullMethodName, &meshv1.WatchPeersRequest{NodeId: "core-1"}, nil},
		{"webapp mesh config", web, meshv1.MeshService_GetMeshConfig_FullMethodName, &meshv1.GetMeshConfigRequest{}, ErrDenied},
		{"node trust bundle", core, certv1.CertService_GetTrustBundle_FullMethodName, &certv1.GetTrustBundleRequest{}, nil},
		{"node list certs", core, certv1.CertService_ListCertificates_FullMethodName, &certv1.ListCertificatesRequest{}, ErrDenied},
		{"node issue own", web, certv1.CertService_IssueCertificate_FullMethodName, &certv1.IssueCertificateRequest{NodeId: "web-1"}, nil},
		{"node issue other", web, certv1.CertService_IssueCertificate_FullMethodName, &certv1.IssueCertificateRequest{NodeId: "core-1"}, ErrDenied},
		{"token user own password", userTok, adminv1.AdminService_ChangePassword_FullMethodName, &adminv1.ChangePasswordRequest{Username: "alice"}, nil},
		{"token user other password", userTok, adminv1.AdminService_ChangePassword_FullMethodName, &adminv1.ChangePasswordRequest{Username: "bob"}, ErrDenied},
		{"node cannot change a password", web, adminv1.AdminService_ChangePassword_FullMethodName, &adminv1.ChangePasswordRequest{Username: "web-1"}, ErrDenied},
		{"must change: list users", mustChange, adminv1.AdminService_ListUsers_FullMethodName, &adminv1.ListUsersRequest{}, ErrDenied},
		{"must change: change password", mustChange, adminv1.AdminService_ChangePassword_FullMethodName, &adminv1.ChangePasswordRequest{Username: "admin"}, nil},
		{"whoami any", core, adminv1.AdminService_WhoAmI_FullMethodName, &adminv1.WhoAmIRequest{}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Authorize(tc.caller, tc.method, tc.req)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("denied: %v", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestNoNodeMayReachAdminOnlyRPCs walks the table: any rule without a node class must refuse nodes.
func TestNoNodeMayReachAdminOnlyRPCs(t *testing.T) {
	for m, r := range Table {
		if r.Who&(Nodes|NodeSelf|Anyone|Authenticated) != 0 {
			continue
		}
		for _, role := range []authn.Role{authn.RoleWebapp, authn.RoleCoreapp} {
			c := authn.Caller{Method: authn.MethodMTLS, Role: role, Name: "n"}
			if err := Authorize(c, m, nil); !errors.Is(err, ErrDenied) {
				t.Errorf("%s: %s allowed (%v)", m, role, err)
			}
		}
		if !strings.HasPrefix(m, "/warden.") {
			t.Errorf("unexpected method name %s", m)
		}
	}
}
