package meshsvc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/store"
)

// maxReportedPeers keeps a report's transaction (a put per peer, a delete per peer of the previous
// report that is dropped) under etcd's default limit of 128 operations; a Multiconnect mesh of 32
// shards is far smaller.
const maxReportedPeers = 60

// maxErrorLen bounds the stored probe error.
const maxErrorLen = 512

// ReportPeerHealth replaces the caller's row of the matrix. The links live on the reporter's
// membership lease, so a departed member's row disappears with it.
func (s *Service) ReportPeerHealth(ctx context.Context, req *meshv1.ReportPeerHealthRequest) (*meshv1.ReportPeerHealthResponse, error) {
	c := authn.FromContext(ctx)
	node := req.GetNodeId()
	if c.Role != authn.RoleCoreapp || c.Name != node {
		return nil, fmt.Errorf("%w: a Coreapp reports only its own view", apierr.ErrPermission)
	}
	if len(req.GetPeers()) > maxReportedPeers {
		return nil, apierr.InvalidArg("peers", "at most %d peers per report", maxReportedPeers)
	}
	now := s.cfg.Now()
	seen := map[string]bool{}
	var recs []linkRecord
	for i, p := range req.GetPeers() {
		field := fmt.Sprintf("peers[%d]", i)
		if err := identity.ValidName(p.GetNodeId()); err != nil {
			return nil, apierr.InvalidArg(field+".node_id", "%v", err)
		}
		if p.GetNodeId() == node {
			return nil, apierr.InvalidArg(field+".node_id", "a node does not report on itself")
		}
		if seen[p.GetNodeId()] {
			return nil, apierr.InvalidArg(field+".node_id", "%s is reported twice", p.GetNodeId())
		}
		seen[p.GetNodeId()] = true
		rec := linkRecord{Reachable: p.GetReachable(), Error: truncate(p.GetError(), maxErrorLen), At: now}
		if p.GetRtt() != nil {
			if err := p.GetRtt().CheckValid(); err != nil || p.GetRtt().AsDuration() < 0 {
				return nil, apierr.InvalidArg(field+".rtt", "must be a non-negative duration")
			}
			rec.RTT = p.GetRtt().AsDuration()
		}
		recs = append(recs, rec)
	}
	kv, err := s.cfg.Store.Get(ctx, keyMember(node))
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.FailedPrecondition("%s is not a mesh member: hold a WatchPeers stream before reporting", node)
	}
	if err != nil {
		return nil, fmt.Errorf("report peer health: %w", err)
	}
	// etcd refuses a transaction that deletes a range and writes keys inside it, so the links the new
	// report drops are deleted one by one.
	old, _, _, err := s.cfg.Store.List(ctx, prefixLinksFrom(node), "", 0)
	if err != nil {
		return nil, fmt.Errorf("report peer health: %w", err)
	}
	var ops []store.Op
	for _, l := range old {
		if _, to, _ := splitLinkKey(l.Key); !seen[to] {
			ops = append(ops, store.DeleteOp(l.Key))
		}
	}
	for i, p := range req.GetPeers() {
		ops = append(ops, store.PutWithLeaseOp(keyLink(node, p.GetNodeId()), encodeJSON(recs[i]), kv.Lease))
	}
	// The compare keeps a report from landing on a membership that was replaced meanwhile, whose lease
	// may already be gone.
	rev, err := s.cfg.Store.Txn(ctx, []store.Cond{store.AtRevision(keyMember(node), kv.ModRevision)}, ops)
	if errors.Is(err, store.ErrConflict) {
		return nil, apierr.FailedPrecondition("the membership of %s changed during the report; report again", node)
	}
	if err != nil {
		return nil, fmt.Errorf("report peer health: %w", err)
	}
	// Read-your-writes for GetMeshStatus on this replica.
	if err := s.mirror.WaitRevision(ctx, rev); err != nil {
		return nil, err
	}
	return &meshv1.ReportPeerHealthResponse{}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return strings.ToValidUTF8(s, "\ufffd")
	}
	return strings.ToValidUTF8(s[:n], "\ufffd")
}

