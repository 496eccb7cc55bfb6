package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is a fixed receive time; tests move the clock explicitly.
var t0 = time.Unix(1_700_000_000, 0)

type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }

func secret(version uint64) []byte {
	return []byte(fmt.Sprintf("WA_SECRET version %02d, 32 bytes", version))
}

func mustKeySet(t testing.TB, keys ...Key) *KeySet {
	t.Helper()
	ks, err := NewKeySet(keys...)
	if err != nil {
		t.Fatalf("NewKeySet: %v", err)
	}
	return ks
}

func mustSet(t testing.TB, ks *KeySet, keys ...Key) {
	t.Helper()
	if err := ks.Set(keys); err != nil {
		t.Fatalf("KeySet.Set: %v", err)
	}
}

func mustOpener(t testing.TB, ks *KeySet, opts ...Option) *Opener {
	t.Helper()
	o, err := NewOpener(ks, opts...)
	if err != nil {
		t.Fatalf("NewOpener: %v", err)
	}
	return o
}

func mustSealAt(t testing.TB, ks *KeySet, payload []byte, at time.Time) []byte {
	t.Helper()
	msg, err := Seal(ks, payload, at)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return msg
}

func cacheLen(o *Opener) int {
	o.cache.mu.Lock()
	defer o.cache.mu.Unlock()
	return o.cache.size
}

func TestRoundTrip(t *testing.T) {
	ks := mustKeySet(t, Key{Version: 7, Secret: secret(7), State: Active})
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"1 KiB", bytes.Repeat([]byte{0x5a}, 1024)},
		{"largest allowed", make([]byte, MaxMessageSize-Overhead)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(t0)
			o := mustOpener(t, ks, WithClock(clock.Now))
			msg := mustSealAt(t, ks, tc.payload, t0)
			if len(msg) != len(tc.payload)+Overhead {
				t.Fatalf("message is %d bytes, want payload+Overhead = %d", len(msg), len(tc.payload)+Overhead)
			}
			got, hdr, err := o.Open(msg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tc.payload) {
				t.Fatal("payload changed in transit")
			}
			if hdr.KeyVersion != 7 || !hdr.Timestamp.Equal(t0) {
				t.Fatalf("header = version %d at %v, want 7 at %v", hdr.KeyVersion, hdr.Timestamp, t0)
			}
		})
	}
}

