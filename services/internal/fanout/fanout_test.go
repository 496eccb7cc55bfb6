package fanout

import (
	"context"
	"errors"
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
