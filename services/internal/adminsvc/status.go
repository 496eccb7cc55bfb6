package adminsvc

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/secretsvc"
)

// periodicJobs are the etcd elections of every periodic job. Each service elects its own runner (a
// replica may host only some services), so the leaders can differ.
var periodicJobs = []string{certsvc.CRLElection, secretsvc.RotationElection, RetentionElection}

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
		resp.LeaderReplicaId = s.periodicLeaders(ctx, resp)
	}
	if s.cfg.DevSeal {
		resp.Warnings = append(resp.Warnings, "dev-mode seal key: secrets are sealed with a key kept in the data dir beside them; use --seal-key-file in production")
	}
	return resp, nil
}

// periodicLeaders names the replica running the periodic jobs: one id when one replica runs them all,
// else "job=replica" pairs. Jobs without a leader (their service is hosted nowhere, or etcd lost the
// session) are reported as warnings.
func (s *Service) periodicLeaders(ctx context.Context, resp *adminv1.GetStatusResponse) string {
	var pairs []string
	distinct := map[string]bool{}
	for _, job := range periodicJobs {
		leader, err := s.cfg.Client.Leader(ctx, job)
		switch {
		case err != nil:
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("leader of %s unknown: %v", job, err))
		case leader == "":
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("no replica runs %s (no leader elected)", job))
		default:
			pairs = append(pairs, job+"="+leader)
			distinct[leader] = true
		}
	}
	if len(distinct) == 1 {
		for id := range distinct {
			return id
		}
	}
	return strings.Join(pairs, ", ")
}
