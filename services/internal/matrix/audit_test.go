package matrix_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// TestAuditRecordsEveryChangeAndNoSecret makes one change of each kind, then checks that the audit log
// has a successful event for each (method and target) and that no secret value, password or token
// appears in it, in the API's listing or in etcd's raw bytes.
func TestAuditRecordsEveryChangeAndNoSecret(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end audit test: skipped in -short mode")
	}
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	conn := env.AdminConn()
	certs, secrets, policy, admin := certv1.NewCertServiceClient(conn), secretv1.NewSecretServiceClient(conn), policyv1.NewPolicyServiceClient(conn), adminv1.NewAdminServiceClient(conn)

	secretValue := []byte("audit-test-secret-value-0123456789")
	rotatedValue := []byte("audit-test-rotated-value-abcdefghij")
	const userPassword = "Audit-Test-Pass-42!"

	node, err := certs.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "web-a", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "clients", Addresses: []string{"10.0.0.9"}})
	if err != nil {
		t.Fatal(err)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err = secrets.CreateSecret(ctx, &secretv1.CreateSecretRequest{Name: "db-password", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, Value: secretValue})
	must("CreateSecret", err)
	_, err = secrets.RotateSecret(ctx, &secretv1.RotateSecretRequest{Name: "db-password", Value: rotatedValue})
	must("RotateSecret", err)
	_, err = secrets.RevealSecret(ctx, &secretv1.RevealSecretRequest{Name: "db-password", Reason: "audit test"})
	must("RevealSecret", err)
	cur, err := policy.GetPolicy(ctx, &policyv1.GetPolicyRequest{})
	must("GetPolicy", err)
	doc := cur.GetPolicy().GetDocument()
	if doc.Defaults == nil {
		doc.Defaults = &policyv1.PolicySettings{}
	}
	doc.Defaults.Tls = &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE}
	_, err = policy.SetPolicy(ctx, &policyv1.SetPolicyRequest{Document: doc, ExpectedRevision: cur.GetPolicy().GetRevision(), Message: "audit test", AllowDowngrade: true, DowngradeReason: "legacy clients"})
	must("SetPolicy", err)
	_, err = admin.CreateUser(ctx, &adminv1.CreateUserRequest{Username: "alice", Role: adminv1.UserRole_USER_ROLE_AUDITOR, InitialPassword: userPassword})
	must("CreateUser", err)
	_, err = certs.DecommissionNode(ctx, &certv1.DecommissionNodeRequest{NodeId: "web-a", Reason: "audit test"})
	must("DecommissionNode", err)

	events := listAll(t, admin)
	wantChanges := []struct{ method, target string }{
		{certv1.CertService_CreateNode_FullMethodName, "web-a"},
		{secretv1.SecretService_CreateSecret_FullMethodName, "db-password"},
		{secretv1.SecretService_RotateSecret_FullMethodName, "db-password"},
		{secretv1.SecretService_RevealSecret_FullMethodName, "db-password"},
		{policyv1.PolicyService_SetPolicy_FullMethodName, "policy"},
		{adminv1.AdminService_CreateUser_FullMethodName, "alice"},
		{certv1.CertService_DecommissionNode_FullMethodName, "web-a"},
	}
	for _, w := range wantChanges {
		found := false
		for _, e := range events {
			if e.GetMethod() == w.method && strings.Contains(e.GetTarget(), w.target) && e.GetOutcome() == audit.Success && strings.Contains(e.GetActor(), "/admin/") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no successful audit event by the admin for %s on %q", w.method, w.target)
		}
	}
	for _, e := range events {
		if e.GetMethod() == policyv1.PolicyService_SetPolicy_FullMethodName && !strings.Contains(protojson.Format(e), "legacy clients") {
			t.Errorf("the downgrade's reason is missing from its audit event: %v", e)
		}
	}

	forbidden := map[string][]byte{"secret value": secretValue, "rotated value": rotatedValue, "password": []byte(userPassword), "join token": []byte(node.GetJoinToken())}
	var listed bytes.Buffer
	for _, e := range events {
		listed.WriteString(protojson.Format(e))
	}
	raw, err := env.Platform.Client.Raw().Get(ctx, audit.Prefix, clientv3.WithPrefix())
	must("raw audit dump", err)
	var dump bytes.Buffer
	for _, kv := range raw.Kvs {
		dump.Write(kv.Value)
	}
	for what, v := range forbidden {
		for _, form := range [][]byte{v, []byte(hex.EncodeToString(v)), []byte(base64.StdEncoding.EncodeToString(v)), []byte(base64.RawURLEncoding.EncodeToString(v))} {
			if bytes.Contains(listed.Bytes(), form) || bytes.Contains(dump.Bytes(), form) {
				t.Errorf("the audit log contains the %s (%q)", what, form)
			}
		}
	}
}

func listAll(t *testing.T, admin adminv1.AdminServiceClient) []*adminv1.AuditEvent {
	t.Helper()
	var out []*adminv1.AuditEvent
	tok := ""
	for {
		resp, err := admin.ListAuditEvents(t.Context(), &adminv1.ListAuditEventsRequest{PageSize: 500, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetEvents()...)
		if tok = resp.GetNextPageToken(); tok == "" {
			return out
		}
	}
}
