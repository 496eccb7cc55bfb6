// Package backoff computes retry delays: exponential growth with jitter.
//
// The jitter is "full jitter" from the AWS Architecture Blog's "Exponential
// Backoff And Jitter": the n-th delay is drawn uniformly below the exponential
// ceiling min(Max, Initial·Multiplierⁿ), instead of being the ceiling itself.
// When a wardend replica restarts, every agent connected to it loses its
// stream in the same instant; without jitter they would all retry in
// lock-step, and a ceiling-sized window is the widest spread available for a
// given worst-case wait. Full jitter was preferred over "decorrelated jitter"
// because its delay depends only on the attempt count, so Max is a hard bound
// and the schedule is easy to reason about, while the blog measured both as
// spreading load about equally well.
package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"time"
)

// Default values, also used for zero or invalid fields.
const (
	DefaultInitial    = 200 * time.Millisecond
	DefaultMax        = 30 * time.Second
	DefaultMultiplier = 2.0
)

// Backoff produces a sequence of delays. A Backoff is a value with state: copy
// it before first use to get independent sequences; it is not safe for
// concurrent use.
type Backoff struct {
	// Initial is the ceiling of the first delay.
	Initial time.Duration
	// Max caps every delay.
	Max time.Duration
	// Multiplier grows the ceiling after each delay; at least 1.
	Multiplier float64
	// Jitter is the fraction of the ceiling that is randomised, in [0, 1]: a
	// delay is drawn uniformly from [(1−Jitter)·ceiling, ceiling]. 1 is full
	// jitter; 0 turns jitter off and makes delays deterministic.
	Jitter float64

	ceiling time.Duration // of the last delay; 0 before the first
	rand    *rand.Rand    // nil: the global source; tests inject a seeded one
}

// Default returns a Backoff with full jitter, starting at 200ms and doubling
// up to 30s.
func Default() Backoff {
	return Backoff{Initial: DefaultInitial, Max: DefaultMax, Multiplier: DefaultMultiplier, Jitter: 1}
}

// Next returns the delay before the next attempt; it is never negative and
// never above Max.
func (b *Backoff) Next() time.Duration {
	initial, maxDelay, mult, jitter := b.params()
	if b.ceiling == 0 {
		b.ceiling = initial
	} else if grown := float64(b.ceiling) * mult; grown >= float64(maxDelay) {
		// Compared in float64 so that a long run of attempts cannot overflow.
		b.ceiling = maxDelay
	} else {
		b.ceiling = time.Duration(grown)
	}
	if jitter == 0 {
		return b.ceiling
	}
	r := rand.Float64
	if b.rand != nil {
		r = b.rand.Float64
	}
	return b.ceiling - time.Duration(jitter*r()*float64(b.ceiling))
}

// Reset starts the sequence over, typically after a connection stayed up.
func (b *Backoff) Reset() { b.ceiling = 0 }

// params returns the fields with zero or invalid values replaced, so that a
// misconfigured Backoff still backs off rather than spinning or panicking.
func (b *Backoff) params() (initial, maxDelay time.Duration, mult, jitter float64) {
	initial, maxDelay, mult, jitter = b.Initial, b.Max, b.Multiplier, b.Jitter
	if initial <= 0 {
		initial = DefaultInitial
	}
	if maxDelay <= 0 {
		maxDelay = DefaultMax
	}
	initial = min(initial, maxDelay)
	if !(mult >= 1) || math.IsInf(mult, 0) {
		mult = DefaultMultiplier
	}
	if !(jitter >= 0) {
		jitter = 0
	}
	jitter = min(jitter, 1)
	return initial, maxDelay, mult, jitter
}

// Sleep waits for d or until ctx is done, whichever comes first, and returns
// ctx.Err() in the latter case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
