package wardend_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// TestHealthAnswersUnderFlood floods wardend on loopback with anonymous and authenticated calls (a
// bounded number, from one process) and checks that every health check made meanwhile answers SERVING.
// It also shows the per-identity rate limit engaging: the flooding admin gets ResourceExhausted.
func TestHealthAnswersUnderFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test skipped in -short mode")
	}
	env := wardentest.Start(t, wardentest.Options{})
	anon := certv1.NewCertServiceClient(env.AnonConn())
	admin := certv1.NewCertServiceClient(env.AdminConn())
	health := healthpb.NewHealthClient(env.AnonConn())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	const workers, callsPerWorker = 32, 300
	var exhausted, total atomic.Int64
	var flood sync.WaitGroup
	for w := range workers {
		flood.Add(1)
		go func() {
			defer flood.Done()
			for range callsPerWorker {
				var err error
				if w%2 == 0 {
					_, err = anon.ListNodes(ctx, &certv1.ListNodesRequest{})
				} else {
					_, err = admin.GetTrustBundle(ctx, &certv1.GetTrustBundleRequest{})
				}
				total.Add(1)
				if status.Code(err) == codes.ResourceExhausted {
					exhausted.Add(1)
				}
			}
		}()
	}
	floodDone := make(chan struct{})
	go func() { flood.Wait(); close(floodDone) }()

	var checks int
	var worst time.Duration
	for done := false; !done; {
		select {
		case <-floodDone:
			done = true
		case <-time.After(20 * time.Millisecond):
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		resp, err := health.Check(cctx, &healthpb.HealthCheckRequest{Service: certv1.CertService_ServiceDesc.ServiceName})
		ccancel()
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check %d during the flood: %v %v", checks, resp, err)
		}
		worst = max(worst, time.Since(start))
		checks++
	}
	if checks < 3 {
		t.Fatalf("only %d health checks ran during the flood", checks)
	}
	if exhausted.Load() == 0 {
		t.Fatalf("no call of %d was rate-limited; the per-identity limit did not engage", total.Load())
	}
	t.Logf("%d calls, %d rate-limited, %d health checks all SERVING, slowest %v", total.Load(), exhausted.Load(), checks, worst)
}
