// Package fanout delivers per-node snapshots to stream subscribers. One Hub per stream kind recomputes
// the snapshots once per (debounced) change from in-memory state and hands each subscriber only the
// newest one: a slow agent's mailbox holds one snapshot, so it never blocks the others and never
// queues stale state.
package fanout

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	pushLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "warden_push_latency_seconds",
		Help:    "Time from a change reaching this replica to the new snapshot being handed to a stream's sender.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
	}, []string{"stream"})
	subscribers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warden_stream_subscribers",
		Help: "Open snapshot subscriptions (connected agents) per stream.",
	}, []string{"stream"})
)

// ErrClosed ends every subscription when its hub stops (the replica is shutting down), so that the
// streams end at once and their agents reconnect to another replica instead of waiting out the
// server's graceful stop.
var ErrClosed = errors.New("the server is shutting down; reconnect")

// Collectors are the package's metrics, for the process's registry.
func Collectors() []prometheus.Collector { return []prometheus.Collector{pushLatency, subscribers} }

// BuildFunc computes the snapshot of one key (a node id) and its version. An error ends the
// subscriber's stream with that error (e.g. the node was decommissioned).
type BuildFunc[T any] func(key string) (T, int64, error)

// Hub fans snapshots of type T out to subscribers.
type Hub[T any] struct {
	build    BuildFunc[T]
	quiet    time.Duration
	maxDelay time.Duration
	latency  prometheus.Observer
	subGauge prometheus.Gauge
	// burstStart is when the first change of the pending burst was notified (unix nanoseconds; 0: none).
	burstStart atomic.Int64

	mu   sync.Mutex
	subs map[*Sub[T]]struct{}
	// closed: Run has returned, so nothing will ever be pushed again; a late subscriber is told at once
	// instead of waiting, with its stream, for the server to cut it.
	closed bool
	dirty  chan struct{}
	// What the pending burst changed: everything, or only the snapshots of these groups.
	pendMu   sync.Mutex
	pendAll  bool
	pendKeys map[string]struct{}
	groupOf  func(key string) string
	retry    time.Duration
	// unpublished are the groups whose snapshot could not be published yet (version 0): rebuilt when
	// a followed log reports progress, or after retry at the latest. wakes counts the followers'
	// wake-ups, so that a build that raced one (its progress report arrived while the build was
	// deciding it could not publish) is retried at once instead of after retry.
	unpubMu     sync.Mutex
	unpublished map[string]struct{}
	wakes       atomic.Int64
}

// Options tune coalescing: a burst of changes is recomputed once, after Quiet without further change or
// at most MaxDelay after the first one.
type Options struct {
	Name     string        // the stream, as a metric label (e.g. "policy")
	Quiet    time.Duration // default 10ms
	MaxDelay time.Duration // default 100ms
	// GroupOf maps a subscriber key to the group NotifyKeys names (e.g. "webapp/web-1" → "web-1");
	// default: the key itself.
	GroupOf func(key string) string
	// Retry is how soon a snapshot that could not be published yet (BuildFunc returned version 0, e.g.
	// a mirror it needs lags) is built again even if no change is notified: the notification that
	// should come (an etcd progress report) can be lost when etcd loses its leader. Default 1s.
	Retry time.Duration
}

// New returns a hub that builds snapshots with build.
func New[T any](build BuildFunc[T], opts Options) *Hub[T] {
	if opts.Quiet == 0 {
		opts.Quiet = 10 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = 100 * time.Millisecond
	}
	if opts.GroupOf == nil {
		opts.GroupOf = func(key string) string { return key }
	}
	if opts.Retry == 0 {
		opts.Retry = time.Second
	}
	return &Hub[T]{
		build: build, quiet: opts.Quiet, maxDelay: opts.MaxDelay,
		latency: pushLatency.WithLabelValues(opts.Name), subGauge: subscribers.WithLabelValues(opts.Name),
		subs: map[*Sub[T]]struct{}{}, dirty: make(chan struct{}, 1),
		pendKeys: map[string]struct{}{}, groupOf: opts.GroupOf, retry: opts.Retry,
		unpublished: map[string]struct{}{},
	}
}

// Sub is one subscriber's mailbox.
type Sub[T any] struct {
	Key  string
	hub  *Hub[T]
	wake chan struct{}

	mu        sync.Mutex
	snap      T
	version   int64     // of snap
	changedAt time.Time // when the change that produced snap reached the hub (zero for the first)
	sent      int64     // version last handed out by Next
	err       error
}

