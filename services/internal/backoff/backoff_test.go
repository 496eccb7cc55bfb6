package backoff

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func seeded(b Backoff, seed uint64) Backoff {
	b.rand = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return b
}

func TestBounds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		b       Backoff
		wantMax time.Duration
	}{
		{"default", Default(), DefaultMax},
		{"small max", Backoff{Initial: time.Second, Max: 50 * time.Millisecond, Multiplier: 3, Jitter: 1}, 50 * time.Millisecond},
		{"zero value", Backoff{}, DefaultMax},
		{"huge multiplier", Backoff{Initial: time.Millisecond, Max: time.Hour, Multiplier: 1e300, Jitter: 0.5}, time.Hour},
		{"invalid fields", Backoff{Initial: -1, Max: -1, Multiplier: math.NaN(), Jitter: 7}, DefaultMax},
		{"negative jitter", Backoff{Initial: time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: -1}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := seeded(tc.b, 1)
			for i := range 10000 {
				d := b.Next()
				if d < 0 || d > tc.wantMax {
					t.Fatalf("attempt %d: delay %v outside [0, %v]", i, d, tc.wantMax)
				}
			}
		})
	}
}

func TestGrowthWithoutJitter(t *testing.T) {
	b := Backoff{Initial: 200 * time.Millisecond, Max: 3 * time.Second, Multiplier: 2}
	var got []time.Duration
	for range 7 {
		got = append(got, b.Next())
	}
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3 * time.Second, 3 * time.Second, 3 * time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("delays = %v, want %v", got, want)
	}
}

func TestGrowthWithJitterFollowsCeiling(t *testing.T) {
	b := seeded(Backoff{Initial: 100 * time.Millisecond, Max: time.Minute, Multiplier: 2, Jitter: 0.25}, 2)
	ceiling := 100 * time.Millisecond
	for i := range 8 {
		d := b.Next()
		if low := ceiling - ceiling/4; d < low || d > ceiling {
			t.Errorf("attempt %d: delay %v outside [%v, %v]", i, d, low, ceiling)
		}
		ceiling *= 2
	}
}

func TestReset(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2}
	for range 5 {
		b.Next()
	}
	b.Reset()
	if got := b.Next(); got != time.Second {
		t.Errorf("first delay after Reset = %v, want %v", got, time.Second)
	}
}

func TestSeededSequenceIsDeterministic(t *testing.T) {
	a, b := seeded(Default(), 42), seeded(Default(), 42)
	for i := range 20 {
		if x, y := a.Next(), b.Next(); x != y {
			t.Fatalf("attempt %d: %v != %v with the same seed", i, x, y)
		}
	}
}

// TestFirstRetriesSpreadOut models 10000 agents that all lost their stream when
// a wardend replica restarted: their first retries must spread evenly over the
// first ceiling rather than bunch up.
func TestFirstRetriesSpreadOut(t *testing.T) {
	const agents, buckets = 10000, 10
	ceiling := Default().Initial
	var hist [buckets]int
	var sum time.Duration
	for i := range agents {
		b := seeded(Default(), uint64(i))
		d := b.Next()
		sum += d
		hist[min(int(d*buckets/ceiling), buckets-1)]++
	}
	want := agents / buckets
	for i, n := range hist {
		if n < want*85/100 || n > want*115/100 {
			t.Errorf("bucket %d of the first %v holds %d retries, want about %d (histogram %v)", i, ceiling, n, want, hist)
		}
	}
	if mean, want := sum/agents, ceiling/2; mean < want*95/100 || mean > want*105/100 {
		t.Errorf("mean first delay = %v, want about %v", mean, want)
	}
}

func TestSleep(t *testing.T) {
	if err := Sleep(t.Context(), time.Millisecond); err != nil {
		t.Errorf("Sleep = %v, want nil", err)
	}
	if err := Sleep(t.Context(), 0); err != nil {
		t.Errorf("Sleep(0) = %v, want nil", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep with a cancelled context = %v, want context.Canceled", err)
	}
	if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(0) with a cancelled context = %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Sleep with a cancelled context took %v", took)
	}
}
