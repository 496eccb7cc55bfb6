// Package mirror keeps an in-memory copy of one etcd prefix, fed by a single watch. Services read their
// state from it and build every agent's snapshot from memory, so a replica keeps a few watches in total,
// not one per agent.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warden-sec/warden/services/internal/store"
)

// Mirror is a read-only copy of the keys under a prefix of a Store.
type Mirror struct {
	st     *store.Store
	prefix string
	log    *slog.Logger

	mu sync.RWMutex
	// entries holds live keys and tombstones of deleted ones; keys is its sorted key set, for prefix
	// range scans. A tombstone keeps the delete's revision so that a snapshot version moves forward when
	// one of its inputs disappears.
	entries    map[string]entry
	keys       []string
	tombstones int
	// floor is the revision of the last full reload or tombstone purge: no version is older.
	floor int64
	rev   int64
	ready chan struct{}
	once  sync.Once
	// stopped is closed when Run returns: nothing will be applied any more.
	stopped chan struct{}
	// asking is set while a progress request is outstanding, so that many builders waiting for this
	// mirror cause one request.
	asking  atomic.Bool
	want    atomic.Int64                    // highest revision a caller of Fresh waits for
	runCtx  atomic.Pointer[context.Context] // Run's context: progress requests end with it
	changed chan struct{}                   // closed and replaced after every applied batch
	waiters []waiter                        // ChangedUnder channels, closed by the next batch that touches their prefixes
	// changes logs the keys of recent events in revision order, for followers that rebuild only what
	// changed (ChangesSince). Revisions up to logFloor are not in it (before a reload or truncation);
	// resyncRev is the revision of the last reload, after which followers rebuild everything. A
	// progress batch changes no key, so it leaves the log complete: treating it as a reload made every
	// follower rebuild every snapshot whenever any mirror asked etcd for progress (etcd answers such a
	// request on every watch of the stream), which was most of the snapshot building at 10,000 agents.
	changes   []change
	logFloor  int64
	resyncRev int64
	// logging is set by the first ChangesSince: mirrors nobody follows that way (acknowledgements)
	// keep no log.
	logging bool
}

type change struct {
	rev int64
	key string
}

// maxChanges bounds the change log; a follower that falls further behind rebuilds everything.
const maxChanges = 1 << 16

type waiter struct {
	prefixes []string
	ch       chan struct{}
}

func (w waiter) touchedBy(b store.WatchBatch) bool {
	// A progress batch changes no key but may make a snapshot that waited for this mirror buildable.
	if b.Reset || b.Progress {
		return true
	}
	for _, ev := range b.Events {
		for _, p := range w.prefixes {
			if strings.HasPrefix(ev.KV.Key, p) {
				return true
			}
		}
	}
	return false
}

type entry struct {
	kv      store.KV
	deleted bool
}

// maxTombstones bounds memory held for deleted keys; past it they are purged and floor rises.
const maxTombstones = 10000

// New returns a mirror of prefix (relative to st's namespace). Call Run to fill it.
func New(st *store.Store, prefix string, log *slog.Logger) *Mirror {
	return &Mirror{
		st: st, prefix: prefix, log: log,
		entries: map[string]entry{},
		ready:   make(chan struct{}), changed: make(chan struct{}), stopped: make(chan struct{}),
	}
}

// Run follows the prefix until ctx is done.
func (m *Mirror) Run(ctx context.Context) error {
	defer close(m.stopped)
	m.runCtx.Store(&ctx)
	for b := range m.st.Watch(ctx, m.prefix, 0) {
		m.apply(b)
	}
	return nil
}

