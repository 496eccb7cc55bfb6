package fanout

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type state struct {
	mu sync.Mutex
	v  map[string]int64
}

func (s *state) build(k string) (string, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k == "gone" {
		return "", 0, errors.New("gone")
	}
	return k, s.v[k], nil
}

func (s *state) set(k string, v int64) {
	s.mu.Lock()
	s.v[k] = v
	s.mu.Unlock()
}

func TestNewestOnlyAndNoResend(t *testing.T) {
	st := &state{v: map[string]int64{"a": 5, "b": 7}}
	h := New(st.build, Options{Quiet: time.Millisecond, MaxDelay: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = h.Run(ctx) }()

	a := h.Subscribe("a", 0)
	defer a.Close()
	if _, v, _, err := a.Next(ctx, 0); err != nil || v != 5 {
		t.Fatalf("first snapshot: version %d err %v, want 5", v, err)
	}
	b := h.Subscribe("b", 7) // already holds 7: nothing until a change
	defer b.Close()
	// Three changes while a does not read: it must see only the last.
	for _, v := range []int64{6, 8, 9} {
		st.set("a", v)
		h.Notify()
	}
	h.Recompute()
	if _, v, _, err := a.Next(ctx, 0); err != nil || v != 9 {
		t.Fatalf("after burst: version %d err %v, want 9", v, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if _, v, _, err := b.Next(short, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unchanged subscriber got version %d (err %v), want nothing", v, err)
	}
	if _, v, hb, err := b.Next(ctx, 5*time.Millisecond); err != nil || !hb || v != 7 {
		t.Fatalf("heartbeat: version %d heartbeat %v err %v", v, hb, err)
	}
}

func TestBuildErrorEndsSubscriber(t *testing.T) {
	st := &state{v: map[string]int64{}}
	h := New(st.build, Options{})
	s := h.Subscribe("gone", 0)
	defer s.Close()
	if _, _, _, err := s.Next(t.Context(), 0); err == nil || err.Error() != "gone" {
		t.Fatalf("err = %v, want gone", err)
	}
}

func TestSlowSubscriberDoesNotBlockOthers(t *testing.T) {
	st := &state{v: map[string]int64{"slow": 1, "fast": 1}}
	var builds atomic.Int64
	h := New(func(k string) (string, int64, error) { builds.Add(1); return st.build(k) }, Options{})
	slow := h.Subscribe("slow", 0)
	defer slow.Close()
	fast := h.Subscribe("fast", 0)
	defer fast.Close()
	for v := int64(2); v < 100; v++ {
		st.set("slow", v)
		st.set("fast", v)
		h.Recompute()
		if _, got, _, err := fast.Next(t.Context(), 0); err != nil || got != v {
			t.Fatalf("fast subscriber got %d (%v), want %d", got, err, v)
		}
	}
	if _, got, _, _ := slow.Next(t.Context(), 0); got != 99 {
		t.Fatalf("slow subscriber got %d, want the newest (99)", got)
	}
}

func TestRunEndClosesSubscribers(t *testing.T) {
	st := &state{v: map[string]int64{"a": 1}}
	h := New(st.build, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	s := h.Subscribe("a", 1)
	defer s.Close()
	cancel()
	<-done
	if _, _, _, err := s.Next(t.Context(), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after the hub stopped = %v, want ErrClosed", err)
	}
}

// TestSubscribeAfterRunEnds: a stream that subscribes while the replica stops (after Run returned)
// must be told at once; before, it waited with its stream until the server cut it at the end of the
// grace period. The context bounds the wait only so a regression fails instead of hanging.
func TestSubscribeAfterRunEnds(t *testing.T) {
	st := &state{v: map[string]int64{"a": 1}}
	h := New(st.build, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_ = h.Run(ctx)
	s := h.Subscribe("a", 0)
	defer s.Close()
	wait, stop := context.WithTimeout(t.Context(), 10*time.Second)
	defer stop()
	if _, _, _, err := s.Next(wait, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next of a subscriber that came after the hub stopped = %v, want ErrClosed", err)
	}
	if n := h.Subscribers(); n != 0 {
		t.Fatalf("a stopped hub registered the late subscriber: %d subscribers", n)
	}
}

// fakeLog is a ChangeLog whose changes the test appends.
type fakeLog struct {
	mu      sync.Mutex
	rev     int64
	changes []struct {
		rev int64
		key string
	}
	resync int64
	wait   []chan struct{}
}

func (l *fakeLog) ChangedUnder(...string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := make(chan struct{})
	l.wait = append(l.wait, ch)
	return ch
}

func (l *fakeLog) ChangesSince(after int64) ([]string, int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if after < l.resync {
		return nil, l.rev, false
	}
	var keys []string
	for _, c := range l.changes {
		if c.rev > after {
			keys = append(keys, c.key)
		}
	}
	return keys, l.rev, true
}

func (l *fakeLog) Revision() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev
}

// put records a change of key; resync marks a reload instead.
func (l *fakeLog) put(key string, resync bool) {
	l.mu.Lock()
	l.rev++
	if resync {
		l.resync = l.rev
	} else {
		l.changes = append(l.changes, struct {
			rev int64
			key string
		}{l.rev, key})
	}
	wait := l.wait
	l.wait = nil
	l.mu.Unlock()
	for _, ch := range wait {
		close(ch)
	}
}

// TestFollowChangesRebuildsOnlyWhatChanged: a change of one node's input rebuilds that node's
// snapshot only; a change of a shared input, or a reload, rebuilds every one; other keys none.
func TestFollowChangesRebuildsOnlyWhatChanged(t *testing.T) {
	var mu sync.Mutex
	builds := map[string]int{}
	h := New(func(k string) (string, int64, error) {
		mu.Lock()
		defer mu.Unlock()
		builds[k]++
		return k, int64(builds[k]), nil
	}, Options{Name: "test", Quiet: time.Millisecond, MaxDelay: 5 * time.Millisecond,
		GroupOf: func(k string) string { return strings.TrimPrefix(k, "webapp/") }})
	_, start := runHub(t, h)
	log := &fakeLog{}
	for _, k := range []string{"webapp/a", "webapp/b", "webapp/c"} {
		defer h.Subscribe(k, 0).Close()
	}
	counts := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(builds)
	}
	// Subscribed (one build each); the follower then starts with one full rebuild (a second each).
	start(func(ctx context.Context) {
		h.FollowChanges(ctx, log, nil, func(key string) (string, bool) {
			switch {
			case strings.HasPrefix(key, "nodes/"):
				return strings.TrimPrefix(key, "nodes/"), false
			case key == "ca":
				return "", true
			}
			return "", false
		})
	})
	base := map[string]int{"webapp/a": 2, "webapp/b": 2, "webapp/c": 2}
	for deadline := time.Now().Add(10 * time.Second); !maps.Equal(counts(), base); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("start: builds %v, want %v", counts(), base)
		}
	}
	wantEventually := func(what string, delta map[string]int) {
		t.Helper()
		want := maps.Clone(base)
		for k, d := range delta {
			want[k] += d
		}
		deadline := time.Now().Add(10 * time.Second)
		for !maps.Equal(counts(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: builds %v, want %v", what, counts(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	log.put("acks/b", false)
	log.put("nodes/b", false)
	wantEventually("one node changed", map[string]int{"webapp/b": 1})
	log.put("ca", false)
	wantEventually("shared input changed", map[string]int{"webapp/a": 1, "webapp/b": 2, "webapp/c": 1})
	log.put("", true)
	wantEventually("reload", map[string]int{"webapp/a": 2, "webapp/b": 3, "webapp/c": 2})
	// Nothing else may have been rebuilt meanwhile (the acks change among them).
	time.Sleep(50 * time.Millisecond)
	wantEventually("settled", map[string]int{"webapp/a": 2, "webapp/b": 3, "webapp/c": 2})
}

// TestUnpublishableSnapshotIsRetried: a snapshot that cannot be published yet (its build reports
// version 0) is built again after Options.Retry even when no change is ever notified, so that a lost
// notification does not leave a subscriber without it.
func TestUnpublishableSnapshotIsRetried(t *testing.T) {
	var ready atomic.Bool
	h := New(func(k string) (string, int64, error) {
		if !ready.Load() {
			return "", 0, nil
		}
		return k, 1, nil
	}, Options{Name: "test", Quiet: time.Millisecond, MaxDelay: 5 * time.Millisecond, Retry: 10 * time.Millisecond})
	ctx, _ := runHub(t, h)
	sub := h.Subscribe("a", 0)
	defer sub.Close()
	ready.Store(true) // no Notify: only the retry can deliver it
	nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
	defer ncancel()
	snap, v, _, err := sub.Next(nctx, 0)
	if err != nil || snap != "a" || v != 1 {
		t.Fatalf("Next = %q, %d, %v; want the snapshot once it became publishable", snap, v, err)
	}
}

// TestProgressRebuildsOnlyUnpublished: a wake-up of the follower without a relevant change (an etcd
// progress report) builds again the snapshots that could not be published yet, at once and only them.
func TestProgressRebuildsOnlyUnpublished(t *testing.T) {
	var ready atomic.Bool
	var mu sync.Mutex
	builds := map[string]int{}
	h := New(func(k string) (string, int64, error) {
		mu.Lock()
		builds[k]++
		mu.Unlock()
		if k == "a" && !ready.Load() {
			return "", 0, nil
		}
		return k, 1, nil
	}, Options{Name: "test", Quiet: time.Millisecond, MaxDelay: 5 * time.Millisecond, Retry: time.Hour})
	ctx, start := runHub(t, h)
	log := &fakeLog{}
	a, b := h.Subscribe("a", 0), h.Subscribe("b", 0)
	defer a.Close()
	defer b.Close()
	start(func(ctx context.Context) {
		h.FollowChanges(ctx, log, nil, func(string) (string, bool) { return "", false })
	})
	// The follower's first pass rebuilds everything once; wait for it to settle.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		n := builds["b"]
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b built %d times, want 2 (subscribe, the follower's first rebuild)", n)
		}
	}
	ready.Store(true)
	log.put("", false) // a progress report: no key changed
	nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
	defer ncancel()
	if snap, v, _, err := a.Next(nctx, 0); err != nil || snap != "a" || v != 1 {
		t.Fatalf("Next = %q, %d, %v; want a's snapshot after the progress report (the retry is an hour away)", snap, v, err)
	}
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if builds["b"] != 2 {
		t.Fatalf("b was built %d times, want 2: a progress report must not rebuild published snapshots", builds["b"])
	}
}

// TestWakeWithoutChangeRebuildsNothing: a wake-up whose notification an earlier recomputation already
// took (a race between NotifyKeys and Run) must not turn into a rebuild of every snapshot.
func TestWakeWithoutChangeRebuildsNothing(t *testing.T) {
	var builds atomic.Int64
	h := New(func(k string) (string, int64, error) { builds.Add(1); return k, 1, nil },
		Options{Name: "test", Quiet: time.Millisecond, MaxDelay: 5 * time.Millisecond})
	runHub(t, h)
	defer h.Subscribe("a", 0).Close()
	defer h.Subscribe("b", 0).Close()
	before := builds.Load()
	h.wake() // nothing pending
	time.Sleep(50 * time.Millisecond)
	if n := builds.Load() - before; n != 0 {
		t.Fatalf("%d snapshots rebuilt after a wake-up with nothing pending, want 0", n)
	}
}

// runHub runs h until the test ends. It returns the context it runs under and a function that starts
// more work under it (a follower); the end of the test cancels all of it and waits for it.
func runHub[T any](t *testing.T, h *Hub[T]) (context.Context, func(func(context.Context))) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	start := func(f func(context.Context)) { wg.Go(func() { f(ctx) }) }
	start(func(ctx context.Context) { _ = h.Run(ctx) })
	return ctx, start
}

// TestProgressDuringBuildIsNotLost: the progress report a build asked for can arrive while that build
// (or the rest of its recomputation) is still under way, before the snapshot is noted as unpublished;
// the snapshot must still be built again at once, not only after Options.Retry.
func TestProgressDuringBuildIsNotLost(t *testing.T) {
	var ready, armed atomic.Bool
	log := &fakeLog{}
	var h *Hub[string]
	h = New(func(k string) (string, int64, error) {
		if ready.Load() {
			return k, 1, nil
		}
		if armed.CompareAndSwap(true, false) {
			// The progress report arrives and the follower handles it before this build returns.
			before := h.wakes.Load()
			log.put("", false)
			for h.wakes.Load() == before {
				time.Sleep(time.Millisecond)
			}
			ready.Store(true)
		}
		return "", 0, nil
	}, Options{Name: "test", Quiet: time.Millisecond, MaxDelay: 5 * time.Millisecond, Retry: time.Hour})
	ctx, start := runHub(t, h)
	a := h.Subscribe("a", 0)
	defer a.Close()
	armed.Store(true)
	start(func(ctx context.Context) {
		h.FollowChanges(ctx, log, nil, func(string) (string, bool) { return "", false })
	})
	nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
	defer ncancel()
	if snap, v, _, err := a.Next(nctx, 0); err != nil || snap != "a" || v != 1 {
		t.Fatalf("Next = %q, %d, %v; want a's snapshot right after the progress report (the retry is an hour away)", snap, v, err)
	}
}
