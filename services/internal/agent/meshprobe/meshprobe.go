// Package meshprobe is the Coreapp agent's view of the Multiconnect mesh: it probes the control service
// of every peer the control plane lists (mTLS, verifying the peer's SPIFFE identity, one timed ping) and
// reports who it reaches, so that the control plane can build the who-sees-whom matrix.
package meshprobe

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	"github.com/warden-sec/warden/services/internal/agent/status"
)

// DefaultInterval is the time between probe rounds.
const DefaultInterval = 5 * time.Second

// ProbeFunc probes one peer's control address, expecting identity wantID.
type ProbeFunc func(ctx context.Context, addr, wantID string) (time.Duration, error)

// ReportFunc sends one round's results.
type ReportFunc func(ctx context.Context, peers []*meshv1.PeerReachability) error

// Config configures a Prober.
type Config struct {
	// NodeID is this node; it is not probed.
	NodeID         string
	ControlAddress string
	Interval       time.Duration
	Probe          ProbeFunc
	Report         ReportFunc
	Status         *status.Tracker
	Log            *slog.Logger
}

// Prober probes the current peer list every interval.
type Prober struct {
	cfg    Config
	mu     sync.Mutex
	peers  []*meshv1.Peer
	master string
	shards uint32
	wake   chan struct{}
}

// New returns a Prober.
func New(cfg Config) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	return &Prober{cfg: cfg, wake: make(chan struct{}, 1)}
}

// SetReport sets the report function; call it before Run.
func (p *Prober) SetReport(fn ReportFunc) { p.cfg.Report = fn }

// SetPeers replaces the peer list (a WatchPeers snapshot) and probes at once.
func (p *Prober) SetPeers(snap *meshv1.WatchPeersResponse) {
	p.mu.Lock()
	p.peers = slices.DeleteFunc(slices.Clone(snap.GetPeers()), func(x *meshv1.Peer) bool { return x.GetNodeId() == p.cfg.NodeID })
	p.master, p.shards = snap.GetMasterNodeId(), snap.GetShards()
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run probes until ctx is done.
func (p *Prober) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-p.wake:
		}
		p.round(ctx)
	}
}

// round probes every peer concurrently, publishes the result and reports it.
func (p *Prober) round(ctx context.Context) {
	p.mu.Lock()
	peers, master, shards := slices.Clone(p.peers), p.master, p.shards
	p.mu.Unlock()
	results := make([]*meshv1.PeerReachability, len(peers))
	view := make([]status.Peer, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rtt, err := p.cfg.Probe(ctx, peer.GetControlAddress(), peer.GetSpiffeId())
			r := &meshv1.PeerReachability{NodeId: peer.GetNodeId(), Reachable: err == nil, Rtt: durationpb.New(rtt)}
			v := status.Peer{NodeID: peer.GetNodeId(), Address: peer.GetControlAddress(), Reachable: err == nil, RTT: rtt, ProbedAt: time.Now()}
			if err != nil {
				r.Error, v.Error = err.Error(), err.Error()
			}
			results[i], view[i] = r, v
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	p.cfg.Status.Update(func(s *status.Status) {
		s.Mesh = &status.Mesh{ControlAddress: p.cfg.ControlAddress, Master: master, Shards: shards, Peers: view}
	})
	if len(peers) == 0 || p.cfg.Report == nil {
		return
	}
	if err := p.cfg.Report(ctx, results); err != nil {
		p.cfg.Log.Debug("peer health report failed", "err", err)
	}
}
