package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/tlsprofile"
)

// NoZonesWarning is the status line shown while the policy defines no networks: every front endpoint
// refuses everyone, which is secure but probably not what the operator wants for long.
const NoZonesWarning = "the policy defines no zone networks: every front endpoint refuses all clients until the network settings list CIDRs"

func (a *Agent) policySpec() streamSpec[*policyv1.WatchPolicyResponse] {
	return streamSpec[*policyv1.WatchPolicyResponse]{
		name: status.StreamPolicy,
		open: func(ctx context.Context, conn *grpc.ClientConn, last int64, opts ...grpc.CallOption) (receiver[*policyv1.WatchPolicyResponse], error) {
			return recvOf(policyv1.NewPolicyServiceClient(conn).WatchPolicy(ctx, &policyv1.WatchPolicyRequest{NodeId: a.cfg.NodeID, LastVersion: last}, opts...))
		},
		apply: a.applyPolicy,
		ack:   a.ackPolicy,
	}
}

func (a *Agent) applyPolicy(_ context.Context, snap *policyv1.WatchPolicyResponse) error {
	r := snap.GetRendered()
	if r == nil {
		return errors.New("policy snapshot without a rendered policy")
	}
	if _, err := tlsprofile.Get(live.ProfileName(r.GetTls().GetProfile())); err != nil {
		return err
	}
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	envChanged, err := a.writeEnv(a.secrets, r)
	if err != nil {
		return err
	}
	a.policy = snap
	a.publishPolicy(r)
	a.setVersion(status.StreamPolicy, snap.GetVersion(), a.cfg.Now())
	a.saveCached(status.StreamPolicy, snap)
	a.log.Info("policy applied", "version", snap.GetVersion(), "policy_number", r.GetPolicyNumber(),
		"tls_profile", live.ProfileName(r.GetTls().GetProfile()), "env_changed", envChanged)
	if envChanged {
		a.cfg.Reload()
	}
	return nil
}

// publishPolicy makes the policy live for the fronts and reports it.
func (a *Agent) publishPolicy(r *policyv1.RenderedPolicy) {
	p := live.PolicyFrom(r)
	a.cfg.State.SetPolicy(p)
	var warnings []string
	for _, w := range r.GetWarnings() {
		warnings = append(warnings, fmt.Sprintf("%s: %s", w.GetFieldPath(), w.GetMessage()))
	}
	a.cfg.Status.Update(func(s *status.Status) {
		s.PolicyNumber = p.Number
		s.TLSProfile = string(p.Profile)
	})
	a.cfg.Status.SetWarning("policy", strings.Join(warnings, "; "))
	zones := ""
	if p.NoZones {
		zones = NoZonesWarning
		a.log.Warn(NoZonesWarning)
	}
	a.cfg.Status.SetWarning("zones", zones)
}

func (a *Agent) ackPolicy(ctx context.Context, snap *policyv1.WatchPolicyResponse, applyErr error) error {
	req := &policyv1.AckPolicyRequest{NodeId: a.cfg.NodeID, Version: snap.GetVersion(), PolicyNumber: snap.GetRendered().GetPolicyNumber()}
	if applyErr != nil {
		req.Error = applyErr.Error()
	}
	return a.unary(ctx, func(ctx context.Context, conn *grpc.ClientConn, _ time.Time) (*timestamppb.Timestamp, error) {
		_, err := policyv1.NewPolicyServiceClient(conn).AckPolicy(ctx, req, grpc.WaitForReady(true))
		return nil, err
	})
}

func (a *Agent) peersSpec() streamSpec[*meshv1.WatchPeersResponse] {
	return streamSpec[*meshv1.WatchPeersResponse]{
		name: status.StreamPeers,
		open: func(ctx context.Context, conn *grpc.ClientConn, last int64, opts ...grpc.CallOption) (receiver[*meshv1.WatchPeersResponse], error) {
			return recvOf(meshv1.NewMeshServiceClient(conn).WatchPeers(ctx, &meshv1.WatchPeersRequest{
				NodeId: a.cfg.NodeID, ControlAddress: a.cfg.ControlAddress, MasterEligible: a.cfg.MasterEligible, LastVersion: last,
			}, opts...))
		},
		apply: a.applyPeers,
	}
}

func (a *Agent) applyPeers(_ context.Context, snap *meshv1.WatchPeersResponse) error {
	if a.cfg.OnPeers != nil {
		a.cfg.OnPeers(snap)
	}
	a.setVersion(status.StreamPeers, snap.GetVersion(), a.cfg.Now())
	a.saveCached(status.StreamPeers, snap)
	a.log.Info("mesh peers", "version", snap.GetVersion(), "peers", len(snap.GetPeers()), "master", snap.GetMasterNodeId())
	return nil
}

// ReportPeerHealth sends the mesh prober's view of its peers.
func (a *Agent) ReportPeerHealth(ctx context.Context, peers []*meshv1.PeerReachability) error {
	return a.unary(ctx, func(ctx context.Context, conn *grpc.ClientConn, _ time.Time) (*timestamppb.Timestamp, error) {
		_, err := meshv1.NewMeshServiceClient(conn).ReportPeerHealth(ctx, &meshv1.ReportPeerHealthRequest{NodeId: a.cfg.NodeID, Peers: peers}, grpc.WaitForReady(true))
		return nil, err
	})
}
