package secretsvc_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/secretsvc"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

// TestKeyspaceHoldsNoPlaintext dumps all of etcd after secrets were created, rotated and revealed, and
// looks for every value, raw and in base64 and hex.
func TestKeyspaceHoldsNoPlaintext(t *testing.T) {
	t.Parallel()
	env, admin := start(t)
	supplied := []byte("correct horse battery staple 0123456789")
	if _, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{
		Name: "supplied", Type: secretv1.SecretType_SECRET_TYPE_WA_SECRET, Value: supplied,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{Name: "generated", Type: secretv1.SecretType_SECRET_TYPE_GENERIC}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RotateSecret(t.Context(), &secretv1.RotateSecretRequest{Name: "generated"}); err != nil {
		t.Fatal(err)
	}
	values := [][]byte{supplied}
	for _, ref := range []struct {
		name string
		n    uint64
	}{{"generated", 1}, {"generated", 2}, {secretsvc.BuiltinName, 1}, {"supplied", 1}} {
		r, err := admin.RevealSecret(t.Context(), &secretv1.RevealSecretRequest{Name: ref.name, Number: ref.n, Reason: "keyspace scan test"})
		if err != nil {
			t.Fatalf("reveal %s/%d: %v", ref.name, ref.n, err)
		}
		values = append(values, r.GetValue())
	}
	if !bytes.Equal(values[len(values)-1], supplied) {
		t.Fatal("reveal returned another value than the one supplied")
	}

	resp, err := env.Platform.Client.Raw().Get(t.Context(), "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		t.Fatal("empty dump")
	}
	for _, v := range values {
		forms := map[string][]byte{
			"raw":          v,
			"base64":       []byte(base64.StdEncoding.EncodeToString(v)),
			"base64-raw":   []byte(base64.RawStdEncoding.EncodeToString(v)),
			"base64url":    []byte(base64.RawURLEncoding.EncodeToString(v)),
			"hex":          []byte(hex.EncodeToString(v)),
			"hex-upper":    []byte(strings.ToUpper(hex.EncodeToString(v))),
			"first-half":   v[:len(v)/2],
			"second-half":  v[len(v)/2:],
			"base64-inner": []byte(base64.StdEncoding.EncodeToString(v)[4:24]),
		}
		for _, kv := range resp.Kvs {
			for form, needle := range forms {
				if bytes.Contains(kv.Value, needle) || bytes.Contains(kv.Key, needle) {
					t.Fatalf("%s form of a secret value found under %q", form, kv.Key)
				}
			}
		}
	}
}

// TestScopeAndAccess covers who receives and who may read what, and that bad requests change nothing.
func TestScopeAndAccess(t *testing.T) {
	t.Parallel()
	env, admin := start(t)
	registerNode(t, env, identity.RoleWebapp, "web-1")
	registerNode(t, env, identity.RoleCoreapp, "core-1")
	webOnly := []byte("webapp only value, never for core")
	if _, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{
		Name: "web-only", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, Value: webOnly, Scope: &secretv1.Scope{Roles: []string{"webapp"}},
	}); err != nil {
		t.Fatal(err)
	}
	coreByID := []byte("for core-1 by node id")
	if _, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{
		Name: "core-one", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, Value: coreByID, Scope: &secretv1.Scope{NodeIds: []string{"core-1"}},
	}); err != nil {
		t.Fatal(err)
	}
	web := startPeer(t, env, identity.RoleWebapp, "web-1", true)
	core := startPeer(t, env, identity.RoleCoreapp, "core-1", true)
	for _, p := range []*peer{web, core} {
		etcdtest.Eventually(t, wait, func() bool { _, ok := p.secret(secretsvc.BuiltinName); return ok }, p.id+" got its snapshot")
	}
	etcdtest.Eventually(t, wait, func() bool { _, a := web.secret("web-only"); _, b := core.secret("core-one"); return a && b }, "scoped secrets delivered")
	if s, _ := web.secret("web-only"); !bytes.Equal(s.GetVersions()[0].GetValue(), webOnly) {
		t.Fatalf("web-1 got %v", s)
	}
	if _, ok := web.secret("core-one"); ok {
		t.Fatal("core-one (scoped to core-1) reached web-1")
	}
	// Make sure core-1 also saw the latest state, then check it never got the Webapp-only secret.
	if _, err := admin.RotateSecret(t.Context(), &secretv1.RotateSecretRequest{Name: "web-only"}); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, wait, func() bool { s, _ := web.secret("web-only"); return len(s.GetVersions()) == 2 }, "rotation reached web-1")
	if _, ok := core.secret("web-only"); ok {
		t.Fatal("a Webapp-only secret reached a Coreapp")
	}
	raw, err := proto.Marshal(core.snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, webOnly) {
		t.Fatal("the Webapp-only value is in a Coreapp snapshot")
	}
	// core-1 is not in scope of web-only, so the rotation waits for web-1 only and completes.
	etcdtest.Eventually(t, wait, func() bool {
		g, err := admin.GetSecret(t.Context(), &secretv1.GetSecretRequest{Name: "web-only"})
		return err == nil && versionState(g.GetSecret(), 2) == secretv1.VersionState_VERSION_STATE_ACTIVE
	}, "web-only version 2 promoted on web-1's acknowledgement alone")

	t.Run("node streams", func(t *testing.T) {
		// A Webapp certificate for an id the registry has as a Coreapp gets nothing.
		impostor := secretv1.NewSecretServiceClient(env.NodeConn(identity.RoleWebapp, "core-1"))
		stream, err := impostor.WatchSecrets(t.Context(), &secretv1.WatchSecretsRequest{NodeId: "core-1"})
		if err == nil {
			_, err = stream.Recv()
		}
		wantCode(t, err, codes.PermissionDenied)
		unknown := secretv1.NewSecretServiceClient(env.NodeConn(identity.RoleWebapp, "web-unregistered"))
		stream, err = unknown.WatchSecrets(t.Context(), &secretv1.WatchSecretsRequest{NodeId: "web-unregistered"})
		if err == nil {
			_, err = stream.Recv()
		}
		wantCode(t, err, codes.FailedPrecondition)
		// Another node's stream is refused by authorisation.
		stream, err = web.client.WatchSecrets(t.Context(), &secretv1.WatchSecretsRequest{NodeId: "core-1"})
		if err == nil {
			_, err = stream.Recv()
		}
		wantCode(t, err, codes.PermissionDenied)
	})

	t.Run("reveal and auditor", func(t *testing.T) {
		_, err := admin.RevealSecret(t.Context(), &secretv1.RevealSecretRequest{Name: "web-only"})
		wantCode(t, err, codes.InvalidArgument)
		_, err = admin.RevealSecret(t.Context(), &secretv1.RevealSecretRequest{Name: "web-only", Reason: "   "})
		wantCode(t, err, codes.InvalidArgument)
		r, err := admin.RevealSecret(t.Context(), &secretv1.RevealSecretRequest{Name: "web-only", Number: 1, Reason: "incident 42"})
		if err != nil || !bytes.Equal(r.GetValue(), webOnly) {
			t.Fatalf("reveal: %v", err)
		}
		ev, ok := findEvent(auditEvents(t, env, "secret/web-only"), secretv1.SecretService_RevealSecret_FullMethodName,
			func(ev *adminv1.AuditEvent) bool { return ev.GetReason() == "incident 42" })
		if !ok || ev.GetDetails()["version"] != "1" {
			t.Fatalf("reveal not audited: %v", ev)
		}
		evRaw, _ := proto.Marshal(ev)
		if bytes.Contains(evRaw, webOnly) {
			t.Fatal("the audit event carries the value")
		}

		auditor := secretv1.NewSecretServiceClient(env.Dial(env.Mint(identity.AuditorID(env.Config.TrustDomain, "aud"))))
		_, err = auditor.RevealSecret(t.Context(), &secretv1.RevealSecretRequest{Name: "web-only", Reason: "curious"})
		wantCode(t, err, codes.PermissionDenied)
		list, err := auditor.ListSecrets(t.Context(), &secretv1.ListSecretsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.GetSecrets()) != 3 {
			t.Fatalf("auditor lists %d secrets, want 3", len(list.GetSecrets()))
		}
		raw, _ := proto.Marshal(list)
		if bytes.Contains(raw, webOnly) || bytes.Contains(raw, coreByID) {
			t.Fatal("list carries a value")
		}
		if _, err := auditor.GetRotationStatus(t.Context(), &secretv1.GetRotationStatusRequest{Name: "web-only"}); err != nil {
			t.Fatal(err)
		}
		_, err = auditor.RotateSecret(t.Context(), &secretv1.RotateSecretRequest{Name: "web-only"})
		wantCode(t, err, codes.PermissionDenied)
	})

	t.Run("pagination", func(t *testing.T) {
		var names []string
		tok := ""
		for {
			page, err := admin.ListSecrets(t.Context(), &secretv1.ListSecretsRequest{PageSize: 2, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range page.GetSecrets() {
				names = append(names, s.GetName())
			}
			if tok = page.GetNextPageToken(); tok == "" {
				break
			}
		}
		if strings.Join(names, ",") != "core-one,wa-secret,web-only" {
			t.Fatalf("paged names %v", names)
		}
		_, err := admin.ListSecrets(t.Context(), &secretv1.ListSecretsRequest{PageToken: "!!"})
		wantCode(t, err, codes.InvalidArgument)
	})

	t.Run("bad requests change nothing", func(t *testing.T) {
		current, err := admin.GetSecret(t.Context(), &secretv1.GetSecretRequest{Name: "core-one"})
		if err != nil {
			t.Fatal(err)
		}
		stale := current.GetSecret().GetVersion() - 1
		tests := []struct {
			name string
			call func() error
			code codes.Code
		}{
			{"bad name", func() error {
				_, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{Name: "Bad/Name", Type: secretv1.SecretType_SECRET_TYPE_GENERIC})
				return err
			}, codes.InvalidArgument},
			{"no type", func() error {
				_, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{Name: "x"})
				return err
			}, codes.InvalidArgument},
			{"short WA_SECRET value", func() error {
				_, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{Name: "short", Type: secretv1.SecretType_SECRET_TYPE_WA_SECRET, Value: []byte("0123456789abcde")})
				return err
			}, codes.InvalidArgument},
			{"value over 64 KiB", func() error {
				_, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{Name: "big", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, Value: make([]byte, 64<<10+1)})
				return err
			}, codes.InvalidArgument},
			{"unknown role", func() error {
				_, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{Name: "r", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, Scope: &secretv1.Scope{Roles: []string{"admin"}}})
				return err
			}, codes.InvalidArgument},
			{"rotation period under an hour", func() error {
				_, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{Name: "p", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, RotationPeriod: durationpb.New(time.Minute)})
				return err
			}, codes.InvalidArgument},
			{"grace under the replay window", func() error {
				_, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{Name: "g", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, GracePeriod: durationpb.New(time.Second)})
				return err
			}, codes.InvalidArgument},
			{"existing name", func() error {
				_, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{Name: "core-one", Type: secretv1.SecretType_SECRET_TYPE_GENERIC})
				return err
			}, codes.AlreadyExists},
			{"stale expected_version on update", func() error {
				_, err := admin.UpdateSecret(t.Context(), &secretv1.UpdateSecretRequest{Name: "core-one", Scope: &secretv1.Scope{}, ExpectedVersion: stale})
				return err
			}, codes.FailedPrecondition},
			{"stale expected_version on delete", func() error {
				_, err := admin.DeleteSecret(t.Context(), &secretv1.DeleteSecretRequest{Name: "core-one", ExpectedVersion: stale})
				return err
			}, codes.FailedPrecondition},
			{"stale expected_version on rotate", func() error {
				_, err := admin.RotateSecret(t.Context(), &secretv1.RotateSecretRequest{Name: "core-one", ExpectedVersion: stale})
				return err
			}, codes.FailedPrecondition},
			{"short WA_SECRET rotation value", func() error {
				_, err := admin.RotateSecret(t.Context(), &secretv1.RotateSecretRequest{Name: secretsvc.BuiltinName, Value: []byte("short")})
				return err
			}, codes.InvalidArgument},
			{"delete wa-secret", func() error {
				_, err := admin.DeleteSecret(t.Context(), &secretv1.DeleteSecretRequest{Name: secretsvc.BuiltinName})
				return err
			}, codes.FailedPrecondition},
			{"delete unknown", func() error {
				_, err := admin.DeleteSecret(t.Context(), &secretv1.DeleteSecretRequest{Name: "nope"})
				return err
			}, codes.NotFound},
			{"promote without staged version", func() error {
				_, err := admin.PromoteSecretVersion(t.Context(), &secretv1.PromoteSecretVersionRequest{Name: "core-one", Number: 2})
				return err
			}, codes.FailedPrecondition},
			{"reveal retired or unknown version", func() error {
				_, err := admin.RevealSecret(t.Context(), &secretv1.RevealSecretRequest{Name: "core-one", Number: 9, Reason: "x"})
				return err
			}, codes.NotFound},
			{"ack with version 0 held", func() error {
				_, err := web.client.AckSecrets(t.Context(), &secretv1.AckSecretsRequest{NodeId: "web-1", Held: []*secretv1.HeldSecret{{Name: "x", Numbers: []uint64{0}}}})
				return err
			}, codes.InvalidArgument},
			{"ack with negative rtt", func() error {
				_, err := web.client.AckSecrets(t.Context(), &secretv1.AckSecretsRequest{NodeId: "web-1", Rtt: durationpb.New(-time.Second)})
				return err
			}, codes.InvalidArgument},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				before := dumpSecretNS(t, env)
				wantCode(t, tc.call(), tc.code)
				if after := dumpSecretNS(t, env); !maps.Equal(before, after) {
					t.Fatal("the secret namespace changed")
				}
			})
		}
	})

	t.Run("update and delete", func(t *testing.T) {
		current, err := admin.GetSecret(t.Context(), &secretv1.GetSecretRequest{Name: "core-one"})
		if err != nil {
			t.Fatal(err)
		}
		up, err := admin.UpdateSecret(t.Context(), &secretv1.UpdateSecretRequest{
			Name: "core-one", Scope: &secretv1.Scope{Roles: []string{"webapp"}}, ExpectedVersion: current.GetSecret().GetVersion(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := up.GetSecret().GetScope().GetRoles(); len(got) != 1 || got[0] != "webapp" || len(up.GetSecret().GetScope().GetNodeIds()) != 0 {
			t.Fatalf("scope after update: %v", up.GetSecret().GetScope())
		}
		if up.GetSecret().GetGracePeriod().AsDuration() != secretsvc.DefaultGracePeriod {
			t.Fatalf("unset grace period changed: %v", up.GetSecret())
		}
		etcdtest.Eventually(t, wait, func() bool { _, a := core.secret("core-one"); _, b := web.secret("core-one"); return !a && b }, "core-one moved from core-1 to web-1")
		if _, err := admin.DeleteSecret(t.Context(), &secretv1.DeleteSecretRequest{Name: "core-one", ExpectedVersion: up.GetSecret().GetVersion()}); err != nil {
			t.Fatal(err)
		}
		etcdtest.Eventually(t, wait, func() bool { _, ok := web.secret("core-one"); return !ok }, "deleted secret gone from web-1")
		for k := range dumpSecretNS(t, env) {
			if strings.HasPrefix(k, "secrets/core-one/") {
				t.Fatalf("%s left after delete", k)
			}
		}
		_, err = admin.GetSecret(t.Context(), &secretv1.GetSecretRequest{Name: "core-one"})
		wantCode(t, err, codes.NotFound)
	})
}

// TestClockSkew: an agent 8 s ahead is flagged (half the 10 s replay window is 5 s), one in sync is not,
// and the skew is exported as a metric.
func TestClockSkew(t *testing.T) {
	t.Parallel()
	env, admin := start(t)
	registerNode(t, env, identity.RoleWebapp, "web-ahead")
	registerNode(t, env, identity.RoleCoreapp, "core-sync")
	ahead := secretv1.NewSecretServiceClient(env.NodeConn(identity.RoleWebapp, "web-ahead"))
	inSync := secretv1.NewSecretServiceClient(env.NodeConn(identity.RoleCoreapp, "core-sync"))
	if _, err := ahead.AckSecrets(t.Context(), &secretv1.AckSecretsRequest{
		NodeId: "web-ahead", AgentTime: timestamppb.New(time.Now().Add(8 * time.Second)), Rtt: durationpb.New(20 * time.Millisecond),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := inSync.AckSecrets(t.Context(), &secretv1.AckSecretsRequest{NodeId: "core-sync", AgentTime: timestamppb.Now()}); err != nil {
		t.Fatal(err)
	}
	// An ack without agent_time keeps the last measurement.
	if _, err := ahead.AckSecrets(t.Context(), &secretv1.AckSecretsRequest{NodeId: "web-ahead"}); err != nil {
		t.Fatal(err)
	}
	resp, err := admin.ListClockSkew(t.Context(), &secretv1.ListClockSkewRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetReplayWindow().AsDuration() != secretsvc.DefaultReplayWindow || len(resp.GetNodes()) != 2 {
		t.Fatalf("skew list: %v", resp)
	}
	byID := map[string]*secretv1.NodeClock{}
	for _, n := range resp.GetNodes() {
		byID[n.GetNodeId()] = n
	}
	if n := byID["web-ahead"]; !n.GetExceeds() || math.Abs(n.GetSkew().AsDuration().Seconds()-8) > 1 {
		t.Fatalf("web-ahead: %v", n)
	}
	if n := byID["core-sync"]; n.GetExceeds() || n.GetSkew().AsDuration().Abs() > time.Second {
		t.Fatalf("core-sync: %v", n)
	}

	page, err := admin.ListClockSkew(t.Context(), &secretv1.ListClockSkewRequest{PageSize: 1})
	if err != nil || len(page.GetNodes()) != 1 || page.GetNextPageToken() == "" || page.GetNodes()[0].GetNodeId() != "core-sync" {
		t.Fatalf("first page: %v %v", page, err)
	}

	gatherer, ok := env.Platform.Metrics.(prometheus.Gatherer)
	if !ok {
		t.Fatal("metrics registry is not a Gatherer")
	}
	mfs, err := gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var skew float64
	var phase bool
	for _, mf := range mfs {
		switch mf.GetName() {
		case "warden_node_clock_skew_seconds":
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "web-ahead" {
					skew = m.GetGauge().GetValue()
				}
			}
		case "warden_secret_rotation_phase":
			phase = true
		}
	}
	if math.Abs(skew-8) > 1 || !phase {
		t.Fatalf("metrics: skew %v, rotation phase present %v", skew, phase)
	}
}