func TestSecretNotUsedDirectly(t *testing.T) {
	s := secret(1)
	ks := mustKeySet(t, Key{Version: 1, Secret: s, State: Active})
	msg := mustSealAt(t, ks, []byte("payload"), t0)
	if bytes.Contains(msg, s[:8]) {
		t.Fatal("message contains secret bytes")
	}
	s[0] ^= 0xff // the KeySet must not alias the caller's slice
	o := mustOpener(t, ks, WithClock(newFakeClock(t0).Now))
	if _, _, err := o.Open(msg); err != nil {
		t.Fatalf("Open after caller modified its secret slice: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ks := mustKeySet(t,
		Key{Version: 1, Secret: secret(1), State: Retiring},
		Key{Version: 2, Secret: secret(2), State: Active},
	)
	payload := []byte("join request from node-a")
	other := mustKeySet(t, Key{Version: 9, Secret: secret(9), State: Active})
	impostor := mustKeySet(t, Key{Version: 2, Secret: []byte("a different secret, same version"), State: Active})

	for _, tc := range []struct {
		name    string
		msg     func(t *testing.T) []byte
		prepare func(o *Opener, msg []byte)
		want    error
	}{
		{
			name: "replay of the exact bytes",
			msg:  func(t *testing.T) []byte { return mustSealAt(t, ks, payload, t0) },
			prepare: func(o *Opener, msg []byte) {
				if _, _, err := o.Open(msg); err != nil {
					t.Fatalf("first Open: %v", err)
				}
			},
			want: ErrReplayed,
		},
		{
			name: "timestamp 6 s old",
			msg:  func(t *testing.T) []byte { return mustSealAt(t, ks, payload, t0.Add(-6*time.Second)) },
			want: ErrExpired,
		},
		{
			name: "timestamp 6 s in the future",
			msg:  func(t *testing.T) []byte { return mustSealAt(t, ks, payload, t0.Add(6*time.Second)) },
			want: ErrFuture,
		},
		{
			name: "timestamp far in the past",
			msg:  func(t *testing.T) []byte { return mustSealAt(t, ks, payload, time.Unix(0, -1<<63)) },
			want: ErrExpired,
		},
		{
			name: "timestamp far in the future",
			msg:  func(t *testing.T) []byte { return mustSealAt(t, ks, payload, time.Unix(0, 1<<63-1)) },
			want: ErrFuture,
		},
		{
			name: "bit flip in the nonce",
			msg: func(t *testing.T) []byte {
				msg := mustSealAt(t, ks, payload, t0)
				msg[20] ^= 0x04
				return msg
			},
			want: ErrTampered,
		},
		{
			name: "bit flip in the timestamp",
			msg: func(t *testing.T) []byte {
				msg := mustSealAt(t, ks, payload, t0)
				msg[16] ^= 0x01 // 1 ns later: still inside the window, so only the tag catches it
				return msg
			},
			want: ErrTampered,
		},
		{
			name: "bit flip in the ciphertext",
			msg: func(t *testing.T) []byte {
				msg := mustSealAt(t, ks, payload, t0)
				msg[HeaderSize+3] ^= 0x80
				return msg
			},
			want: ErrTampered,
		},
		{
			name: "bit flip in the tag",
			msg: func(t *testing.T) []byte {
				msg := mustSealAt(t, ks, payload, t0)
				msg[len(msg)-1] ^= 0x01
				return msg
			},
			want: ErrTampered,
		},
		{
			name: "same version, different secret",
			msg:  func(t *testing.T) []byte { return mustSealAt(t, impostor, payload, t0) },
			want: ErrTampered,
		},
		{
			name: "unknown version",
			msg:  func(t *testing.T) []byte { return mustSealAt(t, other, payload, t0) },
			want: ErrUnknownKey,
		},
		{
			name: "unsupported format version",
			msg: func(t *testing.T) []byte {
				msg := mustSealAt(t, ks, payload, t0)
				msg[0] = 2
				return msg
			},
			want: ErrMalformed,
		},
		{
			name: "truncated below the minimum",
			msg:  func(t *testing.T) []byte { return mustSealAt(t, ks, payload, t0)[:Overhead-1] },
			want: ErrMalformed,
		},
		{
			name: "truncated ciphertext",
			msg: func(t *testing.T) []byte {
				msg := mustSealAt(t, ks, payload, t0)
				return msg[:len(msg)-1]
			},
			want: ErrTampered,
		},
		{
			name: "trailing byte",
			msg:  func(t *testing.T) []byte { return append(mustSealAt(t, ks, payload, t0), 0) },
			want: ErrTampered,
		},
		{
			name: "empty",
			msg:  func(*testing.T) []byte { return nil },
			want: ErrMalformed,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := mustOpener(t, ks, WithClock(newFakeClock(t0).Now))
			msg := tc.msg(t)
			if tc.prepare != nil {
				tc.prepare(o, msg)
			}
			got, _, err := o.Open(msg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: err = %v, want %v", err, tc.want)
			}
			if got != nil {
				t.Fatal("Open returned a payload alongside an error")
			}
		})
	}
}

func TestEveryHeaderBitIsAuthenticated(t *testing.T) {
	ks := mustKeySet(t, Key{Version: 3, Secret: secret(3), State: Active})
	msg := mustSealAt(t, ks, []byte("payload"), t0)
	for i := range HeaderSize * 8 {
		bad := bytes.Clone(msg)
		bad[i/8] ^= 1 << (i % 8)
		o := mustOpener(t, ks, WithClock(newFakeClock(t0).Now))
		if _, _, err := o.Open(bad); err == nil {
			t.Fatalf("header bit %d flipped and the message still opened", i)
		}
	}
}

