package faults

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/agent/node"
	agentstatus "github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/envelope"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// bound is the generous limit of every poll and start: never a speed assertion.
const bound = 60 * time.Second

// skewedAgent runs the agent's node core in this process with its clock hook set offset from the real
// clock; it bootstraps nodeID (a Webapp) against env.
func skewedAgent(t *testing.T, env *wardentest.Env, nodeID string, offset time.Duration) (dataDir string, tracker *agentstatus.Tracker) {
	t.Helper()
	created, err := certv1.NewCertServiceClient(env.AdminConn()).CreateNode(t.Context(), &certv1.CreateNodeRequest{
		NodeId: nodeID, Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp", Addresses: []string{"localhost", "127.0.0.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dataDir = t.TempDir()
	tracker = agentstatus.NewTracker(dataDir, agentstatus.Status{Role: string(identity.RoleWebapp), NodeID: nodeID})
	a, err := node.New(node.Config{
		Role: identity.RoleWebapp, NodeID: nodeID, DataDir: dataDir, Servers: []string{env.Addr},
		JoinToken: created.GetJoinToken(), CAFingerprint: created.GetCaFingerprint(), CAFile: env.Admin.CA,
		GroupID: materialize.NoGroup, State: &live.State{}, Status: tracker, Log: etcdtest.Logger(t),
		Now: func() time.Time { return time.Now().Add(offset) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent %s: %v", nodeID, err)
		}
	})
	return dataDir, tracker
}

// keySet loads the WA_SECRET versions an agent materialised, as the Webapp and Coreapp would.
func keySet(t *testing.T, dataDir string) *envelope.KeySet {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dataDir, "certs", node.FileWASecret))
	if err != nil {
		t.Fatal(err)
	}
	var f node.SecretsFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	states := map[string]envelope.KeyState{"staged": envelope.Staged, "active": envelope.Active, "retiring": envelope.Retiring}
	var keys []envelope.Key
	for _, v := range f.Versions {
		secret, err := hex.DecodeString(v.Value)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, envelope.Key{Version: v.Number, Secret: secret, State: states[v.State]})
	}
	ks, err := envelope.NewKeySet(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestClockSkew skews agents' clocks relative to the control plane. An agent 8 s ahead (the agent's
// clock hook) and a node that acknowledges with a clock 8 s behind are flagged by ListClockSkew, an
// agent on time is not, and the agent ahead warns in its own status. The envelope, keyed with the
// WA_SECRET the agent holds, behaves as specified for a ±5 s window: a peer 6 s ahead is refused with
// ErrFuture, 6 s behind with ErrExpired, 4 s either way is accepted — so the flagged node's traffic is
// refused both ways.
func TestClockSkew(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wardend with an embedded etcd")
	}
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	secrets := secretv1.NewSecretServiceClient(env.AdminConn())
	aheadDir, ahead := skewedAgent(t, env, "web-ahead", 8*time.Second)
	_, steady := skewedAgent(t, env, "web-steady", 0)

	// A node whose clock is behind, acknowledging on its own (no agent): the RPC a skewed agent makes.
	if _, err := certv1.NewCertServiceClient(env.AdminConn()).CreateNode(ctx, &certv1.CreateNodeRequest{
		NodeId: "core-behind", Role: certv1.NodeRole_NODE_ROLE_COREAPP, Zone: "coreapp",
	}); err != nil {
		t.Fatal(err)
	}
	behind := secretv1.NewSecretServiceClient(env.NodeConn(identity.RoleCoreapp, "core-behind"))
	if _, err := behind.AckSecrets(ctx, &secretv1.AckSecretsRequest{NodeId: "core-behind", AgentTime: timestamppb.New(time.Now().Add(-8 * time.Second))}); err != nil {
		t.Fatal(err)
	}

	type want struct {
		lo, hi  time.Duration
		exceeds bool
	}
	wants := map[string]want{
		"web-ahead":   {7 * time.Second, 9 * time.Second, true},
		"web-steady":  {-time.Second, time.Second, false},
		"core-behind": {-9 * time.Second, -7 * time.Second, true},
	}
	var skew map[string]*secretv1.NodeClock
	etcdtest.Eventually(t, bound, func() bool {
		resp, err := secrets.ListClockSkew(ctx, &secretv1.ListClockSkewRequest{})
		if err != nil {
			return false
		}
		skew = map[string]*secretv1.NodeClock{}
		for _, n := range resp.GetNodes() {
			skew[n.GetNodeId()] = n
		}
		return len(skew) == len(wants)
	}, "every node's clock measured")
	for id, w := range wants {
		n := skew[id]
		if d := n.GetSkew().AsDuration(); d < w.lo || d > w.hi || n.GetExceeds() != w.exceeds {
			t.Errorf("%s: skew %s exceeds %v, want within [%s, %s] exceeds %v", id, d, n.GetExceeds(), w.lo, w.hi, w.exceeds)
		}
		t.Logf("ListClockSkew %-12s skew %-14s exceeds %v", id, n.GetSkew().AsDuration().Round(time.Millisecond), n.GetExceeds())
	}
	clockWarning := func(st agentstatus.Status) bool {
		for _, w := range st.Warnings {
			if strings.HasPrefix(w, "clock: ") {
				return true
			}
		}
		return false
	}
	etcdtest.Eventually(t, bound, func() bool {
		st := ahead.Snapshot()
		return st.Skew > 7*time.Second && clockWarning(st)
	}, "the agent ahead warns about its clock")
	if st := steady.Snapshot(); clockWarning(st) {
		t.Errorf("the agent on time warns: %v", st.Warnings)
	}

	measured := skew["web-ahead"].GetSkew().AsDuration()
	etcdtest.Eventually(t, bound, func() bool {
		_, err := os.Stat(filepath.Join(aheadDir, "certs", node.FileWASecret))
		return err == nil
	}, "the agent ahead holds WA_SECRET")
	ks := keySet(t, aheadDir)
	// The receiver's clock is pinned, so the cases do not depend on how long the test takes.
	now := time.Now()
	cases := []struct {
		name           string
		sender, opener time.Duration // clock offsets from now
		want           error
	}{
		{"peer 6 s ahead", 6 * time.Second, 0, envelope.ErrFuture},
		{"peer 4 s ahead", 4 * time.Second, 0, nil},
		{"peer 6 s behind", -6 * time.Second, 0, envelope.ErrExpired},
		{"peer 4 s behind", -4 * time.Second, 0, nil},
		{"flagged node sends", measured, 0, envelope.ErrFuture},
		{"flagged node receives", 0, measured, envelope.ErrExpired},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg, err := envelope.Seal(ks, []byte("hello"), now.Add(c.sender))
			if err != nil {
				t.Fatal(err)
			}
			o, err := envelope.NewOpener(ks, envelope.WithClock(func() time.Time { return now.Add(c.opener) }))
			if err != nil {
				t.Fatal(err)
			}
			payload, _, err := o.Open(msg)
			if !errors.Is(err, c.want) {
				t.Fatalf("Open = %v, want %v", err, c.want)
			}
			if c.want == nil {
				if string(payload) != "hello" {
					t.Fatalf("payload %q", payload)
				}
				if _, _, err := o.Open(msg); !errors.Is(err, envelope.ErrReplayed) {
					t.Fatalf("replay: %v, want ErrReplayed", err)
				}
			}
		})
	}
}