func (m *Mirror) apply(b store.WatchBatch) {
	m.mu.Lock()
	if b.Reset {
		m.entries = make(map[string]entry, len(b.Events))
		m.keys = m.keys[:0]
		m.tombstones = 0
		m.floor = b.Revision
		m.changes = m.changes[:0]
		m.logFloor = b.Revision
	}
	if b.Reset {
		m.resyncRev = max(m.resyncRev, b.Revision)
	}
	for _, ev := range b.Events {
		k := ev.KV.Key
		if m.logging && !b.Reset {
			m.changes = append(m.changes, change{rev: ev.KV.ModRevision, key: k})
		}
		old, existed := m.entries[k]
		if !existed {
			i := sort.SearchStrings(m.keys, k)
			m.keys = append(m.keys, "")
			copy(m.keys[i+1:], m.keys[i:])
			m.keys[i] = k
		}
		if existed && old.deleted {
			m.tombstones--
		}
		if ev.Type == store.EventDelete {
			m.entries[k] = entry{kv: store.KV{Key: k, ModRevision: ev.KV.ModRevision}, deleted: true}
			m.tombstones++
			continue
		}
		m.entries[k] = entry{kv: ev.KV}
	}
	if b.Revision > m.rev {
		m.rev = b.Revision
	}
	if m.tombstones > maxTombstones {
		m.purgeTombstones()
	}
	if len(m.changes) > maxChanges {
		drop := len(m.changes) - maxChanges/2
		m.logFloor = m.changes[drop-1].rev
		m.changes = append(m.changes[:0], m.changes[drop:]...)
	}
	ch := m.changed
	m.changed = make(chan struct{})
	kept := m.waiters[:0]
	var fire []chan struct{}
	for _, w := range m.waiters {
		if w.touchedBy(b) {
			fire = append(fire, w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	m.waiters = kept
	m.mu.Unlock()
	close(ch)
	for _, c := range fire {
		close(c)
	}
	m.once.Do(func() { close(m.ready) })
}

func (m *Mirror) purgeTombstones() {
	live := m.keys[:0]
	for _, k := range m.keys {
		if m.entries[k].deleted {
			delete(m.entries, k)
			continue
		}
		live = append(live, k)
	}
	m.keys = live
	m.tombstones = 0
	m.floor = m.rev
}

// WaitReady blocks until the first state arrived.
func (m *Mirror) WaitReady(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitRevision blocks until the mirror has applied revision rev, so a handler that just wrote can read
// its own write from memory. Once the mirror stops (the replica is shutting down) it fails at once
// instead of holding the handler, and so the server's graceful stop, until its deadline.
func (m *Mirror) WaitRevision(ctx context.Context, rev int64) error {
	for {
		m.mu.RLock()
		cur, ch := m.rev, m.changed
		m.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-m.stopped:
			return fmt.Errorf("mirror of %q stopped before revision %d: %w", m.prefix, rev, store.ErrUnavailable)
		case <-ctx.Done():
			return errors.Join(ctx.Err(), store.ErrUnavailable)
		}
	}
}

// Changed returns a channel closed at the next applied batch.
func (m *Mirror) Changed() <-chan struct{} {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.changed
}

// ChangedUnder returns a channel closed at the next applied batch that changes a key under one of
// prefixes (or reloads everything). Snapshot hubs follow only the keys their snapshots are built from,
// so that, say, a flood of acknowledgements does not make every subscriber's snapshot be rebuilt.
func (m *Mirror) ChangedUnder(prefixes ...string) <-chan struct{} {
	ch := make(chan struct{})
	m.mu.Lock()
	m.waiters = append(m.waiters, waiter{prefixes: prefixes, ch: ch})
	m.mu.Unlock()
	return ch
}

// ChangesSince returns the keys changed after revision after, up to the mirror's current revision
// upTo. complete is false when the mirror cannot tell (it reloaded, or the change log no longer
// reaches back that far): the follower then treats everything as changed.
func (m *Mirror) ChangesSince(after int64) (keys []string, upTo int64, complete bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.logging {
		m.logging = true
		m.logFloor = m.rev // nothing before this call was logged
	}
	if after < m.logFloor || after < m.resyncRev {
		return nil, m.rev, false
	}
	i := sort.Search(len(m.changes), func(i int) bool { return m.changes[i].rev > after })
	for _, c := range m.changes[i:] {
		keys = append(keys, c.key)
	}
	return keys, m.rev, true
}

// Revision is the etcd revision the mirror is current with.
func (m *Mirror) Revision() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.rev
}

// Get returns one key.
func (m *Mirror) Get(key string) (store.KV, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, ok := m.entries[key]
	if !ok || e.deleted {
		return store.KV{}, false
	}
	return e.kv, true
}

// scan calls fn for every entry under prefix in key order; the read lock is held.
func (m *Mirror) scan(prefix string, fn func(entry)) {
	for i := sort.SearchStrings(m.keys, prefix); i < len(m.keys) && strings.HasPrefix(m.keys[i], prefix); i++ {
		fn(m.entries[m.keys[i]])
	}
}

// List returns the live keys under prefix, sorted.
func (m *Mirror) List(prefix string) []store.KV {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []store.KV
	m.scan(prefix, func(e entry) {
		if !e.deleted {
			out = append(out, e.kv)
		}
	})
	return out
}

// Version is the newest revision that changed anything under prefix (a put or a delete), so that two
// snapshots built from the same inputs carry the same version on every replica, and a node whose inputs
// did not change is not sent anything new.
func (m *Mirror) Version(prefix string) int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v := m.floor
	m.scan(prefix, func(e entry) {
		if e.kv.ModRevision > v {
			v = e.kv.ModRevision
		}
	})
	return v
}

// Fresh reports whether every mirror has applied revision rev. Snapshots built from several mirrors
// must not be published before: a snapshot labelled with rev but missing an older change of a lagging
// mirror would keep that label once the change arrives, and never be sent. Lagging mirrors are asked
// for a progress notification (their watch may simply have nothing to report); its arrival fires
// their Changed and ChangedUnder channels, so the caller's hub rebuilds.
func Fresh(rev int64, ms ...*Mirror) bool {
	fresh := true
	for _, m := range ms {
		if m.Revision() >= rev {
			continue
		}
		fresh = false
		m.requestProgress(rev)
	}
	return fresh
}

// requestProgress asks etcd for progress until the mirror has reached rev. etcd answers a progress
// request only while the watch is caught up, and may drop one made just before, so one request is
// not enough: it asks again, backing off to once a second, until the mirror gets there.
func (m *Mirror) requestProgress(rev int64) {
	for {
		w := m.want.Load()
		if w >= rev || m.want.CompareAndSwap(w, rev) {
			break
		}
	}
	run := m.runCtx.Load()
	if run == nil || !m.asking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer m.asking.Store(false)
		wait := 20 * time.Millisecond
		// Asks until the mirror gets there: a snapshot waiting on it is not published before.
		for m.Revision() < m.want.Load() {
			ctx, cancel := context.WithTimeout(*run, 5*time.Second)
			err := m.st.RequestProgress(ctx, m.prefix)
			cancel()
			if err != nil && (*run).Err() == nil {
				m.log.Warn("watch progress request failed", "err", err)
			}
			t := time.NewTimer(wait)
			select {
			case <-m.Changed():
			case <-t.C:
				wait = min(2*wait, time.Second)
			case <-(*run).Done():
				t.Stop()
				return
			}
			t.Stop()
		}
	}()
}
