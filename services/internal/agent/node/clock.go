package node

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/warden-sec/warden/services/internal/agent/status"
)

// maxSkew is half the Webapp↔Coreapp replay window of 10 s: beyond it, sealed messages between this
// node and a node with the opposite error are refused as stale or future-dated.
const maxSkew = 5 * time.Second

// clockTracker estimates the agent's clock skew (agent minus control plane). An acknowledgement gives
// the better estimate: its round trip is measured, so the server's clock is compared with the middle
// of the exchange. A snapshot alone cannot separate skew from one-way latency, so it is used only until
// the first acknowledgement.
type clockTracker struct {
	mu      sync.Mutex
	skew    time.Duration
	rtt     time.Duration
	haveAck bool
}

// skewFromAck is the estimate from an exchange sent at sent, answered after rtt, stamped server.
func skewFromAck(sent time.Time, rtt time.Duration, server time.Time) time.Duration {
	return sent.Add(rtt / 2).Sub(server)
}

func (c *clockTracker) observeSnapshot(a *Agent, server *timestamppb.Timestamp, received time.Time) {
	if server == nil {
		return
	}
	c.mu.Lock()
	if c.haveAck {
		c.mu.Unlock()
		return
	}
	c.skew = received.Sub(server.AsTime())
	skew, rtt := c.skew, c.rtt
	c.mu.Unlock()
	a.reportSkew(skew, rtt)
}

func (c *clockTracker) observeAck(a *Agent, sent time.Time, rtt time.Duration, server *timestamppb.Timestamp) {
	if server == nil {
		return
	}
	c.mu.Lock()
	c.skew, c.rtt, c.haveAck = skewFromAck(sent, rtt, server.AsTime()), rtt, true
	skew := c.skew
	c.mu.Unlock()
	a.reportSkew(skew, rtt)
}

func (c *clockTracker) lastRTT() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtt
}

func (a *Agent) reportSkew(skew, rtt time.Duration) {
	a.cfg.Status.Update(func(s *status.Status) {
		s.Skew, s.RTT = skew, rtt
	})
	msg := ""
	if skew > maxSkew || skew < -maxSkew {
		msg = fmt.Sprintf("clock skew %s exceeds half the 10 s replay window: sealed Webapp↔Coreapp messages may be refused; fix NTP on this node", skew.Round(time.Millisecond))
	}
	a.cfg.Status.SetWarning("clock", msg)
}
