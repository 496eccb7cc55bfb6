package meshprobe

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	"github.com/warden-sec/warden/services/internal/agent/status"
)

func TestProberReportsEveryPeerButItself(t *testing.T) {
	tracker := status.NewTracker(t.TempDir(), status.Status{})
	var mu sync.Mutex
	var reports [][]*meshv1.PeerReachability
	p := New(Config{
		NodeID: "core-1", ControlAddress: "127.0.0.1:1", Interval: time.Hour, Status: tracker, Log: slog.New(slog.DiscardHandler),
		Probe: func(_ context.Context, addr, wantID string) (time.Duration, error) {
			if addr == "10.0.0.3:6252" {
				return 0, errors.New("connection refused")
			}
			if wantID != "spiffe://td/node/coreapp/core-2" {
				return 0, errors.New("unexpected identity " + wantID)
			}
			return 3 * time.Millisecond, nil
		},
	})
	p.SetReport(func(_ context.Context, peers []*meshv1.PeerReachability) error {
		mu.Lock()
		defer mu.Unlock()
		reports = append(reports, peers)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	p.SetPeers(&meshv1.WatchPeersResponse{MasterNodeId: "core-2", Shards: 2, Peers: []*meshv1.Peer{
		{NodeId: "core-1", ControlAddress: "10.0.0.1:6252", SpiffeId: "spiffe://td/node/coreapp/core-1"},
		{NodeId: "core-2", ControlAddress: "10.0.0.2:6252", SpiffeId: "spiffe://td/node/coreapp/core-2"},
		{NodeId: "core-3", ControlAddress: "10.0.0.3:6252", SpiffeId: "spiffe://td/node/coreapp/core-3"},
	}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(reports)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no report")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := map[string]*meshv1.PeerReachability{}
	for _, r := range reports[0] {
		got[r.GetNodeId()] = r
	}
	if len(got) != 2 || got["core-1"] != nil {
		t.Fatalf("report %v: want core-2 and core-3 only", reports[0])
	}
	if !got["core-2"].GetReachable() || got["core-2"].GetRtt().AsDuration() != 3*time.Millisecond {
		t.Errorf("core-2: %v", got["core-2"])
	}
	if got["core-3"].GetReachable() || got["core-3"].GetError() != "connection refused" {
		t.Errorf("core-3: %v", got["core-3"])
	}
	m := tracker.Snapshot().Mesh
	if m == nil || m.Master != "core-2" || m.Shards != 2 || len(m.Peers) != 2 {
		t.Errorf("status mesh %+v", m)
	}
}
