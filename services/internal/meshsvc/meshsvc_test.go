package meshsvc_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/meshsvc"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

const wait = 15 * time.Second

// member is one Coreapp holding a WatchPeers stream; it keeps the newest snapshot.
type member struct {
	node   string
	client meshv1.MeshServiceClient
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	last *meshv1.WatchPeersResponse
	err  error
}

func join(t *testing.T, env *wardentest.Env, node string, eligible bool) *member {
	t.Helper()
	client := meshv1.NewMeshServiceClient(env.NodeConn(identity.RoleCoreapp, node))
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := client.WatchPeers(ctx, &meshv1.WatchPeersRequest{NodeId: node, ControlAddress: "127.0.0.1:7500", MasterEligible: eligible})
	if err != nil {
		cancel()
		t.Fatalf("WatchPeers %s: %v", node, err)
	}
	m := &member{node: node, client: client, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			resp, err := stream.Recv()
			m.mu.Lock()
			if err != nil {
				m.err = err
				m.mu.Unlock()
				return
			}
			if m.last != nil && resp.Version < m.last.Version {
				m.err = fmt.Errorf("version went back from %d to %d", m.last.Version, resp.Version)
			}
			m.last = resp
			m.mu.Unlock()
		}
	}()
	t.Cleanup(m.leave)
	return m
}

func (m *member) leave() {
	m.cancel()
	<-m.done
}

func (m *member) snapshot() (*meshv1.WatchPeersResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last, m.err
}

func peerIDs(resp *meshv1.WatchPeersResponse) string {
	if resp == nil {
		return ""
	}
	var ids []string
	for _, p := range resp.Peers {
		ids = append(ids, p.NodeId)
	}
	return strings.Join(ids, ",")
}

// waitPeers waits until every member's latest snapshot lists exactly want.
func waitPeers(t *testing.T, want string, ms ...*member) {
	t.Helper()
	for _, m := range ms {
		etcdtest.Eventually(t, wait, func() bool {
			s, err := m.snapshot()
			if err != nil {
				t.Fatalf("%s stream: %v", m.node, err)
			}
			return peerIDs(s) == want
		}, m.node+" sees peers "+want)
	}
}

func setConfig(t *testing.T, admin meshv1.MeshServiceClient, cfg *meshv1.MeshConfig) *meshv1.MeshConfig {
	t.Helper()
	resp, err := admin.SetMeshConfig(t.Context(), &meshv1.SetMeshConfigRequest{Config: cfg})
	if err != nil {
		t.Fatalf("SetMeshConfig: %v", err)
	}
	return resp.Config
}

func TestPeersMembershipAndAccess(t *testing.T) {
	t.Parallel()
	env := wardentest.Start(t, wardentest.Options{})
	admin := meshv1.NewMeshServiceClient(env.AdminConn())
	setConfig(t, admin, &meshv1.MeshConfig{Shards: 2, MemberTtl: durationpb.New(2 * time.Second)})

	c1, c2, c3 := join(t, env, "core-1", false), join(t, env, "core-2", false), join(t, env, "core-3", false)
	waitPeers(t, "core-1,core-2,core-3", c1, c2, c3)
	s, _ := c1.snapshot()
	if s.Shards != 2 || s.Version == 0 || s.ServerTime == nil {
		t.Fatalf("snapshot %v", s)
	}
	for _, p := range s.Peers {
		if p.ControlAddress != "127.0.0.1:7500" || p.SpiffeId != "spiffe://warden.local/node/coreapp/"+p.NodeId || p.JoinedAt == nil {
			t.Fatalf("peer %v", p)
		}
	}

	c3.leave()
	waitPeers(t, "core-1,core-2", c1, c2)

	// A member whose replica died stops renewing its lease and drops out after member_ttl.
	ns := env.Platform.Client.Namespace(meshsvc.Prefix)
	lease, err := ns.GrantLease(t.Context(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ghost := `{"control_address":"127.0.0.1:7600","joined_at":"2026-01-01T00:00:00Z","spiffe_id":"spiffe://warden.local/node/coreapp/core-0"}`
	if _, err := ns.Txn(t.Context(), nil, []store.Op{store.PutWithLeaseOp("members/core-0", []byte(ghost), lease)}); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, "core-0,core-1,core-2", c1, c2)
	waitPeers(t, "core-1,core-2", c1, c2)
	st, err := admin.GetMeshStatus(t.Context(), &meshv1.GetMeshStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 2 {
		t.Fatalf("members after a leave: %v", st.Members)
	}

	t.Run("access", func(t *testing.T) {
		web := meshv1.NewMeshServiceClient(env.NodeConn(identity.RoleWebapp, "web-1"))
		for _, tc := range []struct {
			name   string
			client meshv1.MeshServiceClient
			node   string
		}{
			{"webapp", web, "web-1"},
			{"coreapp as another node", c1.client, "core-9"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				stream, err := tc.client.WatchPeers(t.Context(), &meshv1.WatchPeersRequest{NodeId: tc.node, ControlAddress: "127.0.0.1:1"})
				if err == nil {
					_, err = stream.Recv()
				}
				if status.Code(err) != codes.PermissionDenied {
					t.Fatalf("WatchPeers: %v, want PermissionDenied", err)
				}
			})
		}
		_, err := web.ReportPeerHealth(t.Context(), &meshv1.ReportPeerHealthRequest{NodeId: "web-1"})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("webapp ReportPeerHealth: %v", err)
		}
		_, err = c1.client.GetMeshStatus(t.Context(), &meshv1.GetMeshStatusRequest{})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("coreapp GetMeshStatus: %v", err)
		}
		if _, err := c1.client.GetMeshConfig(t.Context(), &meshv1.GetMeshConfigRequest{}); err != nil {
			t.Fatalf("coreapp GetMeshConfig: %v", err)
		}
		stream, err := c1.client.WatchPeers(t.Context(), &meshv1.WatchPeersRequest{NodeId: "core-1", ControlAddress: "no-port"})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("bad control address: %v", err)
		}
	})
}

