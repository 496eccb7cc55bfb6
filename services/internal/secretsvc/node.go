package secretsvc

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/mirror"
	"github.com/warden-sec/warden/services/internal/paging"
	"github.com/warden-sec/warden/services/internal/store"
)

// callerNode returns the registry entry of the node named in a request. Authorisation already checked
// the caller is that node; the registry must also know it under the caller's role, so a certificate of
// one role never receives the scope of another.
func (s *Service) callerNode(ctx context.Context, id string) (certsvc.Node, error) {
	n, ok := s.cfg.Certs.Node(id)
	if !ok {
		return certsvc.Node{}, apierr.FailedPrecondition("node %s is not registered", id)
	}
	if c := authn.FromContext(ctx); n.Role != string(c.Role) {
		return certsvc.Node{}, fmt.Errorf("%w: node %s is registered as %s, the caller is %s", apierr.ErrPermission, id, n.Role, c.Role)
	}
	return n, nil
}

// buildSnapshot computes the secrets node id holds: every secret in its scope with the staged, active
// and retiring versions and their values.
//
// Its version is the newest change under secrets/ (any secret, including deletions) or to the node's
// registry entry. Taking every secret, not only those in scope, is what makes a secret leaving the
// node's scope (deleted, or scope narrowed) produce a newer snapshot without it; the price is an
// unchanged snapshot re-sent when an out-of-scope secret changes, which is rare. The version is read
// before the content, so a change racing the build yields a later version and a rebuild, never a
// version whose content is older.
func (s *Service) buildSnapshot(id string) ([]*secretv1.NodeSecret, int64, error) {
	version := max(s.secrets.Version(prefSecrets), s.cfg.Certs.NodeVersion(id))
	if !mirror.Fresh(version, s.secrets, s.cfg.Certs.Registry()) {
		return nil, 0, nil // not publishable yet: the hub rebuilds when the lagging mirror catches up
	}
	node, ok := s.cfg.Certs.Node(id)
	if !ok {
		return nil, 0, apierr.FailedPrecondition("node %s is no longer registered", id)
	}
	var out []*secretv1.NodeSecret
	for _, kv := range s.metas() {
		rec, err := s.records.Decode(kv)
		if err != nil {
			s.log.Error("unreadable secret record left out of snapshots", "key", kv.Key, "err", err)
			continue
		}
		if !rec.Scope.includes(node) {
			continue
		}
		ns := &secretv1.NodeSecret{Name: rec.Name, Type: typeToProto(rec.Type)}
		for i := len(rec.Versions) - 1; i >= 0; i-- {
			v := rec.Versions[i]
			vkv, ok := s.secrets.Get(keyValue(rec.Name, v.Number))
			if !ok {
				s.log.Error("secret version without a value left out of snapshots", "secret", rec.Name, "version", v.Number)
				continue
			}
			val, err := s.value(vkv)
			if err != nil {
				s.log.Error("secret version that does not unseal left out of snapshots", "secret", rec.Name, "version", v.Number, "err", err)
				continue
			}
			ns.Versions = append(ns.Versions, &secretv1.NodeSecretVersion{Number: v.Number, State: stateToProto(v.State), Value: val})
		}
		out = append(out, ns)
	}
	return out, version, nil
}

// WatchSecrets implements SecretService.WatchSecrets.
func (s *Service) WatchSecrets(req *secretv1.WatchSecretsRequest, stream secretv1.SecretService_WatchSecretsServer) error {
	ctx := stream.Context()
	if req.GetLastVersion() < 0 {
		return apierr.InvalidArg("last_version", "must not be negative")
	}
	if _, err := s.callerNode(ctx, req.GetNodeId()); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	sub := s.hub.Subscribe(req.GetNodeId(), req.GetLastVersion())
	defer sub.Close()
	for {
		snap, version, heartbeat, err := sub.Next(ctx, s.cfg.Heartbeat)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		// The snapshot follows the registry's role; a node moved to another role than its certificate's
		// must not receive that role's secrets.
		if _, err := s.callerNode(ctx, req.GetNodeId()); err != nil {
			return err
		}
		resp := &secretv1.WatchSecretsResponse{
			Version: version, Secrets: snap, ServerTime: timestamppb.New(s.cfg.Now()), Heartbeat: heartbeat,
		}
		if err := stream.Send(resp); err != nil {
			return fmt.Errorf("send secrets to %s: %w", req.GetNodeId(), err)
		}
	}
}