// GetMeshStatus shows the mesh as this replica's mirror has it.
func (s *Service) GetMeshStatus(ctx context.Context, _ *meshv1.GetMeshStatusRequest) (*meshv1.GetMeshStatusResponse, error) {
	if err := s.mirror.WaitReady(ctx); err != nil {
		return nil, errors.Join(err, store.ErrUnavailable)
	}
	st := s.readState()
	resp := &meshv1.GetMeshStatusResponse{
		MasterNodeId: st.master,
		Config:       configToProto(st.config, st.configVersion),
		Warnings:     st.warnings(),
	}
	nodes := make([]string, len(st.members))
	for i, m := range st.members {
		resp.Members = append(resp.Members, peerToProto(m))
		nodes[i] = m.node
	}
	reach := map[[2]string]bool{}
	for _, kv := range s.mirror.List(prefixLinks) {
		from, to, ok := splitLinkKey(kv.Key)
		if !ok || !st.isMember(from) || !st.isMember(to) {
			continue
		}
		rec, err := decodeJSON[linkRecord](kv.Value)
		if err != nil {
			continue
		}
		resp.Links = append(resp.Links, linkToProto(from, to, rec))
		reach[[2]string{from, to}] = rec.Reachable
	}
	for _, group := range partitions(nodes, reach) {
		resp.Partitions = append(resp.Partitions, &meshv1.Partition{NodeIds: group})
	}
	if len(resp.Partitions) > 1 {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("mesh partitioned into %d groups", len(resp.Partitions)))
	}
	return resp, nil
}

// partitions are the connected components of mutual reachability: two members are together when
// each reports reaching the other. Each group is sorted, and groups are ordered by their first member.
func partitions(nodes []string, reach map[[2]string]bool) [][]string {
	parent := make(map[string]string, len(nodes))
	for _, n := range nodes {
		parent[n] = n
	}
	var find func(string) string
	find = func(n string) string {
		for parent[n] != n {
			parent[n] = parent[parent[n]]
			n = parent[n]
		}
		return n
	}
	for pair, ok := range reach {
		if ok && reach[[2]string{pair[1], pair[0]}] {
			a, b := find(pair[0]), find(pair[1])
			if a != b {
				parent[max(a, b)] = min(a, b)
			}
		}
	}
	groups := map[string][]string{}
	for _, n := range nodes {
		r := find(n)
		groups[r] = append(groups[r], n)
	}
	out := make([][]string, 0, len(groups))
	for _, g := range groups {
		slices.Sort(g)
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	return out
}

// GetMeshConfig returns the settings, read from etcd so that the version can be used at once.
func (s *Service) GetMeshConfig(ctx context.Context, _ *meshv1.GetMeshConfigRequest) (*meshv1.GetMeshConfigResponse, error) {
	cfg, rev, err := s.loadConfig(ctx)
	if err != nil {
		return nil, err
	}
	return &meshv1.GetMeshConfigResponse{Config: configToProto(cfg, rev)}, nil
}

func (s *Service) loadConfig(ctx context.Context) (configRecord, int64, error) {
	kv, err := s.cfg.Store.Get(ctx, keyConfig)
	if errors.Is(err, store.ErrNotFound) {
		return defaultConfig(), 0, nil
	}
	if err != nil {
		return configRecord{}, 0, fmt.Errorf("mesh config: %w", err)
	}
	cfg, err := decodeJSON[configRecord](kv.Value)
	return cfg, kv.ModRevision, err
}

// SetMeshConfig changes the settings. A new member_ttl applies to memberships that start after it.
// Turning election off drops the master.
func (s *Service) SetMeshConfig(ctx context.Context, req *meshv1.SetMeshConfigRequest) (*meshv1.SetMeshConfigResponse, error) {
	if req.GetConfig() == nil {
		return nil, apierr.InvalidArg("config", "required")
	}
	cfg, err := configFromProto(req.GetConfig())
	if err != nil {
		return nil, err
	}
	if req.GetExpectedVersion() < 0 {
		return nil, apierr.InvalidArg("expected_version", "must not be negative")
	}
	cond := store.Any()
	if req.GetExpectedVersion() != 0 {
		cond = store.AtRevision(keyConfig, req.GetExpectedVersion())
	}
	ops := []store.Op{
		store.PutOp(keyConfig, encodeJSON(cfg)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "mesh/config", Outcome: audit.Success, Reason: "mesh settings changed",
			Details: map[string]string{
				"shards":          strconv.FormatUint(uint64(cfg.Shards), 10),
				"master_election": strconv.FormatBool(cfg.MasterElection),
				"member_ttl":      cfg.MemberTTL.String(),
			}}),
	}
	if !cfg.MasterElection {
		ops = append(ops, store.DeleteOp(keyMaster))
	}
	rev, err := s.cfg.Store.Txn(ctx, []store.Cond{cond}, ops)
	if err != nil {
		return nil, fmt.Errorf("set mesh config: %w", err)
	}
	if err := s.mirror.WaitRevision(ctx, rev); err != nil {
		return nil, err
	}
	return &meshv1.SetMeshConfigResponse{Config: configToProto(cfg, rev)}, nil
}
