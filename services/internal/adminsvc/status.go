package adminsvc

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
)

// leaderElections are asked in order for the replica running periodic jobs: "periodic" names the
// shared job runner, and audit retention runs on every deployment (AdminService is always hosted),
// so its leader answers when no service campaigns in "periodic".
var leaderElections = []string{"periodic", retentionElection}

// GetStatus is the one-screen summary of this replica and the cluster.
func (s *Service) GetStatus(ctx context.Context, _ *adminv1.GetStatusRequest) (*adminv1.GetStatusResponse, error) {
	resp := &adminv1.GetStatusResponse{
		ReplicaId:   s.cfg.ReplicaID,
		TrustDomain: s.cfg.TrustDomain,
		ServerTime:  timestamppb.New(s.cfg.Now()),
	}
	pingErr := s.cfg.Client.Ping(ctx)
	resp.EtcdHealthy = pingErr == nil
	// Services follow etcd's health, as the gRPC health service reports them: a replica cut off from
	// etcd serves nothing current.
	health := "SERVING"
	if !resp.EtcdHealthy {
		health = "NOT_SERVING"
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("etcd unreachable from this replica: %v", pingErr))
	}
	for _, name := range s.cfg.Hosted() {
		resp.Services = append(resp.Services, &adminv1.ServiceStatus{Name: name, Health: health})
	}
	resp.EtcdEndpoints = slices.Clone(s.cfg.EtcdEndpoints)
	if len(resp.EtcdEndpoints) == 0 {
		resp.EtcdEndpoints = []string{"embedded"}
	}
	if resp.EtcdHealthy {
		for _, name := range leaderElections {
			leader, err := s.cfg.Client.Leader(ctx, name)
			if err != nil {
				resp.Warnings = append(resp.Warnings, fmt.Sprintf("leader of periodic jobs unknown: %v", err))
				break
			}
			if leader != "" {
				resp.LeaderReplicaId = leader
				break
			}
		}
		if resp.LeaderReplicaId == "" {
			resp.Warnings = append(resp.Warnings, "no replica is running periodic jobs (no leader elected)")
		}
	}
	if s.cfg.DevSeal {
		resp.Warnings = append(resp.Warnings, "dev-mode seal key: secrets are sealed with a key kept in the data dir beside them; use --seal-key-file in production")
	}
	return resp, nil
}
