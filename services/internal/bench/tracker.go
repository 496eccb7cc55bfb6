package bench

import (
	"context"
	"sync"
	"time"
)

// tracker collects, per change (a policy number, a staged secret number, a DB CA generation), when
// each agent received it and when its acknowledgement was recorded by the server.
type tracker struct {
	mu   sync.Mutex
	recv map[uint64][]time.Time
	ack  map[uint64][]time.Time
}

func newTracker() *tracker {
	return &tracker{recv: map[uint64][]time.Time{}, ack: map[uint64][]time.Time{}}
}

func (t *tracker) markRecv(k uint64, at time.Time) {
	t.mu.Lock()
	t.recv[k] = append(t.recv[k], at)
	t.mu.Unlock()
}

func (t *tracker) markAck(k uint64, at time.Time) {
	t.mu.Lock()
	t.ack[k] = append(t.ack[k], at)
	t.mu.Unlock()
}

// take returns and forgets what was recorded for k.
func (t *tracker) take(k uint64) (recv, ack []time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	recv, ack = t.recv[k], t.ack[k]
	delete(t.recv, k)
	delete(t.ack, k)
	return recv, ack
}

// wait blocks until n receipts (and n acks when acks is set) of k are in, or ctx ends; it reports
// whether everything arrived.
func (t *tracker) wait(ctx context.Context, k uint64, n int, acks bool) bool {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		t.mu.Lock()
		ok := len(t.recv[k]) >= n && (!acks || len(t.ack[k]) >= n)
		t.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}
