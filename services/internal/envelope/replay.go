package envelope

import (
	"fmt"
	"math"
	"sync"
	"time"
)

type cacheKey struct {
	version uint64
	nonce   [NonceSize]byte
}

// bucketsPerWindow sets the eviction granularity: an entry outlives its need
// by at most window/bucketsPerWindow, so the cache holds at most about
// (2 + 2/bucketsPerWindow) windows' worth of traffic.
const bucketsPerWindow = 8

// replayCache remembers the (version, nonce) of every authenticated message
// until its timestamp falls out of the acceptance window, after which Open
// refuses the message as expired anyway. Entries are grouped in buckets by
// message timestamp so eviction drops whole maps instead of scanning entries.
//
// When the cache is full it refuses new messages (ErrCacheFull) instead of
// evicting live entries. Forgetting a nonce that is still inside the window
// would reopen exactly the replay gap this cache exists to close, and would
// do so precisely under load, when an attacker flooding the channel wants it.
// Only messages that authenticate reach the cache, so filling it takes the
// shared secret: refusing service to a peer that floods is the right failure,
// and it fails closed and visibly.
type replayCache struct {
	mu       sync.Mutex
	capacity int
	window   int64
	width    int64
	buckets  map[int64]map[cacheKey]struct{}
	size     int
	// floor is the lowest timestamp the cache can still vouch for: buckets
	// below it were evicted. If the wall clock steps backwards, timestamps
	// below floor could pass the window check again, so they are refused.
	floor     int64
	nextEvict int64
}

func (c *replayCache) init(window time.Duration) {
	c.window = int64(window)
	c.width = max(c.window/bucketsPerWindow, 1)
	c.buckets = make(map[int64]map[cacheKey]struct{})
	c.floor = math.MinInt64
	c.nextEvict = math.MaxInt64
}

// record stores k for a message with timestamp ts, received at now (both Unix
// nanoseconds, ts already within the window of now). It fails if k was seen.
func (c *replayCache) record(k cacheKey, ts, now int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now >= c.nextEvict {
		c.evict(now)
	}
	if ts < c.floor {
		return fmt.Errorf("%w: timestamp predates the replay cache horizon (receiver clock stepped back?)", ErrExpired)
	}
	b := floorDiv(ts, c.width)
	bucket := c.buckets[b]
	if _, seen := bucket[k]; seen {
		return fmt.Errorf("%w: secret version %d", ErrReplayed, k.version)
	}
	if c.size >= c.capacity {
		return fmt.Errorf("%w: %d entries", ErrCacheFull, c.size)
	}
	if bucket == nil {
		bucket = make(map[cacheKey]struct{})
		c.buckets[b] = bucket
		c.nextEvict = min(c.nextEvict, c.expiry(b))
	}
	bucket[k] = struct{}{}
	c.size++
	return nil
}

// expiry is the first instant at which every timestamp in bucket b is older
// than the window, so none of its messages could be accepted again.
func (c *replayCache) expiry(b int64) int64 {
	return (b+1)*c.width + c.window
}

func (c *replayCache) evict(now int64) {
	c.nextEvict = math.MaxInt64
	for b, bucket := range c.buckets {
		exp := c.expiry(b)
		if exp > now {
			c.nextEvict = min(c.nextEvict, exp)
			continue
		}
		c.size -= len(bucket)
		delete(c.buckets, b)
		c.floor = max(c.floor, (b+1)*c.width)
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}
