package ctl

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// now is the fixed "current time" of every golden rendering.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	caOld := &certv1.CA{Id: "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0", Subject: "CN=Warden CA 2024", State: certv1.CAState_CA_STATE_RETIRING, Source: certv1.CASource_CA_SOURCE_GENERATED, NotBefore: ts(-400 * 24 * time.Hour), NotAfter: ts(3250 * 24 * time.Hour)}
	caNew := &certv1.CA{Id: "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", Subject: "CN=Warden CA 2025", State: certv1.CAState_CA_STATE_PREPARED, Source: certv1.CASource_CA_SOURCE_UPLOADED_INTERMEDIATE, NotBefore: ts(-time.Hour), NotAfter: ts(3650 * 24 * time.Hour)}
	nodes := []*certv1.Node{
		{NodeId: "core-1", Role: certv1.NodeRole_NODE_ROLE_COREAPP, Zone: "coreapp", Addresses: []string{"core-1.internal", "10.2.0.11"}, CreatedAt: ts(-72 * time.Hour), BootstrappedAt: ts(-71 * time.Hour), AckedVersion: 812, AckedAt: ts(-42 * time.Second), Version: 700},
		{NodeId: "web-1", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp", Addresses: []string{"api.example.com"}, CreatedAt: ts(-72 * time.Hour), BootstrappedAt: ts(-70 * time.Hour), AckedVersion: 811, AckedAt: ts(-3 * time.Minute), Version: 701},
		{NodeId: "web-2", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp", CreatedAt: ts(-10 * time.Minute), Version: 820},
	}
	certs := []*certv1.Certificate{
		{Serial: "3a9f0c21", NodeId: "web-1", Kind: certv1.CertKind_CERT_KIND_WEBAPP_HTTPS, NotAfter: ts(23 * time.Hour), IssuerId: caOld.Id},
		{Serial: "51be77d0", NodeId: "core-1", Kind: certv1.CertKind_CERT_KIND_COREAPP_CONTROL, NotAfter: ts(6*24*time.Hour + 5*time.Hour), IssuerId: caOld.Id},
		{Serial: "77aa0102", NodeId: "web-1", Kind: certv1.CertKind_CERT_KIND_IDENTITY, NotAfter: ts(-2 * time.Hour), IssuerId: caOld.Id},
		{Serial: "9c0d1e2f", NodeId: "web-2", Kind: certv1.CertKind_CERT_KIND_DB_CLIENT, NotAfter: ts(30 * 24 * time.Hour), IssuerId: caNew.Id, RevokedAt: ts(-time.Minute), RevocationReason: certv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE},
	}
	waSecret := &secretv1.Secret{
		Name: "wa-secret", Type: secretv1.SecretType_SECRET_TYPE_WA_SECRET, Scope: &secretv1.Scope{},
		Versions: []*secretv1.SecretVersion{
			{Number: 4, State: secretv1.VersionState_VERSION_STATE_STAGED, CreatedAt: ts(-2 * time.Minute)},
			{Number: 3, State: secretv1.VersionState_VERSION_STATE_ACTIVE, CreatedAt: ts(-30 * 24 * time.Hour), ActivatedAt: ts(-30*24*time.Hour + time.Minute), Supplied: true},
		},
		RotationPeriod: durationpb.New(720 * time.Hour), GracePeriod: durationpb.New(10 * time.Minute), RotationTimeout: durationpb.New(15 * time.Minute),
	}
	dbPassword := &secretv1.Secret{
		Name: "db-password", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, Scope: &secretv1.Scope{Roles: []string{"coreapp"}, NodeIds: []string{"web-1"}},
		Versions:    []*secretv1.SecretVersion{{Number: 1, State: secretv1.VersionState_VERSION_STATE_ACTIVE, CreatedAt: ts(-time.Hour)}},
		GracePeriod: durationpb.New(90 * time.Minute),
	}

	cases := []struct {
		name   string
		render func(w io.Writer) error
	}{
		{"node_list", func(w io.Writer) error { return renderNodes(w, nodes, now) }},
		{"node_add", func(w io.Writer) error {
			return renderNodeAdded(w, &certv1.CreateNodeResponse{
				Node:      &certv1.Node{NodeId: "web-3", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, SpiffeId: "spiffe://warden.local/node/webapp/web-3"},
				JoinToken: "wjt_Zm9vYmFyYmF6", TokenExpiresAt: ts(time.Hour), CaFingerprint: caOld.Id,
			}, "wardend.example.com:7443", now)
		}},
		{"ca_status", func(w io.Writer) error {
			return renderCAStatus(w, &certv1.GetCAStatusResponse{
				Phase: certv1.CAPhase_CA_PHASE_PREPARED, Cas: []*certv1.CA{caOld, caNew}, Version: 733,
				Lagging: []*certv1.NodeLag{{NodeId: "web-2", Reason: "trust bundle without the new CA"}, {NodeId: "core-1", Reason: "not acknowledged since 5m"}},
			}, now)
		}},
		{"cert_list", func(w io.Writer) error { return renderCertificates(w, certs, now) }},
		{"secret_list", func(w io.Writer) error { return renderSecrets(w, []*secretv1.Secret{dbPassword, waSecret}) }},
		{"secret_status", func(w io.Writer) error {
			return renderRotationStatus(w, &secretv1.GetRotationStatusResponse{
				Secret: waSecret, StagedNumber: 4, ActiveNumber: 3, Deadline: ts(13 * time.Minute), PendingNodeIds: []string{"web-2"},
				Nodes: []*secretv1.NodeSecretStatus{
					{NodeId: "core-1", AckedNumber: 4, AckedAt: ts(-90 * time.Second)},
					{NodeId: "web-1", AckedNumber: 4, AckedAt: ts(-80 * time.Second)},
					{NodeId: "web-2", AckedNumber: 3, AckedAt: ts(-26 * time.Hour)},
				},
			}, now)
		}},
		{"policy_history", func(w io.Writer) error {
			return renderHistory(w, []*policyv1.PolicyVersion{
				{Number: 3, CreatedAt: ts(-5 * time.Minute), Author: "user:alice", Message: "roll back the\nTLS change", RollbackOf: 1},
				{Number: 2, CreatedAt: ts(-2 * time.Hour), Author: "spiffe://warden.local/admin/admin", Message: "legacy clients", DowngradeReason: "partner bank still on TLS 1.2 until Q3"},
				{Number: 1, CreatedAt: ts(-72 * time.Hour), Author: "controlplane", Message: "initial"},
			}, now)
		}},
		{"policy_get", func(w io.Writer) error {
			verify := false
			return renderPolicyDocument(w, &policyv1.PolicyVersion{
				Number: 2, Revision: 41, CreatedAt: ts(-2 * time.Hour), Author: "user:alice", Message: "legacy clients",
				Document: &policyv1.PolicyDocument{
					Defaults: &policyv1.PolicySettings{Tls: &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_MODERN}},
					Roles:    map[string]*policyv1.PolicySettings{"webapp": {DbSsl: &policyv1.DBSSLSettings{Verify: &verify}}},
				},
				Warnings: []*policyv1.Issue{{FieldPath: "roles.webapp.db_ssl.verify", Message: "verification off", Downgrade: true}},
			}, now)
		}},
		{"audit_list", func(w io.Writer) error {
			return renderAudit(w, []*adminv1.AuditEvent{
				{Time: ts(-10 * time.Second), Actor: "user:alice", Method: "/warden.secret.v1.SecretService/RevealSecret", Target: "secret/wa-secret", Outcome: adminv1.Outcome_OUTCOME_SUCCESS, Reason: "incident 4711"},
				{Time: ts(-5 * time.Minute), Actor: "anonymous 10.0.0.9:51234", Method: "/warden.cert.v1.CertService/Bootstrap", Target: "node/web-9", Outcome: adminv1.Outcome_OUTCOME_DENIED, Reason: "join token already used"},
			}, now)
		}},
		{"mesh_status", func(w io.Writer) error {
			return renderMeshStatus(w, &meshv1.GetMeshStatusResponse{
				Members: []*meshv1.Peer{
					{NodeId: "core-1", ControlAddress: "10.2.0.11:7000", Zone: "coreapp", JoinedAt: ts(-3 * time.Hour), MasterEligible: true},
					{NodeId: "core-2", ControlAddress: "10.2.0.12:7000", Zone: "coreapp", JoinedAt: ts(-20 * time.Minute)},
				},
				Links: []*meshv1.Link{
					{FromNodeId: "core-1", ToNodeId: "core-2", Reachable: true},
					{FromNodeId: "core-2", ToNodeId: "core-1", Reachable: false},
				},
				Partitions:   []*meshv1.Partition{{NodeIds: []string{"core-1"}}, {NodeIds: []string{"core-2"}}},
				MasterNodeId: "core-1",
				Config:       &meshv1.MeshConfig{Shards: 4, MasterElection: true, MemberTtl: durationpb.New(15 * time.Second)},
				Warnings:     []string{"2 live Coreapps for 4 shards"},
			}, now)
		}},
		{"status", func(w io.Writer) error {
			return renderStatus(w, &StatusReport{
				Server:    "127.0.0.1:7443",
				LocalTime: now.Add(-1500 * time.Millisecond),
				Status: &adminv1.GetStatusResponse{
					Services:    []*adminv1.ServiceStatus{{Name: "warden.cert.v1.CertService", Health: "SERVING"}, {Name: "warden.admin.v1.AdminService", Health: "SERVING"}},
					EtcdHealthy: true, EtcdEndpoints: []string{"embedded"}, ReplicaId: "wardend-a", LeaderReplicaId: "wardend-a", TrustDomain: "warden.local",
					Warnings: []string{"dev-mode seal key in use"}, ServerTime: timestamppb.New(now),
				},
				Nodes:    nodes,
				CA:       &certv1.GetCAStatusResponse{Phase: certv1.CAPhase_CA_PHASE_STABLE, Cas: []*certv1.CA{{Id: caOld.Id, Subject: "CN=Warden CA 2024", State: certv1.CAState_CA_STATE_ACTIVE, NotAfter: caOld.NotAfter}}},
				Expiring: certs[:2],
				Policy:   &policyv1.ListPolicyStatusResponse{CurrentNumber: 3, Nodes: []*policyv1.NodePolicyStatus{{NodeId: "core-1", PolicyNumber: 3}, {NodeId: "web-1", PolicyNumber: 2}}},
				Skew:     &secretv1.ListClockSkewResponse{Nodes: []*secretv1.NodeClock{{NodeId: "core-1", Skew: durationpb.New(300 * time.Millisecond)}, {NodeId: "web-1", Skew: durationpb.New(-7200 * time.Millisecond), Exceeds: true}}},
				Secrets:  []*secretv1.Secret{dbPassword, waSecret},
				MeshErr:  status.Error(codes.Unimplemented, "unknown service warden.mesh.v1.MeshService"),
			}, now)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tc.render(&buf); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, buf.Bytes())
		})
	}
}

func TestStatusJSONKeepsSectionErrors(t *testing.T) {
	r := &StatusReport{
		Server:   "127.0.0.1:7443",
		Status:   &adminv1.GetStatusResponse{ReplicaId: "r1"},
		NodesErr: status.Error(codes.PermissionDenied, "auditor may not"),
		MeshErr:  errors.New("boom"),
	}
	b, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"replica_id": "r1"`, `"nodes": "list nodes`, `"mesh": "boom"`, `"server": "127.0.0.1:7443"`} {
		if want == `"nodes": "list nodes` {
			want = `"nodes": "rpc error: code = PermissionDenied desc = auditor may not"`
		}
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("status JSON lacks %s:\n%s", want, b)
		}
	}
}
