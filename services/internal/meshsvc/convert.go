package meshsvc

import (
	"slices"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
)

func peerToProto(m member) *meshv1.Peer {
	return &meshv1.Peer{
		NodeId:         m.node,
		ControlAddress: m.rec.ControlAddress,
		SpiffeId:       m.rec.SpiffeID,
		Zone:           m.rec.Zone,
		JoinedAt:       timestamppb.New(m.rec.JoinedAt),
		MasterEligible: m.rec.MasterEligible,
	}
}

func linkToProto(from, to string, l linkRecord) *meshv1.Link {
	return &meshv1.Link{FromNodeId: from, ToNodeId: to, Reachable: l.Reachable, ReportedAt: timestamppb.New(l.At)}
}

func configToProto(c configRecord, version int64) *meshv1.MeshConfig {
	return &meshv1.MeshConfig{
		Shards:         c.Shards,
		MasterElection: c.MasterElection,
		MemberTtl:      durationpb.New(c.MemberTTL),
		Version:        version,
	}
}

func configFromProto(c *meshv1.MeshConfig) (configRecord, error) {
	if !slices.Contains(validShards, c.GetShards()) {
		return configRecord{}, apierr.InvalidArg("config.shards", "must be 1, 2, 4, 8, 16 or 32, not %d", c.GetShards())
	}
	out := configRecord{Shards: c.GetShards(), MasterElection: c.GetMasterElection(), MemberTTL: DefaultMemberTTL}
	if c.GetMemberTtl() != nil {
		if err := c.GetMemberTtl().CheckValid(); err != nil {
			return configRecord{}, apierr.InvalidArg("config.member_ttl", "%v", err)
		}
		ttl := c.GetMemberTtl().AsDuration()
		if ttl < MinMemberTTL || ttl > MaxMemberTTL {
			return configRecord{}, apierr.InvalidArg("config.member_ttl", "must be between %s and %s", MinMemberTTL, MaxMemberTTL)
		}
		out.MemberTTL = ttl
	}
	return out, nil
}