// AckSecrets implements SecretService.AckSecrets.
//
// Clock skew is estimated as agent_time + rtt/2 − server receive time: the agent stamped agent_time
// when it sent the request, which then travelled for about half a round trip, so at the moment the
// server received it the agent's clock read about agent_time + rtt/2. The error is the asymmetry of the
// two directions (at most rtt/2) plus the time the agent spent between stamping and sending.
func (s *Service) AckSecrets(ctx context.Context, req *secretv1.AckSecretsRequest) (*secretv1.AckSecretsResponse, error) {
	now := s.cfg.Now()
	rec, err := ackFromProto(req, now)
	if err != nil {
		return nil, err
	}
	if _, err := s.callerNode(ctx, req.GetNodeId()); err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	if rec.SkewAt.IsZero() {
		if prev, ok := s.ackOf(rec.NodeID); ok {
			rec.Skew, rec.SkewAt = prev.Skew, prev.SkewAt
		}
	}
	put, err := putOp(keyAck(rec.NodeID), rec)
	if err != nil {
		return nil, err
	}
	rev, err := s.ackWrites.Txn(ctx, nil, []store.Op{put})
	if err != nil {
		return nil, fmt.Errorf("record acknowledgement of %s: %w", rec.NodeID, err)
	}
	// Read-your-writes: the node's next ack (and ListClockSkew) read the previous one from the mirror.
	// Promotion is not evaluated here: the elected rotation loop follows the acknowledgements.
	if err := s.acks.WaitRevision(ctx, rev); err != nil {
		return nil, err
	}
	return &secretv1.AckSecretsResponse{ServerTime: timestamppb.New(now)}, nil
}

func ackFromProto(req *secretv1.AckSecretsRequest, now time.Time) (ackRecord, error) {
	if req.GetVersion() < 0 {
		return ackRecord{}, apierr.InvalidArg("version", "must not be negative")
	}
	if len(req.GetHeld()) > maxHeldSecrets {
		return ackRecord{}, apierr.InvalidArg("held", "%d secrets, at most %d", len(req.GetHeld()), maxHeldSecrets)
	}
	rec := ackRecord{NodeID: req.GetNodeId(), Version: req.GetVersion(), ReceivedAt: now}
	for _, h := range req.GetHeld() {
		if err := identity.ValidName(h.GetName()); err != nil {
			return ackRecord{}, apierr.InvalidArg("held.name", "%v", err)
		}
		if len(h.GetNumbers()) > maxHeldVersions {
			return ackRecord{}, apierr.InvalidArg("held.numbers", "%d versions of %s, at most %d", len(h.GetNumbers()), h.GetName(), maxHeldVersions)
		}
		if slices.Contains(h.GetNumbers(), 0) {
			return ackRecord{}, apierr.InvalidArg("held.numbers", "version numbers start at 1")
		}
		if rec.Held == nil {
			rec.Held = map[string][]uint64{}
		}
		nums := append(rec.Held[h.GetName()], h.GetNumbers()...)
		slices.Sort(nums)
		rec.Held[h.GetName()] = slices.Compact(nums)
	}
	if r := req.GetRtt(); r != nil {
		if err := r.CheckValid(); err != nil {
			return ackRecord{}, apierr.InvalidArg("rtt", "%v", err)
		}
		if rec.RTT = r.AsDuration(); rec.RTT < 0 || rec.RTT > maxRTT {
			return ackRecord{}, apierr.InvalidArg("rtt", "must be between 0 and %s", maxRTT)
		}
	}
	if t := req.GetAgentTime(); t != nil {
		if err := t.CheckValid(); err != nil {
			return ackRecord{}, apierr.InvalidArg("agent_time", "%v", err)
		}
		rec.AgentTime = t.AsTime()
		rec.Skew, rec.SkewAt = rec.AgentTime.Add(rec.RTT/2).Sub(now), now
	}
	if e := req.GetError(); e != "" {
		if len(e) > maxApplyErrorLen {
			e = e[:maxApplyErrorLen]
		}
		rec.ApplyErr = strings.ToValidUTF8(e, "\ufffd")
	}
	return rec, nil
}

// exceeds reports whether skew puts the node's traffic at risk: beyond half the replay window, a
// message from or to the node spends that much of its ±window budget on the clocks alone.
func (s *Service) exceeds(skew time.Duration) bool {
	return skew.Abs() > s.cfg.ReplayWindow/2
}

// ListClockSkew implements SecretService.ListClockSkew.
func (s *Service) ListClockSkew(ctx context.Context, req *secretv1.ListClockSkewRequest) (*secretv1.ListClockSkewResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultPageSize, maxPageSize)
	if err != nil {
		return nil, err
	}
	after, err := paging.After(req.GetPageToken(), "")
	if err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	resp := &secretv1.ListClockSkewResponse{ReplayWindow: durationpb.New(s.cfg.ReplayWindow)}
	for _, kv := range s.acks.List(prefAcks) {
		id := strings.TrimPrefix(kv.Key, prefAcks)
		if after != "" && id <= after {
			continue
		}
		a, err := decode[ackRecord](kv)
		if err != nil || a.SkewAt.IsZero() {
			continue
		}
		if len(resp.Nodes) == size {
			resp.NextPageToken = paging.Token(resp.Nodes[size-1].GetNodeId())
			break
		}
		resp.Nodes = append(resp.Nodes, &secretv1.NodeClock{
			NodeId: id, Skew: durationpb.New(a.Skew), MeasuredAt: timestamppb.New(a.SkewAt), Exceeds: s.exceeds(a.Skew),
		})
	}
	return resp, nil
}
