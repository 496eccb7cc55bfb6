package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// EventType says whether an event wrote or deleted its key.
type EventType int

const (
	EventPut EventType = iota + 1
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	default:
		return "unknown"
	}
}

// Event is one change to one key. For a delete, KV holds the key and the
// revision of the delete; PrevValue holds the value before the change when
// etcd still has it.
type Event struct {
	Type      EventType
	KV        KV
	PrevValue []byte
}

// WatchBatch is what a watch delivers: the changes of one or more whole
// revisions (a transaction's events are never split across batches).
type WatchBatch struct {
	// Revision is the revision the consumer is up to date with after applying
	// the batch; Revision+1 is where to resume.
	Revision int64
	Events   []Event
	// Reset means history was lost (compaction, or the watch began at
	// revision 0): Events is the full current state of the prefix as puts,
	// and the consumer must replace what it had with it.
	Reset bool
	// Progress marks a batch without events: etcd's confirmation that the
	// watch has seen everything up to Revision (see RequestProgress).
	Progress bool
}

const (
	watchRetryMin = 50 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// Watch delivers changes to keys under prefix from revision fromRev on, in
// order. fromRev 0 starts with a Reset batch holding the current state. When
// the wanted history has been compacted, Watch relists and sends a Reset.
// Lost connections and leader changes are retried with backoff. The channel
// is closed when ctx is done or the Client is closed; a consumer that stops
// reading holds the watch only until then.
func (s *Store) Watch(ctx context.Context, prefix string, fromRev int64) <-chan WatchBatch {
	out := make(chan WatchBatch)
	go func() {
		defer close(out)
		w := watchLoop{s: s, prefix: prefix, out: out, next: fromRev, reset: fromRev <= 0}
		w.run(ctx)
	}()
	return out
}

type watchLoop struct {
	s      *Store
	prefix string
	out    chan<- WatchBatch
	// next is the first revision not yet delivered.
	next  int64
	reset bool
}

func (w *watchLoop) run(ctx context.Context) {
	b := backoff{min: watchRetryMin, max: watchRetryMax}
	for ctx.Err() == nil && w.s.c.raw.Ctx().Err() == nil {
		progressed, err := w.once(ctx)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			b.reset()
		}
		if err != nil {
			w.s.c.log.Warn("watch interrupted, retrying", "prefix", w.s.prefix+w.prefix, "next_revision", w.next, "error", err)
		}
		if !b.wait(ctx) {
			return
		}
	}
}

// once relists if needed and then follows one etcd watch stream until it
// ends. progressed reports whether anything was delivered, so that a healthy
// stream that merely ended restarts without a growing delay.
func (w *watchLoop) once(ctx context.Context) (progressed bool, err error) {
	if w.reset {
		kvs, rev, _, err := w.s.List(ctx, w.prefix, "", 0)
		if err != nil {
			return false, err
		}
		events := make([]Event, len(kvs))
		for i, kv := range kvs {
			events[i] = Event{Type: EventPut, KV: kv}
		}
		if !w.send(ctx, WatchBatch{Revision: rev, Events: events, Reset: true}) {
			return true, nil
		}
		w.next, w.reset, progressed = rev+1, false, true
	}

	// A stream of its own per prefix (see watchContext), ended when the member
	// loses its leader instead of leaving us connected to a partitioned node
	// that sees no changes.
	wctx, cancel := context.WithCancel(w.s.watchContext(ctx, w.prefix))
	defer cancel()
	ch := w.s.watcher.Watch(wctx, w.prefix,
		clientv3.WithPrefix(), clientv3.WithRev(w.next), clientv3.WithPrevKV())
	for resp := range ch {
		if resp.CompactRevision != 0 {
			w.reset = true
			return progressed, nil
		}
		if err := resp.Err(); err != nil {
			return progressed, mapErr(err)
		}
		if len(resp.Events) == 0 {
			// etcd sends a progress notification only once the watcher has
			// caught up, so its header revision is safe to resume from.
			if resp.IsProgressNotify() && resp.Header.Revision >= w.next {
				if !w.send(ctx, WatchBatch{Revision: resp.Header.Revision, Progress: true}) {
					return true, nil
				}
				w.next, progressed = resp.Header.Revision+1, true
			}
			continue
		}
		batch := WatchBatch{Events: make([]Event, len(resp.Events))}
		for i, ev := range resp.Events {
			e := Event{Type: EventPut, KV: fromPB(ev.Kv)}
			if ev.Type == clientv3.EventTypeDelete {
				e.Type = EventDelete
			}
			if ev.PrevKv != nil {
				e.PrevValue = ev.PrevKv.Value
			}
			batch.Events[i] = e
		}
		// The header revision can be ahead of the last event while etcd is
		// still catching the watcher up, so resuming from it could skip
		// changes; the last event's revision is safe.
		batch.Revision = batch.Events[len(batch.Events)-1].KV.ModRevision
		if !w.send(ctx, batch) {
			return true, nil
		}
		w.next, progressed = batch.Revision+1, true
	}
	if ctx.Err() == nil {
		return progressed, errors.New("watch stream closed")
	}
	return progressed, nil
}

func (w *watchLoop) send(ctx context.Context, b WatchBatch) bool {
	select {
	case w.out <- b:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is a capped exponential delay with jitter, so that many watchers
// losing the same etcd do not all come back in lockstep.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) reset() { b.cur = 0 }

func (b *backoff) wait(ctx context.Context) bool {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// RequestProgress asks etcd to tell the watch of prefix how far it has seen (a
// Progress batch), even when nothing under its prefix changed: a consumer that
// combines several watches can then know that each is current up to a revision.
//
// etcd answers only while every watcher on the gRPC watch stream is caught up,
// so each prefix gets a stream of its own (watchContext): a busy prefix (agents'
// acknowledgements) cannot starve a quiet one's progress.
func (s *Store) watchContext(ctx context.Context, prefix string) context.Context {
	// clientv3 groups watchers into streams by the context's outgoing metadata; the require-leader
	// marker ends a stream whose member lost its leader.
	return clientv3.WithRequireLeader(metadata.AppendToOutgoingContext(ctx, "warden-watch", s.prefix+prefix))
}

// RequestProgress asks etcd to tell the watch of prefix how far it has seen.
func (s *Store) RequestProgress(ctx context.Context, prefix string) error {
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	if err := s.watcher.RequestProgress(s.watchContext(ctx, prefix)); err != nil {
		return fmt.Errorf("request watch progress: %w", mapErr(err))
	}
	return nil
}