func TestRetiredVersion(t *testing.T) {
	ks := mustKeySet(t,
		Key{Version: 1, Secret: secret(1), State: Active},
		Key{Version: 2, Secret: secret(2), State: Staged},
	)
	o := mustOpener(t, ks, WithClock(newFakeClock(t0).Now))
	old := mustSealAt(t, ks, []byte("sealed under 1"), t0)
	mustSet(t, ks, Key{Version: 2, Secret: secret(2), State: Active})
	if _, _, err := o.Open(old); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Open under a retired version: err = %v, want ErrUnknownKey", err)
	}
}

func TestOpenAcceptsStagedActiveRetiring(t *testing.T) {
	for _, state := range []KeyState{Staged, Active, Retiring} {
		t.Run(state.String(), func(t *testing.T) {
			sender := mustKeySet(t, Key{Version: 5, Secret: secret(5), State: Active})
			neighbour := Key{Version: 4, Secret: secret(4), State: Active}
			if state == Active {
				neighbour.State = Retiring
			}
			receiver := mustKeySet(t, neighbour, Key{Version: 5, Secret: secret(5), State: state})
			o := mustOpener(t, receiver, WithClock(newFakeClock(t0).Now))
			if _, _, err := o.Open(mustSealAt(t, sender, []byte("x"), t0)); err != nil {
				t.Fatalf("Open under a %v version: %v", state, err)
			}
		})
	}
}

func TestWindow(t *testing.T) {
	ks := mustKeySet(t, Key{Version: 1, Secret: secret(1), State: Active})
	for _, tc := range []struct {
		name   string
		opts   []Option
		offset time.Duration
		want   error
	}{
		{"default: exactly 5 s old", nil, -5 * time.Second, nil},
		{"default: exactly 5 s ahead", nil, 5 * time.Second, nil},
		{"default: 5 s and 1 ns old", nil, -5*time.Second - 1, ErrExpired},
		{"default: 5 s and 1 ns ahead", nil, 5*time.Second + 1, ErrFuture},
		{"30 s window: 20 s old", []Option{WithWindow(30 * time.Second)}, -20 * time.Second, nil},
		{"30 s window: 20 s ahead", []Option{WithWindow(30 * time.Second)}, 20 * time.Second, nil},
		{"30 s window: 31 s old", []Option{WithWindow(30 * time.Second)}, -31 * time.Second, ErrExpired},
		{"1 s window: 2 s old", []Option{WithWindow(time.Second)}, -2 * time.Second, ErrExpired},
		{"1 s window: 2 s ahead", []Option{WithWindow(time.Second)}, 2 * time.Second, ErrFuture},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]Option{WithClock(newFakeClock(t0).Now)}, tc.opts...)
			o := mustOpener(t, ks, opts...)
			_, _, err := o.Open(mustSealAt(t, ks, []byte("x"), t0.Add(tc.offset)))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSealErrors(t *testing.T) {
	t.Run("no active version", func(t *testing.T) {
		ks := mustKeySet(t, Key{Version: 1, Secret: secret(1), State: Staged})
		if _, err := Seal(ks, []byte("x"), t0); !errors.Is(err, ErrNoActiveKey) {
			t.Fatalf("err = %v, want ErrNoActiveKey", err)
		}
		if _, err := Seal(&KeySet{}, []byte("x"), t0); !errors.Is(err, ErrNoActiveKey) {
			t.Fatalf("zero KeySet: err = %v, want ErrNoActiveKey", err)
		}
	})
	t.Run("payload too large", func(t *testing.T) {
		ks := mustKeySet(t, Key{Version: 1, Secret: secret(1), State: Active})
		if _, err := Seal(ks, make([]byte, MaxMessageSize-Overhead+1), t0); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
	})
}

