package wardend

import (
	"context"
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricsListenerServesPprofOnlyWhenAsked(t *testing.T) {
	for _, tc := range []struct {
		pprof    bool
		wantHeap int
	}{{false, http.StatusNotFound}, {true, http.StatusOK}} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- serveMetrics(ctx, lis, prometheus.NewRegistry(), nil, tc.pprof) }()
		get := func(path string) int {
			resp, err := http.Get("http://" + lis.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			return resp.StatusCode
		}
		if got := get("/metrics"); got != http.StatusOK {
			t.Errorf("pprof=%v: /metrics = %d", tc.pprof, got)
		}
		if got := get("/debug/pprof/heap"); got != tc.wantHeap {
			t.Errorf("pprof=%v: /debug/pprof/heap = %d, want %d", tc.pprof, got, tc.wantHeap)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
