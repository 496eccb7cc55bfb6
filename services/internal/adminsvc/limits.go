package adminsvc

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// LoginLimit is how many failed logins are tolerated: Burst at once, then one per Every.
type LoginLimit struct {
	Burst int
	Every time.Duration
}

// Defaults: a user may mistype a few times; a source may try a handful of users (an operator's
// workstation with several accounts), far below any useful guessing rate.
var (
	DefaultUserLoginLimit   = LoginLimit{Burst: 5, Every: time.Minute}
	DefaultSourceLoginLimit = LoginLimit{Burst: 20, Every: 10 * time.Second}
)

// maxLimiters bounds each limiter map; entries that are back to a full bucket carry no state worth
// keeping and are dropped first.
const maxLimiters = 50_000

// failureLimiter counts failed attempts per key in token buckets. Only failures take tokens, so an
// operator who logs in correctly is never slowed down; once a bucket is empty every attempt is
// refused, right or wrong, until it refills.
type failureLimiter struct {
	lim LoginLimit
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newFailureLimiter(lim LoginLimit, now func() time.Time) *failureLimiter {
	return &failureLimiter{lim: lim, now: now, buckets: map[string]*rate.Limiter{}}
}

// blocked reports whether key has no failures left.
func (f *failureLimiter) blocked(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.buckets[key]
	return ok && b.TokensAt(f.now()) < 1
}

// fail takes one token from key's bucket.
func (f *failureLimiter) fail(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.buckets[key]
	if !ok {
		if len(f.buckets) >= maxLimiters {
			f.evictFull()
		}
		b = rate.NewLimiter(rate.Every(f.lim.Every), f.lim.Burst)
		f.buckets[key] = b
	}
	b.AllowN(f.now(), 1)
}

func (f *failureLimiter) evictFull() {
	now := f.now()
	for k, b := range f.buckets {
		if b.TokensAt(now) >= float64(f.lim.Burst) {
			delete(f.buckets, k)
		}
	}
	if len(f.buckets) >= maxLimiters {
		clear(f.buckets)
	}
}

// sourceKey groups a peer address by host, so a client cannot dodge the limit with new ports.
func sourceKey(peer string) string {
	host, _, err := net.SplitHostPort(peer)
	if err != nil {
		return peer
	}
	return host
}
