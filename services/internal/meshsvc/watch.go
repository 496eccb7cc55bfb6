package meshsvc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/store"
)

var errLeaseLost = fmt.Errorf("%w: the mesh membership lease could not be renewed; reconnect", store.ErrUnavailable)

// WatchPeers holds the caller's membership for as long as the stream is open and streams the peer
// list. The membership is a key on a lease this replica renews; when the stream ends the lease is
// revoked, and when this replica dies the lease runs out after member_ttl.
func (s *Service) WatchPeers(req *meshv1.WatchPeersRequest, stream meshv1.MeshService_WatchPeersServer) error {
	ctx := stream.Context()
	c := authn.FromContext(ctx)
	node := req.GetNodeId()
	if c.Role != authn.RoleCoreapp || c.Name != node {
		return fmt.Errorf("%w: only a Coreapp joins the mesh, as itself", apierr.ErrPermission)
	}
	if err := validAddress(req.GetControlAddress()); err != nil {
		return apierr.InvalidArg("control_address", "%v", err)
	}
	if req.GetLastVersion() < 0 {
		return apierr.InvalidArg("last_version", "must not be negative")
	}
	if err := s.mirror.WaitReady(ctx); err != nil {
		return nil
	}
	cfg := s.readState().config
	lease, err := s.cfg.Store.GrantLease(ctx, cfg.MemberTTL)
	if err != nil {
		return fmt.Errorf("join mesh: %w", err)
	}
	defer s.leave(ctx, node, lease)

	rec := memberRecord{
		ControlAddress: req.GetControlAddress(),
		MasterEligible: req.GetMasterEligible(),
		JoinedAt:       s.cfg.Now(),
		SpiffeID:       c.ID.String(),
	}
	if n, ok := s.cfg.Certs.Node(node); ok {
		rec.Zone = n.Zone
	}
	rev, err := s.cfg.Store.Txn(ctx, nil, []store.Op{
		store.PutWithLeaseOp(keyMember(node), encodeJSON(rec), lease),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "mesh/member/" + node, Outcome: audit.Success, Reason: "joined the mesh",
			Details: map[string]string{"control_address": rec.ControlAddress, "master_eligible": strconv.FormatBool(rec.MasterEligible)}}),
	})
	if err != nil {
		return fmt.Errorf("join mesh: %w", err)
	}
	lost, err := s.cfg.Store.KeepAlive(ctx, lease)
	if err != nil {
		return fmt.Errorf("join mesh: %w", err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	wg.Go(func() {
		select {
		case <-lost:
			cancel(errLeaseLost)
		case <-ctx.Done():
		}
	})
	if rec.MasterEligible {
		wg.Go(func() { s.campaign(ctx, node, lease) })
	}
	if err := s.mirror.WaitRevision(ctx, rev); err != nil {
		return streamEnd(ctx, err)
	}
	sub := s.hub.Subscribe(node, req.GetLastVersion())
	defer sub.Close()
	for {
		snap, _, heartbeat, err := sub.Next(ctx, s.cfg.Heartbeat)
		if err != nil {
			return streamEnd(ctx, err)
		}
		if err := stream.Send(&meshv1.WatchPeersResponse{
			Version:      snap.Version,
			Peers:        snap.Peers,
			MasterNodeId: snap.MasterNodeId,
			Shards:       snap.Shards,
			ServerTime:   timestamppb.New(s.cfg.Now()),
			Heartbeat:    heartbeat,
		}); err != nil {
			return err
		}
	}
}

// streamEnd turns the end of a stream into its status: nothing when the client went away, Unavailable
// when the membership was lost.
func streamEnd(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errLeaseLost) {
		return cause
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// leave revokes the member's lease, which removes its member key, its links and, if it was master,
// the master key, in one step.
func (s *Service) leave(ctx context.Context, node string, lease int64) {
	ctx = context.WithoutCancel(ctx)
	if err := s.cfg.Store.RevokeLease(ctx, lease); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.cfg.Log.Warn("revoke mesh membership; it ends when the lease expires", "node", node, "err", err)
	}
	s.cfg.Audit.Record(ctx, audit.Event{Target: "mesh/member/" + node, Outcome: audit.Success, Reason: "left the mesh"})
}

// campaign claims the master key whenever election is on and nobody holds it. Every eligible member's
// stream campaigns; the MustNotExist compare lets exactly one win. The key is on the winner's lease,
// so it goes when the winner leaves, and the others try again at the next change.
func (s *Service) campaign(ctx context.Context, node string, lease int64) {
	for {
		changed := s.mirror.Changed()
		st := s.readState()
		if _, held := s.mirror.Get(keyMaster); st.config.MasterElection && !held && st.isMember(node) {
			_, err := s.cfg.Store.Txn(ctx, []store.Cond{store.MustNotExist(keyMaster)}, []store.Op{
				store.PutWithLeaseOp(keyMaster, []byte(node), lease),
				s.cfg.Audit.Op(ctx, audit.Event{Target: "mesh/master", Outcome: audit.Success, Reason: "elected master",
					Details: map[string]string{"node": node}}),
			})
			if err != nil && !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
				s.cfg.Log.Warn("master campaign", "node", node, "err", err)
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

func validAddress(addr string) error {
	if addr == "" {
		return errors.New("required (host:port of the control service)")
	}
	if len(addr) > 255 {
		return errors.New("longer than 255 characters")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("host is empty")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not 1-65535", port)
	}
	return nil
}

// buildPeers is the snapshot every member receives; the key (node id) does not change it.
func (s *Service) buildPeers(string) (*meshv1.WatchPeersResponse, int64, error) {
	st := s.readState()
	resp := &meshv1.WatchPeersResponse{Version: st.version, MasterNodeId: st.master, Shards: st.config.Shards}
	for _, m := range st.members {
		resp.Peers = append(resp.Peers, peerToProto(m))
	}
	return resp, st.version, nil
}
