package scaleout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
)

// delivery is one snapshot a watcher received.
type delivery struct {
	version int64
	number  uint64
	addr    string
}

// watcher is a minimal agent-side policy stream with several endpoints: it stays on one replica while
// the stream lives, and when the stream breaks it moves on to the next address and resubscribes with
// the last version it received, as warden-agent does. It records every snapshot, so the test can show
// that a failover neither repeats a version nor goes backwards.
type watcher struct {
	nodeID string
	addrs  []string
	conns  []*grpc.ClientConn

	mu         sync.Mutex
	got        []delivery
	violations []string
	subscribes []string // "addr@last_version" per subscription
	current    string
}

func newWatcher(t *testing.T, nodeID string, addrs []string, pool *x509.CertPool, cert *tls.Certificate) *watcher {
	t.Helper()
	w := &watcher{nodeID: nodeID, addrs: addrs}
	for _, a := range addrs {
		w.conns = append(w.conns, dial(t, a, pool, cert))
	}
	return w
}

// run holds the stream until ctx is done.
func (w *watcher) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i = (i + 1) % len(w.addrs) {
		w.once(ctx, i)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *watcher) once(ctx context.Context, i int) {
	last := w.lastVersion()
	stream, err := policyv1.NewPolicyServiceClient(w.conns[i]).WatchPolicy(ctx, &policyv1.WatchPolicyRequest{NodeId: w.nodeID, LastVersion: last})
	if err != nil {
		return
	}
	w.mu.Lock()
	w.subscribes = append(w.subscribes, fmt.Sprintf("%s@%d", w.addrs[i], last))
	w.current = w.addrs[i]
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.current = ""
		w.mu.Unlock()
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			return
		}
		if msg.GetHeartbeat() {
			continue
		}
		w.record(w.addrs[i], msg)
	}
}

func (w *watcher) record(addr string, msg *policyv1.WatchPolicyResponse) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := delivery{version: msg.GetVersion(), number: msg.GetRendered().GetPolicyNumber(), addr: addr}
	if n := len(w.got); n > 0 {
		prev := w.got[n-1]
		if d.version <= prev.version {
			w.violations = append(w.violations, fmt.Sprintf("version %d from %s after %d from %s", d.version, addr, prev.version, prev.addr))
		}
		if d.number < prev.number {
			w.violations = append(w.violations, fmt.Sprintf("policy number %d from %s after %d", d.number, addr, prev.number))
		}
	}
	if msg.GetRendered() == nil || len(msg.GetRendered().GetEnv()) == 0 {
		w.violations = append(w.violations, fmt.Sprintf("empty rendering in version %d from %s", d.version, addr))
	}
	w.got = append(w.got, d)
}

func (w *watcher) lastVersion() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.got) == 0 {
		return 0
	}
	return w.got[len(w.got)-1].version
}

// last is the newest delivery (zero before the first).
func (w *watcher) last() delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.got) == 0 {
		return delivery{}
	}
	return w.got[len(w.got)-1]
}

// on is the address the stream is currently held on ("" between streams).
func (w *watcher) on() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

func (w *watcher) deliveries() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.got)
}

func (w *watcher) report() (got []delivery, subscribes, violations []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]delivery(nil), w.got...), append([]string(nil), w.subscribes...), append([]string(nil), w.violations...)
}
