package policysvc

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/mirror"
	"github.com/warden-sec/warden/services/internal/paging"
	"github.com/warden-sec/warden/services/internal/store"
)

// renderKey is everything a rendering depends on. Nodes without an override share their role's and
// zone's rendering, so a policy change costs a few renderings, not one per subscriber.
type renderKey struct {
	number     uint64
	role, zone string
	override   string // the node id when the document has a node override for it
}

// maxRenders bounds the rendering cache; it is cleared when full.
const maxRenders = 4096

// rendering returns the (shared, read-only) rendering of version n for a node; node may be "".
func (s *Service) rendering(ctx context.Context, n uint64, role, zone, node string) (*policyv1.RenderedPolicy, error) {
	pv, err := s.version(ctx, n)
	if err != nil {
		return nil, err
	}
	k := renderKey{number: n, role: role, zone: zone}
	if _, ok := pv.GetDocument().GetNodes()[node]; ok && node != "" {
		k.override = node
	}
	s.rmu.Lock()
	r, ok := s.renders[k]
	s.rmu.Unlock()
	if ok {
		return r, nil
	}
	r, err = render(pv.GetDocument(), n, role, zone, k.override)
	if err != nil {
		return nil, err
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if len(s.renders) >= maxRenders {
		clear(s.renders)
	}
	s.renders[k] = r
	return r, nil
}

// hubKey identifies a subscriber: the identity's role is needed for a node missing from the registry.
func hubKey(node string, role authn.Role) string { return string(role) + "/" + node }

// nodeOfHubKey is the node a hub key belongs to, for rebuilding one node's snapshot.
func nodeOfHubKey(key string) string {
	_, node, _ := strings.Cut(key, "/")
	return node
}

// buildTimeout bounds the etcd read of a version missing from the cache during a fan-out.
const buildTimeout = 10 * time.Second

// build is the fan-out's BuildFunc. The snapshot version is the newest revision among its inputs: the
// current pointer and the node's registry entry.
func (s *Service) build(key string) (*policyv1.RenderedPolicy, int64, error) {
	idRole, node, _ := strings.Cut(key, "/")
	n, curVersion, ok := s.currentFromMirror()
	if !ok {
		return nil, 0, nil
	}
	version := max(curVersion, s.cfg.Certs.NodeVersion(node))
	if !mirror.Fresh(version, s.cur, s.cfg.Certs.Registry()) {
		return nil, 0, nil // not publishable yet: the hub rebuilds when the lagging mirror catches up
	}
	role, zone := idRole, ""
	if reg, ok := s.cfg.Certs.Node(node); ok {
		role, zone = reg.Role, reg.Zone
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	r, err := s.rendering(ctx, n, role, zone, node)
	if err != nil {
		return nil, 0, fmt.Errorf("render policy %d for node %s: %w", n, node, err)
	}
	return forNode(r, node), version, nil
}

// selfCheck repeats authz's node_id check for the node-only RPCs, so that a change of the table
// cannot hand one node another's policy.
func selfCheck(ctx context.Context, node string) (authn.Caller, error) {
	c := authn.FromContext(ctx)
	if !c.IsNode() || node == "" || node != c.Name {
		return c, fmt.Errorf("%w: only the node named in node_id may call this", apierr.ErrPermission)
	}
	return c, nil
}

// WatchPolicy implements PolicyService.
func (s *Service) WatchPolicy(req *policyv1.WatchPolicyRequest, stream grpc.ServerStreamingServer[policyv1.WatchPolicyResponse]) error {
	ctx := stream.Context()
	c, err := selfCheck(ctx, req.GetNodeId())
	if err != nil {
		return err
	}
	if req.GetLastVersion() < 0 {
		return apierr.InvalidArg("last_version", "must not be negative")
	}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	sub := s.hub.Subscribe(hubKey(req.GetNodeId(), c.Role), req.GetLastVersion())
	defer sub.Close()
	for {
		snap, v, hb, err := sub.Next(ctx, heartbeat)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := stream.Send(&policyv1.WatchPolicyResponse{
			Version: v, Rendered: snap, ServerTime: timestamppb.New(s.cfg.Now()), Heartbeat: hb,
		}); err != nil {
			return fmt.Errorf("send policy snapshot: %w", err)
		}
	}
}

// maxAckError bounds the error text a node may store.
const maxAckError = 1024

// AckPolicy implements PolicyService.
func (s *Service) AckPolicy(ctx context.Context, req *policyv1.AckPolicyRequest) (*policyv1.AckPolicyResponse, error) {
	node := req.GetNodeId()
	if _, err := selfCheck(ctx, node); err != nil {
		return nil, err
	}
	if req.GetPolicyNumber() == 0 {
		return nil, apierr.InvalidArg("policy_number", "required")
	}
	if req.GetVersion() < 0 {
		return nil, apierr.InvalidArg("version", "must not be negative")
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	// The mirror only lags: a number it already has exists. Anything newer is checked against etcd.
	cur, _, ok := s.currentFromMirror()
	if !ok || req.GetPolicyNumber() > cur {
		var err error
		if cur, _, err = s.readCurrent(ctx); err != nil {
			return nil, err
		}
	}
	if req.GetPolicyNumber() > cur {
		return nil, apierr.InvalidArg("policy_number", "version %d does not exist (current is %d)", req.GetPolicyNumber(), cur)
	}
	msg := strings.ToValidUTF8(req.GetError(), "\ufffd")
	if len(msg) > maxAckError {
		msg = strings.ToValidUTF8(msg[:maxAckError], "") + "…"
	}
	rec := ackRecord{Node: node, Version: req.GetVersion(), PolicyNumber: req.GetPolicyNumber(), Error: msg, AckedAt: s.cfg.Now().UTC()}
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode ack: %w", err)
	}
	ops := []store.Op{store.PutOp(keyAck(node), val)}
	// Acknowledgements are status reports sent on every applied snapshot, as the credentials' are: a
	// node that could not apply a policy is audited, the routine successes of a whole fleet are not
	// (ListPolicyStatus shows them), or every policy change would add one audit event per node.
	if msg != "" {
		ops = append(ops, s.cfg.Audit.Op(ctx, audit.Event{Target: "policy/acks/" + node, Outcome: audit.Failed, Reason: msg, Details: map[string]string{
			"policy_number": strconv.FormatUint(rec.PolicyNumber, 10), "version": strconv.FormatInt(rec.Version, 10),
		}}))
	}
	rev, err := s.ackWrites.Txn(ctx, nil, ops)
	if err != nil {
		return nil, fmt.Errorf("store ack of %s: %w", node, err)
	}
	// ListPolicyStatus reads the mirror: make this write visible there before answering.
	if err := s.acks.WaitRevision(ctx, rev); err != nil {
		return nil, err
	}
	return &policyv1.AckPolicyResponse{}, nil
}

const (
	defaultStatusPage = 100
	maxStatusPage     = 1000
)

// ListPolicyStatus implements PolicyService. It lists every registered node and every node that has
// acknowledged a version (a node may ack before it is registered), sorted by id.
func (s *Service) ListPolicyStatus(ctx context.Context, req *policyv1.ListPolicyStatusRequest) (*policyv1.ListPolicyStatusResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultStatusPage, maxStatusPage)
	if err != nil {
		return nil, err
	}
	after := ""
	if req.GetPageToken() != "" {
		k, err := paging.After(req.GetPageToken(), prefAcks)
		if err != nil {
			return nil, err
		}
		after = strings.TrimPrefix(k, prefAcks)
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	cur, _, err := s.readCurrent(ctx)
	if err != nil {
		return nil, err
	}
	resp := &policyv1.ListPolicyStatusResponse{CurrentNumber: cur}
	ids := s.nodeIDs()
	start, _ := slices.BinarySearch(ids, after)
	if after != "" && start < len(ids) && ids[start] == after {
		start++
	}
	for _, id := range ids[start:] {
		if len(resp.Nodes) == size {
			resp.NextPageToken = paging.Token(keyAck(resp.Nodes[len(resp.Nodes)-1].GetNodeId()))
			break
		}
		st := &policyv1.NodePolicyStatus{NodeId: id}
		if rec, ok := s.ack(id); ok {
			st.PolicyNumber, st.Error, st.AckedAt = rec.PolicyNumber, rec.Error, timestamppb.New(rec.AckedAt)
		}
		resp.Nodes = append(resp.Nodes, st)
	}
	return resp, nil
}

// nodeIDs are the registered and the acknowledging nodes, sorted.
func (s *Service) nodeIDs() []string {
	set := map[string]bool{}
	for _, n := range s.cfg.Certs.Nodes("") {
		set[n.ID] = true
	}
	for _, kv := range s.acks.List(prefAcks) {
		set[strings.TrimPrefix(kv.Key, prefAcks)] = true
	}
	return slices.Sorted(maps.Keys(set))
}

func (s *Service) ack(node string) (ackRecord, bool) {
	kv, ok := s.acks.Get(keyAck(node))
	if !ok {
		return ackRecord{}, false
	}
	var rec ackRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		s.cfg.Log.Warn("unreadable policy ack", "node", node, "err", err)
		return ackRecord{}, false
	}
	return rec, true
}

// registerMetrics exposes the rollout state, computed at scrape time from memory.
func (s *Service) registerMetrics(reg prometheus.Registerer) error {
	current := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "warden_policy_current_number",
		Help: "Number of the current policy version.",
	}, func() float64 {
		n, _, _ := s.currentFromMirror()
		return float64(n)
	})
	behind := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "warden_policy_nodes_behind",
		Help: "Registered nodes that have not acknowledged applying the current policy version without error.",
	}, s.nodesBehind)
	for _, c := range []prometheus.Collector{current, behind} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register policy metrics: %w", err)
		}
	}
	return nil
}

func (s *Service) nodesBehind() float64 {
	n, _, ok := s.currentFromMirror()
	if !ok {
		return 0
	}
	behind := 0
	for _, node := range s.cfg.Certs.Nodes("") {
		if rec, ok := s.ack(node.ID); !ok || rec.PolicyNumber < n || rec.Error != "" {
			behind++
		}
	}
	return float64(behind)
}
