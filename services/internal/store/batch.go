package store

import (
	"context"
	"errors"
	"sync"
)

// DefaultBatchOps stays within etcd's default --max-txn-ops (128).
const DefaultBatchOps = 128

// Batcher commits the small transactions of many independent writers together, as one etcd
// transaction: a fleet of agents acknowledging a change at once then costs a handful of raft
// entries and applies instead of one per agent. While a batch is being committed, new requests
// queue; they form the next batch. An idle Batcher adds no delay.
//
// A batch is all or nothing, so when a combined transaction fails one of its conditions, each request
// in it is retried alone and gets its own answer. Requests whose keys collide with a request already
// in the batch (etcd refuses a key written twice in one transaction) wait for the next batch.
type Batcher struct {
	st     *Store
	maxOps int

	mu      sync.Mutex
	pending []*batchReq
	running bool
}

type batchReq struct {
	conds []Cond
	ops   []Op
	keys  []string
	done  chan struct{}
	rev   int64
	err   error
}

// Batcher returns a Batcher writing through s; maxOps bounds the operations (and, separately, the
// conditions) of one combined transaction (DefaultBatchOps if 0).
func (s *Store) Batcher(maxOps int) *Batcher {
	if maxOps <= 0 {
		maxOps = DefaultBatchOps
	}
	return &Batcher{st: s, maxOps: maxOps}
}

// Txn is Store.Txn, committed together with concurrent calls. Delete-prefix ops are not batched.
// When ctx ends first the error is ctx's, and the write may still be applied.
func (b *Batcher) Txn(ctx context.Context, conds []Cond, ops []Op) (int64, error) {
	r := &batchReq{conds: conds, ops: ops, done: make(chan struct{})}
	batchable := len(ops) <= b.maxOps && len(conds) <= b.maxOps
	for _, op := range ops {
		ns, err := b.st.target(op.ns)
		if err != nil {
			return 0, err
		}
		if op.kind == opDeletePrefix {
			batchable = false
		}
		r.keys = append(r.keys, ns.prefix+op.key)
	}
	if !batchable {
		return b.st.Txn(ctx, conds, ops)
	}
	b.mu.Lock()
	b.pending = append(b.pending, r)
	if !b.running {
		b.running = true
		go b.run()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.rev, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run commits batches until none is pending.
func (b *Batcher) run() {
	for {
		b.mu.Lock()
		batch := b.take()
		if len(batch) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.commit(batch)
	}
}

// take removes the next batch from pending (with b.mu held): requests in arrival order while they fit,
// skipping those whose keys are already written by the batch.
func (b *Batcher) take() []*batchReq {
	var batch, rest []*batchReq
	nops, nconds := 0, 0
	keys := map[string]bool{}
	for i, r := range b.pending {
		if nops == b.maxOps || nconds == b.maxOps {
			// Full: the rest waits as it is (scanning thousands of queued acks per batch would cost
			// more than committing them).
			rest = append(rest, b.pending[i:]...)
			break
		}
		fits := nops+len(r.ops) <= b.maxOps && nconds+len(r.conds) <= b.maxOps
		for _, k := range r.keys {
			if keys[k] {
				fits = false
			}
		}
		if !fits {
			rest = append(rest, r)
			continue
		}
		for _, k := range r.keys {
			keys[k] = true
		}
		nops, nconds = nops+len(r.ops), nconds+len(r.conds)
		batch = append(batch, r)
	}
	b.pending = rest
	return batch
}

func (b *Batcher) commit(batch []*batchReq) {
	// The batch outlives any one caller's context; the store's operation timeout bounds it.
	ctx := context.Background()
	if len(batch) == 1 {
		r := batch[0]
		r.rev, r.err = b.st.Txn(ctx, r.conds, r.ops)
		close(r.done)
		return
	}
	var conds []Cond
	var ops []Op
	for _, r := range batch {
		conds = append(conds, r.conds...)
		ops = append(ops, r.ops...)
	}
	rev, err := b.st.Txn(ctx, conds, ops)
	if errors.Is(err, ErrConflict) {
		var wg sync.WaitGroup
		for _, r := range batch {
			wg.Go(func() {
				r.rev, r.err = b.st.Txn(ctx, r.conds, r.ops)
				close(r.done)
			})
		}
		wg.Wait()
		return
	}
	for _, r := range batch {
		r.rev, r.err = rev, err
		close(r.done)
	}
}
