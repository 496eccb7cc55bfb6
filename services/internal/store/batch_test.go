package store_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

// burst runs n calls of fn at once and returns their revisions and errors.
func burst(n int, fn func(i int) (int64, error)) ([]int64, []error) {
	revs, errs := make([]int64, n), make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			revs[i], errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return revs, errs
}

func TestBatcher(t *testing.T) {
	c := etcdtest.Start(t)

	t.Run("concurrent writes share transactions and all land", func(t *testing.T) {
		s := ns(t, c, "a")
		audit := ns(t, c, "audit")
		b := s.Batcher(0)
		const n = 300
		revs, errs := burst(n, func(i int) (int64, error) {
			k := fmt.Sprintf("ack/%d", i)
			return b.Txn(t.Context(), []store.Cond{store.Any()}, []store.Op{store.PutOp(k, []byte(k)), store.PutOp(k, []byte("ev")).In(audit)})
		})
		distinct := map[int64]bool{}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			distinct[revs[i]] = true
			k := fmt.Sprintf("ack/%d", i)
			if kv := mustGet(t, s, k); string(kv.Value) != k || kv.ModRevision != revs[i] {
				t.Fatalf("%s: %+v, want its value at revision %d", k, kv, revs[i])
			}
			mustGet(t, audit, k)
		}
		// 600 ops in batches of at most 128: at least 5 transactions, and far fewer than 300.
		if len(distinct) < 5 || len(distinct) > n/2 {
			t.Fatalf("%d writes committed in %d transactions, want batches of up to 64", n, len(distinct))
		}
	})

	t.Run("a failed condition fails only its own request", func(t *testing.T) {
		s := ns(t, c, "b")
		stale := put(t, s, "guarded", "v1")
		put(t, s, "guarded", "v2")
		b := s.Batcher(0)
		const n = 50
		_, errs := burst(n, func(i int) (int64, error) {
			cond := store.MustNotExist(fmt.Sprintf("k/%d", i))
			if i == n/2 {
				cond = store.AtRevision("guarded", stale)
			}
			return b.Txn(t.Context(), []store.Cond{cond}, []store.Op{store.PutOp(fmt.Sprintf("k/%d", i), []byte("x"))})
		})
		for i, err := range errs {
			if i == n/2 {
				wantErr(t, err, store.ErrConflict, "the request with the stale condition")
				wantNotFound(t, s, fmt.Sprintf("k/%d", i))
				continue
			}
			if err != nil {
				t.Fatalf("write %d failed with its neighbour's conflict: %v", i, err)
			}
			mustGet(t, s, fmt.Sprintf("k/%d", i))
		}
	})

	t.Run("writes to one key go to separate transactions", func(t *testing.T) {
		s := ns(t, c, "c")
		b := s.Batcher(0)
		const n = 20
		revs, errs := burst(n, func(i int) (int64, error) {
			return b.Txn(t.Context(), nil, []store.Op{store.PutOp("same", []byte(fmt.Sprint(i)))})
		})
		seen := map[int64]bool{}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			if seen[revs[i]] {
				t.Fatalf("two writes of one key committed at revision %d", revs[i])
			}
			seen[revs[i]] = true
		}
		if kv := mustGet(t, s, "same"); kv.Version != n {
			t.Fatalf("key written %d times, want %d", kv.Version, n)
		}
	})

	t.Run("delete prefix goes alone", func(t *testing.T) {
		s := ns(t, c, "d")
		put(t, s, "p/1", "x")
		put(t, s, "p/2", "x")
		if _, err := s.Batcher(0).Txn(t.Context(), nil, []store.Op{store.DeletePrefixOp("p/")}); err != nil {
			t.Fatal(err)
		}
		wantNotFound(t, s, "p/1")
		wantNotFound(t, s, "p/2")
	})
}
