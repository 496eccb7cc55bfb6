package mirror

import (
	"sync"

	"github.com/warden-sec/warden/services/internal/store"
)

// maxDecoded bounds a Decoded cache; past it the cache starts over (deleted keys are never evicted
// one by one).
const maxDecoded = 1 << 16

// Decoded memoizes the decoding of stored values by key and revision. Snapshot builders read the same
// records (a node's entry, the CA state, a secret) for every agent and every rebuild; with the cache
// each value is decoded once per change instead of once per read. Values it returns are shared:
// callers must not modify them.
type Decoded[T any] struct {
	decode func(store.KV) (T, error)

	mu sync.RWMutex
	m  map[string]decodedValue[T]
}

type decodedValue[T any] struct {
	rev int64
	v   T
	err error
}

// NewDecoded returns a cache around decode.
func NewDecoded[T any](decode func(store.KV) (T, error)) *Decoded[T] {
	return &Decoded[T]{decode: decode, m: map[string]decodedValue[T]{}}
}

// Decode returns decode(kv), from the cache when kv's revision was decoded before.
func (d *Decoded[T]) Decode(kv store.KV) (T, error) {
	d.mu.RLock()
	e, ok := d.m[kv.Key]
	d.mu.RUnlock()
	if ok && e.rev == kv.ModRevision {
		return e.v, e.err
	}
	v, err := d.decode(kv)
	d.mu.Lock()
	if len(d.m) >= maxDecoded {
		d.m = map[string]decodedValue[T]{}
	}
	if cur, ok := d.m[kv.Key]; !ok || cur.rev <= kv.ModRevision {
		d.m[kv.Key] = decodedValue[T]{rev: kv.ModRevision, v: v, err: err}
	}
	d.mu.Unlock()
	return v, err
}
