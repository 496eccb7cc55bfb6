package wardend_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// TestMetricsExposed checks that the operational metrics the README promises are registered and move:
// per-RPC counts and latencies, etcd request latency, connected agents, push latency, policy lag,
// certificate expiry.
func TestMetricsExposed(t *testing.T) {
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	node := policyv1.NewPolicyServiceClient(env.NodeConn(identity.RoleWebapp, "web-1"))
	stream, err := node.WatchPolicy(ctx, &policyv1.WatchPolicyRequest{NodeId: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	admin := policyv1.NewPolicyServiceClient(env.AdminConn())
	cur, err := admin.GetPolicy(ctx, &policyv1.GetPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	doc := cur.GetPolicy().GetDocument()
	if _, err := admin.SetPolicy(ctx, &policyv1.SetPolicyRequest{Document: doc, ExpectedRevision: cur.GetPolicy().GetRevision(), Message: "metrics test"}); err != nil {
		t.Fatal(err)
	}
	for {
		snap, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if snap.GetVersion() > first.GetVersion() && !snap.GetHeartbeat() {
			break
		}
	}
	reg := env.Platform.Metrics.(*prometheus.Registry)
	want := []string{
		"grpc_server_handled_total", "grpc_server_handling_seconds", "grpc_client_handling_seconds",
		"warden_open_streams", "warden_stream_subscribers", "warden_push_latency_seconds", "warden_tls_handshakes_total",
		"warden_policy_current_number", "warden_ca_rotation_phase", "go_goroutines", // warden_cert_expiry_seconds: certsvc tests (needs issued certificates)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, f := range fams {
			have[f.GetName()] = true
		}
		var missing []string
		for _, n := range want {
			if !have[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics missing from the registry: %v", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