// Subscribe registers key. lastVersion is what the subscriber already holds: a snapshot with that
// version is not delivered again.
func (h *Hub[T]) Subscribe(key string, lastVersion int64) *Sub[T] {
	s := &Sub[T]{Key: key, hub: h, wake: make(chan struct{}, 1), sent: lastVersion}
	// Registered before the first build: a change that lands while the first snapshot is being built
	// is then recomputed for this subscriber too (offer keeps the newer of the two), instead of being
	// missed until the next change.
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		s.fail(ErrClosed)
		return s
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	h.subGauge.Inc()
	snap, v, err := h.buildNoting(key)
	s.offer(snap, v, err, time.Time{})
	if err == nil && v == 0 {
		h.retryLater()
	}
	return s
}

// Close unregisters the subscriber.
func (s *Sub[T]) Close() {
	s.hub.mu.Lock()
	_, ok := s.hub.subs[s]
	delete(s.hub.subs, s)
	s.hub.mu.Unlock()
	if ok {
		s.hub.subGauge.Dec()
	}
}

// fail ends the subscription: Next returns err from now on.
func (s *Sub[T]) fail(err error) {
	var zero T
	s.offer(zero, 0, err, time.Time{})
}

func (s *Sub[T]) offer(snap T, version int64, err error, changedAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.err = err
	} else if version > s.version {
		s.snap, s.version, s.changedAt = snap, version, changedAt
	} else {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Next blocks until a snapshot newer than the last one handed out exists and returns it. When
// heartbeat is non-zero and nothing new arrives for that long, it returns the current snapshot with
// isHeartbeat set, so idle streams carry traffic and dead ones are noticed.
func (s *Sub[T]) Next(ctx context.Context, heartbeat time.Duration) (snap T, version int64, isHeartbeat bool, err error) {
	var tick <-chan time.Time
	if heartbeat > 0 {
		t := time.NewTimer(heartbeat)
		defer t.Stop()
		tick = t.C
	}
	for {
		s.mu.Lock()
		if s.err != nil {
			err = s.err
			s.mu.Unlock()
			return snap, 0, false, err
		}
		if s.version > s.sent {
			s.sent = s.version
			snap, version = s.snap, s.version
			changedAt := s.changedAt
			s.mu.Unlock()
			if !changedAt.IsZero() {
				s.hub.latency.Observe(time.Since(changedAt).Seconds())
			}
			return snap, version, false, nil
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-tick:
			s.mu.Lock()
			snap, version = s.snap, s.version
			s.mu.Unlock()
			if version == 0 {
				continue
			}
			return snap, version, true, nil
		case <-ctx.Done():
			return snap, 0, false, ctx.Err()
		}
	}
}

// Notify marks every snapshot dirty; Run recomputes after the coalescing delay.
func (h *Hub[T]) Notify() {
	h.pendMu.Lock()
	h.pendAll = true
	h.pendMu.Unlock()
	h.wake()
}

// NotifyKeys marks only the snapshots of these groups dirty (a change of one node's inputs).
func (h *Hub[T]) NotifyKeys(groups ...string) {
	if len(groups) == 0 {
		return
	}
	h.pendMu.Lock()
	for _, g := range groups {
		h.pendKeys[g] = struct{}{}
	}
	h.pendMu.Unlock()
	h.wake()
}

func (h *Hub[T]) wake() {
	h.burstStart.CompareAndSwap(0, time.Now().UnixNano())
	select {
	case h.dirty <- struct{}{}:
	default:
	}
}

// ChangeLog is what FollowChanges reads: a mirror.Mirror.
type ChangeLog interface {
	ChangedUnder(prefixes ...string) <-chan struct{}
	ChangesSince(after int64) (keys []string, upTo int64, complete bool)
	Revision() int64
}

// FollowChanges wakes the hub for every change under prefixes of log until ctx is done. route names
// the group whose snapshot a changed key feeds, or all for a key every snapshot depends on; keys it
// returns neither for are ignored. A burst of registrations or issuances then rebuilds only the
// affected agents' snapshots instead of every one.
func (h *Hub[T]) FollowChanges(ctx context.Context, log ChangeLog, prefixes []string, route func(key string) (group string, all bool)) {
	// Whatever changed before this point is covered by one full rebuild.
	seen := log.Revision()
	h.Notify()
	for {
		ch := log.ChangedUnder(prefixes...)
		keys, upTo, complete := log.ChangesSince(seen)
		seen = upTo
		// A wake-up without a relevant change is an etcd progress report: a mirror that lagged may
		// have caught up, so snapshots that were waiting for it are built again (only those).
		h.wakes.Add(1)
		h.retryUnpublished()
		if !complete {
			h.Notify()
		} else {
			var groups []string
			all := false
			for _, k := range keys {
				g, a := route(k)
				all = all || a
				if g != "" {
					groups = append(groups, g)
				}
			}
			if all {
				h.Notify()
			} else {
				h.NotifyKeys(groups...)
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// FollowAll rebuilds every snapshot after each change of a key of log (inputs every snapshot shares,
// such as the current policy), until ctx is done. An etcd progress report is no change: it rebuilds
// only the snapshots that were waiting to be publishable.
func (h *Hub[T]) FollowAll(ctx context.Context, log ChangeLog) {
	h.FollowChanges(ctx, log, []string{""}, func(string) (string, bool) { return "", true })
}

// Run recomputes every subscriber's snapshot after each coalesced burst of Notify calls.
func (h *Hub[T]) Run(ctx context.Context) error {
	defer h.closeAll()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.dirty:
		}
		h.coalesce(ctx)
		// A wake-up can outlive its notification (already taken by the previous recomputation); then
		// there is nothing to do, and Recompute would rebuild every snapshot.
		if h.pending() {
			h.Recompute()
		}
	}
}

func (h *Hub[T]) pending() bool {
	h.pendMu.Lock()
	defer h.pendMu.Unlock()
	return h.pendAll || len(h.pendKeys) > 0
}

func (h *Hub[T]) closeAll() {
	h.mu.Lock()
	h.closed = true
	subs := make([]*Sub[T], 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.fail(ErrClosed)
	}
}

func (h *Hub[T]) coalesce(ctx context.Context) {
	deadline := time.NewTimer(h.maxDelay)
	defer deadline.Stop()
	quiet := time.NewTimer(h.quiet)
	defer quiet.Stop()
	for {
		select {
		case <-h.dirty:
			quiet.Reset(h.quiet)
		case <-quiet.C:
			return
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// Recompute builds the dirty snapshots now (only the named groups' after NotifyKeys alone, else every
// one), once per distinct key, spread over the CPUs.
func (h *Hub[T]) Recompute() {
	var changedAt time.Time
	if ns := h.burstStart.Swap(0); ns != 0 {
		changedAt = time.Unix(0, ns)
	}
	h.pendMu.Lock()
	all, groups := h.pendAll, h.pendKeys
	h.pendAll, h.pendKeys = false, map[string]struct{}{}
	h.pendMu.Unlock()
	if len(groups) == 0 {
		all = true // called directly, with nothing pending
	}
	h.mu.Lock()
	byKey := make(map[string][]*Sub[T])
	for s := range h.subs {
		if !all {
			if _, ok := groups[h.groupOf(s.Key)]; !ok {
				continue
			}
		}
		byKey[s.Key] = append(byKey[s.Key], s)
	}
	h.mu.Unlock()
	keys := make(chan string, len(byKey))
	for k := range byKey {
		keys <- k
	}
	close(keys)
	var wg sync.WaitGroup
	var anyUnpublished atomic.Bool
	for range min(runtime.GOMAXPROCS(0), len(byKey)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				snap, v, err := h.buildNoting(k)
				for _, s := range byKey[k] {
					s.offer(snap, v, err, changedAt)
				}
				if err == nil && v == 0 {
					anyUnpublished.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	if anyUnpublished.Load() {
		h.retryLater()
	}
}

// buildNoting builds key's snapshot and, if it cannot be published yet, notes its group as
// unpublished. A follower's wake-up during the build may have come too early to see the note, so
// then the group is notified again at once.
func (h *Hub[T]) buildNoting(key string) (T, int64, error) {
	wakes := h.wakes.Load()
	snap, v, err := h.build(key)
	if err == nil && v == 0 {
		h.unpubMu.Lock()
		h.unpublished[h.groupOf(key)] = struct{}{}
		h.unpubMu.Unlock()
		if h.wakes.Load() != wakes {
			h.retryUnpublished()
		}
	}
	return snap, v, err
}

// retryLater notifies the unpublished groups again after the retry delay (see Options.Retry), in case
// no progress report comes to do it before (one can be lost when etcd loses its leader).
func (h *Hub[T]) retryLater() {
	time.AfterFunc(h.retry, h.retryUnpublished)
}

// retryUnpublished notifies every group noted as unpublished (they are noted again if still so).
func (h *Hub[T]) retryUnpublished() {
	h.unpubMu.Lock()
	groups := make([]string, 0, len(h.unpublished))
	for g := range h.unpublished {
		groups = append(groups, g)
	}
	clear(h.unpublished)
	h.unpubMu.Unlock()
	h.NotifyKeys(groups...)
}

// Subscribers counts the open subscriptions.
func (h *Hub[T]) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}