func TestMaxMessage(t *testing.T) {
	ks := mustKeySet(t, Key{Version: 1, Secret: secret(1), State: Active})
	o := mustOpener(t, ks, WithClock(newFakeClock(t0).Now), WithMaxMessage(Overhead+100))
	if _, _, err := o.Open(mustSealAt(t, ks, make([]byte, 100), t0)); err != nil {
		t.Fatalf("message at the limit: %v", err)
	}
	if _, _, err := o.Open(mustSealAt(t, ks, make([]byte, 101), t0)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("message over the limit: err = %v, want ErrTooLarge", err)
	}
}

func TestNewOpenerRejectsBadOptions(t *testing.T) {
	ks := mustKeySet(t)
	for name, opt := range map[string]Option{
		"zero window":         WithWindow(0),
		"negative window":     WithWindow(-time.Second),
		"nil clock":           WithClock(nil),
		"max below overhead":  WithMaxMessage(Overhead - 1),
		"max above ceiling":   WithMaxMessage(MaxMessageSize + 1),
		"zero cache size":     WithCacheSize(0),
		"negative cache size": WithCacheSize(-1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewOpener(ks, opt); err == nil {
				t.Fatal("NewOpener accepted an invalid option")
			}
		})
	}
	if _, err := NewOpener(nil); err == nil {
		t.Fatal("NewOpener accepted a nil key set")
	}
}

func TestKeySetSet(t *testing.T) {
	good := []Key{{Version: 1, Secret: secret(1), State: Active}}
	for _, tc := range []struct {
		name string
		keys []Key
	}{
		{"version zero", []Key{{Version: 0, Secret: secret(0), State: Active}}},
		{"duplicate version", []Key{{Version: 2, Secret: secret(2), State: Active}, {Version: 2, Secret: secret(2), State: Staged}}},
		{"two active", []Key{{Version: 2, Secret: secret(2), State: Active}, {Version: 3, Secret: secret(3), State: Active}}},
		{"short secret", []Key{{Version: 2, Secret: []byte("short"), State: Active}}},
		{"zero state", []Key{{Version: 2, Secret: secret(2)}}},
		{"unknown state", []Key{{Version: 2, Secret: secret(2), State: KeyState(42)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ks := mustKeySet(t, good...)
			if err := ks.Set(tc.keys); err == nil {
				t.Fatal("Set accepted an invalid key set")
			}
			if v, ok := ks.Active(); !ok || v != 1 {
				t.Fatalf("after a failed Set, Active = %d, %v; want the previous set (1, true)", v, ok)
			}
		})
	}
	ks := mustKeySet(t, good...)
	mustSet(t, ks)
	if _, ok := ks.Active(); ok {
		t.Fatal("empty set still reports an active version")
	}
	if _, ok := ks.State(1); ok {
		t.Fatal("empty set still holds version 1")
	}
}

func TestConcurrentReplayAcceptedOnce(t *testing.T) {
	ks := mustKeySet(t, Key{Version: 1, Secret: secret(1), State: Active})
	o := mustOpener(t, ks, WithClock(newFakeClock(t0).Now))
	msg := mustSealAt(t, ks, []byte("once"), t0)
	var ok, replayed atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			_, _, err := o.Open(msg)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrReplayed):
				replayed.Add(1)
			default:
				t.Errorf("Open: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || replayed.Load() != 31 {
		t.Fatalf("accepted %d, replayed %d; want 1 and 31", ok.Load(), replayed.Load())
	}
}

func TestForgedMessagesDoNotFillCache(t *testing.T) {
	ks := mustKeySet(t, Key{Version: 1, Secret: secret(1), State: Active})
	o := mustOpener(t, ks, WithClock(newFakeClock(t0).Now), WithCacheSize(10))
	msg := mustSealAt(t, ks, []byte("x"), t0)
	for i := range 100 {
		bad := bytes.Clone(msg)
		bad[17+i%NonceSize] ^= byte(i + 1)
		if _, _, err := o.Open(bad); !errors.Is(err, ErrTampered) {
			t.Fatalf("forged message %d: err = %v, want ErrTampered", i, err)
		}
	}
	if n := cacheLen(o); n != 0 {
		t.Fatalf("forged messages left %d cache entries", n)
	}
}