func TestMatrixPartitionsAndWarnings(t *testing.T) {
	t.Parallel()
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	admin := meshv1.NewMeshServiceClient(env.AdminConn())
	cfg := setConfig(t, admin, &meshv1.MeshConfig{Shards: 4})

	ms := []*member{join(t, env, "core-1", false), join(t, env, "core-2", false), join(t, env, "core-3", false)}
	waitPeers(t, "core-1,core-2,core-3", ms...)

	report := func(m *member, peers map[string]bool) {
		t.Helper()
		req := &meshv1.ReportPeerHealthRequest{NodeId: m.node}
		for _, id := range slices.Sorted(func(yield func(string) bool) {
			for k := range peers {
				if !yield(k) {
					return
				}
			}
		}) {
			req.Peers = append(req.Peers, &meshv1.PeerReachability{NodeId: id, Reachable: peers[id], Rtt: durationpb.New(time.Millisecond)})
		}
		if _, err := m.client.ReportPeerHealth(ctx, req); err != nil {
			t.Fatalf("ReportPeerHealth %s: %v", m.node, err)
		}
	}
	// core-3 is cut off: it reaches nobody and nobody reaches it.
	report(ms[0], map[string]bool{"core-2": true, "core-3": false})
	report(ms[1], map[string]bool{"core-1": true, "core-3": false})
	report(ms[2], map[string]bool{"core-1": false, "core-2": false})

	var st *meshv1.GetMeshStatusResponse
	etcdtest.Eventually(t, wait, func() bool {
		var err error
		st, err = admin.GetMeshStatus(ctx, &meshv1.GetMeshStatusRequest{})
		return err == nil && len(st.Links) == 6
	}, "six links in the matrix")
	var groups []string
	for _, p := range st.Partitions {
		groups = append(groups, strings.Join(p.NodeIds, "+"))
	}
	if strings.Join(groups, " ") != "core-1+core-2 core-3" {
		t.Fatalf("partitions %v", groups)
	}
	warnings := strings.Join(st.Warnings, "\n")
	for _, want := range []string{"3 live Coreapps for 4 shards", "no high availability", "partitioned into 2 groups"} {
		if !strings.Contains(warnings, want) {
			t.Fatalf("warnings %q lack %q", warnings, want)
		}
	}

	// core-3 recovers: one group, and with 2 shards the mesh has high availability.
	report(ms[0], map[string]bool{"core-2": true, "core-3": true})
	report(ms[2], map[string]bool{"core-1": true, "core-2": false})
	if _, err := admin.SetMeshConfig(ctx, &meshv1.SetMeshConfigRequest{Config: &meshv1.MeshConfig{Shards: 2}, ExpectedVersion: cfg.Version}); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, wait, func() bool {
		var err error
		st, err = admin.GetMeshStatus(ctx, &meshv1.GetMeshStatusRequest{})
		return err == nil && len(st.Partitions) == 1 && len(st.Warnings) == 0
	}, "one group and no warnings")

	t.Run("bad reports", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			peers []*meshv1.PeerReachability
		}{
			{"self", []*meshv1.PeerReachability{{NodeId: "core-1"}}},
			{"duplicate", []*meshv1.PeerReachability{{NodeId: "core-2"}, {NodeId: "core-2"}}},
			{"bad id", []*meshv1.PeerReachability{{NodeId: "Core 2"}}},
			{"negative rtt", []*meshv1.PeerReachability{{NodeId: "core-2", Rtt: durationpb.New(-time.Second)}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := ms[0].client.ReportPeerHealth(ctx, &meshv1.ReportPeerHealthRequest{NodeId: "core-1", Peers: tc.peers})
				if status.Code(err) != codes.InvalidArgument {
					t.Fatalf("got %v, want InvalidArgument", err)
				}
			})
		}
		outsider := meshv1.NewMeshServiceClient(env.NodeConn(identity.RoleCoreapp, "core-9"))
		_, err := outsider.ReportPeerHealth(ctx, &meshv1.ReportPeerHealthRequest{NodeId: "core-9"})
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("report from a non-member: %v, want FailedPrecondition", err)
		}
	})

	t.Run("config validation", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			req   *meshv1.SetMeshConfigRequest
			code  codes.Code
			field string
		}{
			{"shards 3", &meshv1.SetMeshConfigRequest{Config: &meshv1.MeshConfig{Shards: 3}}, codes.InvalidArgument, "config.shards"},
			{"shards 0", &meshv1.SetMeshConfigRequest{Config: &meshv1.MeshConfig{}}, codes.InvalidArgument, "config.shards"},
			{"shards 64", &meshv1.SetMeshConfigRequest{Config: &meshv1.MeshConfig{Shards: 64}}, codes.InvalidArgument, "config.shards"},
			{"ttl", &meshv1.SetMeshConfigRequest{Config: &meshv1.MeshConfig{Shards: 1, MemberTtl: durationpb.New(time.Second)}}, codes.InvalidArgument, "config.member_ttl"},
			{"stale version", &meshv1.SetMeshConfigRequest{Config: &meshv1.MeshConfig{Shards: 1}, ExpectedVersion: cfg.Version}, codes.FailedPrecondition, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before, err := admin.GetMeshConfig(ctx, &meshv1.GetMeshConfigRequest{})
				if err != nil {
					t.Fatal(err)
				}
				_, err = admin.SetMeshConfig(ctx, tc.req)
				if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.field) {
					t.Fatalf("got %v, want %v naming %q", err, tc.code, tc.field)
				}
				after, err := admin.GetMeshConfig(ctx, &meshv1.GetMeshConfigRequest{})
				if err != nil || after.Config.Version != before.Config.Version {
					t.Fatalf("config changed by a refused request: %v -> %v (%v)", before.Config, after.Config, err)
				}
			})
		}
		auditor := meshv1.NewMeshServiceClient(env.Dial(env.Mint(identity.AuditorID("warden.local", "aud"))))
		_, err := auditor.SetMeshConfig(ctx, &meshv1.SetMeshConfigRequest{Config: &meshv1.MeshConfig{Shards: 1}})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("auditor SetMeshConfig: %v", err)
		}
	})
}

