package wardend

import (
	"context"
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startMetrics serves the metrics listener until the test ends and returns a GET that gives the status.
func startMetrics(t *testing.T, hs *health.Server, pprof bool) func(path string) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serveMetrics(ctx, lis, prometheus.NewRegistry(), hs, pprof) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return func(path string) int {
		resp, err := http.Get("http://" + lis.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
}

func TestMetricsListenerServesPprofOnlyWhenAsked(t *testing.T) {
	for _, tc := range []struct {
		pprof    bool
		wantHeap int
	}{{false, http.StatusNotFound}, {true, http.StatusOK}} {
		get := startMetrics(t, health.NewServer(), tc.pprof)
		if got := get("/metrics"); got != http.StatusOK {
			t.Errorf("pprof=%v: /metrics = %d", tc.pprof, got)
		}
		if got := get("/debug/pprof/heap"); got != tc.wantHeap {
			t.Errorf("pprof=%v: /debug/pprof/heap = %d, want %d", tc.pprof, got, tc.wantHeap)
		}
	}
}

// TestHealthzFollowsGRPCHealth: /healthz must say what the gRPC health service says (which flips only
// after two failed etcd probes), not probe etcd on its own and disagree under load.
func TestHealthzFollowsGRPCHealth(t *testing.T) {
	hs := health.NewServer()
	get := startMetrics(t, hs, false)
	for _, step := range []struct {
		name string
		do   func()
		want int
	}{
		{"serving", func() { hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING) }, http.StatusOK},
		{"etcd down", func() { hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING) }, http.StatusServiceUnavailable},
		{"etcd back", func() { hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING) }, http.StatusOK},
		{"one service down, overall still serving", func() {
			hs.SetServingStatus("warden.cert.v1.CertService", healthpb.HealthCheckResponse_NOT_SERVING)
		}, http.StatusOK},
		{"shutting down", hs.Shutdown, http.StatusServiceUnavailable},
	} {
		step.do()
		if got := get("/healthz"); got != step.want {
			t.Errorf("%s: /healthz = %d, want %d", step.name, got, step.want)
		}
	}
}