func TestReplayCacheBounded(t *testing.T) {
	const capacity = 100
	ks := mustKeySet(t, Key{Version: 1, Secret: secret(1), State: Active})
	clock := newFakeClock(t0)
	o := mustOpener(t, ks, WithClock(clock.Now), WithCacheSize(capacity))

	var accepted [][]byte
	for i := range 10 * capacity {
		msg := mustSealAt(t, ks, []byte("flood"), t0)
		_, _, err := o.Open(msg)
		switch {
		case i < capacity && err == nil:
			accepted = append(accepted, msg)
		case i >= capacity && errors.Is(err, ErrCacheFull):
		default:
			t.Fatalf("message %d: err = %v", i, err)
		}
		if n := cacheLen(o); n > capacity {
			t.Fatalf("cache holds %d entries, cap is %d", n, capacity)
		}
	}
	// A full cache must still recognise the nonces it holds.
	for _, msg := range accepted {
		if _, _, err := o.Open(msg); !errors.Is(err, ErrReplayed) {
			t.Fatalf("replay while cache full: err = %v, want ErrReplayed", err)
		}
	}

	clock.Advance(DefaultWindow + DefaultWindow/bucketsPerWindow + 1)
	if _, _, err := o.Open(mustSealAt(t, ks, []byte("after"), clock.Now())); err != nil {
		t.Fatalf("Open after the flood aged out: %v", err)
	}
	if n := cacheLen(o); n != 1 {
		t.Fatalf("cache holds %d entries after expiry, want 1", n)
	}
}

func TestReplayCacheEvictsUnderSteadyTraffic(t *testing.T) {
	ks := mustKeySet(t, Key{Version: 1, Secret: secret(1), State: Active})
	clock := newFakeClock(t0)
	o := mustOpener(t, ks, WithClock(clock.Now))
	// 100 messages per simulated second for 60 s: only about one window's
	// worth (plus a bucket of slack) may be held at any time.
	const perSecond = 100
	limit := int((DefaultWindow+DefaultWindow/bucketsPerWindow).Seconds()*perSecond) + perSecond
	for range 60 * perSecond {
		clock.Advance(time.Second / perSecond)
		if _, _, err := o.Open(mustSealAt(t, ks, nil, clock.Now())); err != nil {
			t.Fatalf("Open: %v", err)
		}
		if n := cacheLen(o); n > limit {
			t.Fatalf("cache holds %d entries under steady traffic, want at most %d", n, limit)
		}
	}
}

func TestClockStepBackDoesNotReopenReplayGap(t *testing.T) {
	ks := mustKeySet(t, Key{Version: 1, Secret: secret(1), State: Active})
	clock := newFakeClock(t0)
	o := mustOpener(t, ks, WithClock(clock.Now))
	msg := mustSealAt(t, ks, []byte("x"), t0)
	if _, _, err := o.Open(msg); err != nil {
		t.Fatalf("Open: %v", err)
	}
	clock.Advance(time.Minute)
	if _, _, err := o.Open(mustSealAt(t, ks, []byte("y"), clock.Now())); err != nil {
		t.Fatalf("Open a minute later: %v", err)
	}
	clock.Set(t0) // wall clock stepped back; msg's nonce has been evicted
	if _, _, err := o.Open(msg); !errors.Is(err, ErrExpired) {
		t.Fatalf("replay after the clock stepped back: err = %v, want ErrExpired", err)
	}
}