func TestMasterElection(t *testing.T) {
	t.Parallel()
	env := wardentest.Start(t, wardentest.Options{})
	admin := meshv1.NewMeshServiceClient(env.AdminConn())
	setConfig(t, admin, &meshv1.MeshConfig{Shards: 1, MasterElection: true, MemberTtl: durationpb.New(2 * time.Second)})

	eligible := map[string]*member{"core-1": join(t, env, "core-1", true), "core-2": join(t, env, "core-2", true)}
	other := join(t, env, "core-3", false)
	all := []*member{eligible["core-1"], eligible["core-2"], other}
	waitPeers(t, "core-1,core-2,core-3", all...)

	// agreed waits until every live member names the same master and returns it.
	agreed := func(ms []*member, not string) string {
		t.Helper()
		var master string
		etcdtest.Eventually(t, wait, func() bool {
			master = ""
			for _, m := range ms {
				s, _ := m.snapshot()
				if s == nil || s.MasterNodeId == "" || s.MasterNodeId == not || (master != "" && s.MasterNodeId != master) {
					return false
				}
				master = s.MasterNodeId
			}
			return true
		}, "members agree on a master")
		return master
	}
	first := agreed(all, "")
	if _, ok := eligible[first]; !ok {
		t.Fatalf("master %s is not master-eligible", first)
	}

	eligible[first].leave()
	var rest []*member
	for _, m := range all {
		if m.node != first {
			rest = append(rest, m)
		}
	}
	second := agreed(rest, first)
	if _, ok := eligible[second]; !ok || second == first {
		t.Fatalf("master moved from %s to %s", first, second)
	}

	// Turning election off drops the master.
	setConfig(t, admin, &meshv1.MeshConfig{Shards: 1})
	etcdtest.Eventually(t, wait, func() bool {
		st, err := admin.GetMeshStatus(t.Context(), &meshv1.GetMeshStatusRequest{})
		s, _ := other.snapshot()
		return err == nil && st.MasterNodeId == "" && s != nil && s.MasterNodeId == ""
	}, "no master with election off")
}
