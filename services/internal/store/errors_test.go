package store

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMapErr(t *testing.T) {
	other := errors.New("etcdserver: request is too large")
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"no leader", rpctypes.ErrNoLeader, ErrUnavailable},
		{"no leader over grpc", rpctypes.ErrGRPCNoLeader, ErrUnavailable},
		{"server timeout", rpctypes.ErrTimeout, ErrUnavailable},
		{"leader changed", rpctypes.ErrLeaderChanged, ErrUnavailable},
		{"grpc unavailable", status.Error(codes.Unavailable, "connection refused"), ErrUnavailable},
		{"deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), ErrUnavailable},
		{"no endpoints", clientv3.ErrNoAvailableEndpoints, ErrUnavailable},
		{"compacted", rpctypes.ErrCompacted, ErrCompacted},
		{"compacted over grpc", rpctypes.ErrGRPCCompacted, ErrCompacted},
		{"lease not found", rpctypes.ErrLeaseNotFound, ErrNotFound},
		{"caller cancelled", context.Canceled, context.Canceled},
		{"anything else", other, other},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mapErr(tc.err)
			if !errors.Is(got, tc.want) {
				t.Fatalf("mapErr(%v) = %v, want it to match %v", tc.err, got, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Fatalf("mapErr(%v) = %v lost the original error", tc.err, got)
			}
		})
	}
	if err := mapErr(context.Canceled); errors.Is(err, ErrUnavailable) {
		t.Fatalf("a caller's cancellation is not etcd being unavailable: %v", err)
	}
	if mapErr(nil) != nil {
		t.Fatal("mapErr(nil) must be nil")
	}
}