// TestRotationUnderTraffic runs a sender and a receiver with separate key sets,
// as on two hosts, through three rotations while messages flow continuously,
// and requires every message to open.
func TestRotationUnderTraffic(t *testing.T) {
	key := func(v uint64, s KeyState) Key { return Key{Version: v, Secret: secret(v), State: s} }
	senderKeys := mustKeySet(t, key(1, Active))
	receiverKeys := mustKeySet(t, key(1, Active))
	o := mustOpener(t, receiverKeys)

	msgs := make(chan []byte, 64)
	stop := make(chan struct{})
	var sealFailures, openFailures, opened atomic.Int64
	var lastVersion atomic.Uint64
	var wg sync.WaitGroup
	stopTraffic := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopTraffic)

	wg.Go(func() {
		defer close(msgs)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			msg, err := Seal(senderKeys, fmt.Appendf(nil, "message %d", i), time.Now())
			if err != nil {
				if sealFailures.Add(1) == 1 {
					t.Errorf("Seal: %v", err)
				}
				continue
			}
			msgs <- msg
		}
	})
	wg.Go(func() {
		for i := 0; ; i++ {
			msg, ok := <-msgs
			if !ok {
				return
			}
			payload, hdr, err := o.Open(msg)
			if err != nil {
				if openFailures.Add(1) == 1 {
					t.Errorf("Open: %v", err)
				}
				continue
			}
			if want := fmt.Sprintf("message %d", i); string(payload) != want {
				t.Errorf("payload %q, want %q", payload, want)
			}
			lastVersion.Store(hdr.KeyVersion)
			opened.Add(1)
		}
	})

	// waitFor lets at least 100 more messages through and then waits for cond.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		start := opened.Load()
		deadline := time.Now().Add(10 * time.Second)
		for opened.Load() < start+100 || !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	both := func(keys ...Key) {
		t.Helper()
		mustSet(t, receiverKeys, keys...)
		mustSet(t, senderKeys, keys...)
	}

	for n := uint64(1); n <= 3; n++ {
		waitFor(fmt.Sprintf("traffic under version %d", n), func() bool { return lastVersion.Load() == n })
		// Stage N+1: the receiver first, so it holds the key before anyone can use it.
		both(key(n, Active), key(n+1, Staged))
		waitFor("traffic with N+1 staged", func() bool { return true })
		// Activate N+1 on the sender only once the receiver holds it (it does:
		// staged above); N keeps opening while messages sealed under it drain.
		mustSet(t, senderKeys, key(n, Retiring), key(n+1, Active))
		mustSet(t, receiverKeys, key(n, Retiring), key(n+1, Active))
		// The channel is FIFO, so once the receiver opens a message under N+1
		// nothing sealed under N is still in flight and N can be retired.
		waitFor(fmt.Sprintf("receiver to see version %d", n+1), func() bool { return lastVersion.Load() == n+1 })
		both(key(n+1, Active))
	}
	waitFor("traffic under version 4", func() bool { return lastVersion.Load() == 4 })

	stopTraffic()
	if sealFailures.Load() != 0 || openFailures.Load() != 0 {
		t.Fatalf("%d seal and %d open failures across rotations; want none", sealFailures.Load(), openFailures.Load())
	}
	t.Logf("%d messages opened across 3 rotations", opened.Load())
}

func BenchmarkSeal(b *testing.B) {
	ks := mustKeySet(b, Key{Version: 1, Secret: secret(1), State: Active})
	payload := make([]byte, 1024)
	b.SetBytes(int64(len(payload)))
	now := time.Now()
	for b.Loop() {
		if _, err := Seal(ks, payload, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	ks := mustKeySet(b, Key{Version: 1, Secret: secret(1), State: Active})
	payload := make([]byte, 1024)
	b.SetBytes(int64(len(payload)))
	// Every opened message must be fresh, so messages are sealed in batches
	// outside the timer; each batch gets a new Opener so the replay cache
	// stays within its cap however large b.N grows.
	const batch = 4096
	msgs := make([][]byte, batch)
	var o *Opener
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			for j := range msgs {
				msgs[j] = mustSealAt(b, ks, payload, t0)
			}
			o = mustOpener(b, ks, WithClock(newFakeClock(t0).Now))
			b.StartTimer()
		}
		if _, _, err := o.Open(msgs[i%batch]); err != nil {
			b.Fatal(err)
		}
	}
}
