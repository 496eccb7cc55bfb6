package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/warden-sec/warden/services/internal/etcdembed"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ns returns a Store under a prefix no other subtest uses, so subtests can
// share one etcd.
func ns(t *testing.T, c *store.Client, name string) *store.Store {
	return c.Namespace("/test/" + t.Name() + "/" + name + "/")
}

func put(t *testing.T, s *store.Store, key, val string) int64 {
	t.Helper()
	rev, err := s.Put(t.Context(), key, []byte(val), store.Any())
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return rev
}

func mustGet(t *testing.T, s *store.Store, key string) store.KV {
	t.Helper()
	kv, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return kv
}

func wantNotFound(t *testing.T, s *store.Store, key string) {
	t.Helper()
	if kv, err := s.Get(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get %q: want ErrNotFound, got %+v, %v", key, kv, err)
	}
}

func wantErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: want %v, got %v", what, want, err)
	}
}

func keys(kvs []store.KV) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Key
	}
	return out
}

// TestConformance is the behaviour every Store must have. It runs against a
// real embedded etcd.
func TestConformance(t *testing.T) {
	c := etcdtest.Start(t)

	tests := []struct {
		name string
		run  func(t *testing.T, s *store.Store)
	}{
		{"get and put", func(t *testing.T, s *store.Store) {
			rev1 := put(t, s, "k", "v1")
			kv := mustGet(t, s, "k")
			if kv.Key != "k" || string(kv.Value) != "v1" || kv.ModRevision != rev1 || kv.CreateRevision != rev1 || kv.Version != 1 {
				t.Fatalf("after first put want k=v1 at rev %d version 1, got %+v", rev1, kv)
			}
			rev2 := put(t, s, "k", "v2")
			kv = mustGet(t, s, "k")
			if string(kv.Value) != "v2" || kv.ModRevision != rev2 || kv.CreateRevision != rev1 || kv.Version != 2 {
				t.Fatalf("after second put want k=v2 mod %d create %d version 2, got %+v", rev2, rev1, kv)
			}
		}},
		{"get missing key", func(t *testing.T, s *store.Store) {
			wantNotFound(t, s, "missing")
		}},
		{"must not exist", func(t *testing.T, s *store.Store) {
			if _, err := s.Put(t.Context(), "k", []byte("first"), store.MustNotExist("k")); err != nil {
				t.Fatalf("create: %v", err)
			}
			_, err := s.Put(t.Context(), "k", []byte("second"), store.MustNotExist("k"))
			wantErr(t, err, store.ErrConflict, "second create")
			if got := mustGet(t, s, "k"); string(got.Value) != "first" {
				t.Fatalf("a failed create changed the value to %q", got.Value)
			}
		}},
		{"conflict on stale revision", func(t *testing.T, s *store.Store) {
			rev := put(t, s, "k", "v1")
			if _, err := s.Put(t.Context(), "k", []byte("v2"), store.AtRevision("k", rev)); err != nil {
				t.Fatalf("update at current revision: %v", err)
			}
			_, err := s.Put(t.Context(), "k", []byte("v3"), store.AtRevision("k", rev))
			wantErr(t, err, store.ErrConflict, "update at stale revision")
			_, err = s.Put(t.Context(), "k", []byte("v3"), store.AtRevision("k", 0))
			wantErr(t, err, store.ErrConflict, "AtRevision 0 on an existing key")
			if _, err := s.Put(t.Context(), "new", []byte("v"), store.AtRevision("new", 0)); err != nil {
				t.Fatalf("AtRevision 0 on a missing key: %v", err)
			}
			if got := mustGet(t, s, "k"); string(got.Value) != "v2" {
				t.Fatalf("want v2 after the rejected update, got %q", got.Value)
			}
		}},
		{"delete", func(t *testing.T, s *store.Store) {
			rev := put(t, s, "k", "v")
			put(t, s, "k", "v2")
			_, err := s.Delete(t.Context(), "k", store.AtRevision("k", rev))
			wantErr(t, err, store.ErrConflict, "delete at stale revision")
			mustGet(t, s, "k")
			if _, err := s.Delete(t.Context(), "k", store.Any()); err != nil {
				t.Fatalf("delete: %v", err)
			}
			wantNotFound(t, s, "k")
			_, err = s.Delete(t.Context(), "k", store.Any())
			wantErr(t, err, store.ErrNotFound, "delete of a missing key")
		}},
		{"list paging", func(t *testing.T, s *store.Store) {
			for _, k := range []string{"p/e", "p/a", "p/g", "p/c", "p/b", "p/f", "p/d", "o", "p0", "q"} {
				put(t, s, k, "v-"+k)
			}
			var got []string
			after, pages := "", 0
			for {
				kvs, rev, more, err := s.List(t.Context(), "p/", after, 3)
				if err != nil {
					t.Fatalf("list after %q: %v", after, err)
				}
				if rev == 0 || len(kvs) > 3 {
					t.Fatalf("page %d: rev %d, %d keys", pages, rev, len(kvs))
				}
				pages++
				got = append(got, keys(kvs)...)
				if !more {
					break
				}
				after = kvs[len(kvs)-1].Key
			}
			want := []string{"p/a", "p/b", "p/c", "p/d", "p/e", "p/f", "p/g"}
			if !slices.Equal(got, want) || pages != 3 {
				t.Fatalf("want %v in 3 pages, got %v in %d", want, got, pages)
			}
			all, _, more, err := s.List(t.Context(), "", "", 0)
			if err != nil || more {
				t.Fatalf("list all: more=%v err=%v", more, err)
			}
			if want := []string{"o", "p/a", "p/b", "p/c", "p/d", "p/e", "p/f", "p/g", "p0", "q"}; !slices.Equal(keys(all), want) {
				t.Fatalf("list of the whole namespace: want %v, got %v", want, keys(all))
			}
			if string(all[0].Value) != "v-o" {
				t.Fatalf("list returned value %q for o", all[0].Value)
			}
			tail, _, _, err := s.List(t.Context(), "p/", "p/e", 0)
			if err != nil || !slices.Equal(keys(tail), []string{"p/f", "p/g"}) {
				t.Fatalf("list after p/e: got %v, %v", keys(tail), err)
			}
		}},
		{"namespaces are isolated", func(t *testing.T, s *store.Store) {
			other := ns(t, c, "other")
			put(t, s, "k", "mine")
			put(t, other, "k", "theirs")
			if got := mustGet(t, s, "k"); string(got.Value) != "mine" {
				t.Fatalf("want mine, got %q", got.Value)
			}
			kvs, _, _, err := other.List(t.Context(), "", "", 0)
			if err != nil || len(kvs) != 1 || string(kvs[0].Value) != "theirs" {
				t.Fatalf("other namespace lists %v, %v", kvs, err)
			}
		}},
		{"txn is all or nothing", func(t *testing.T, s *store.Store) {
			stale := put(t, s, "b", "b1")
			put(t, s, "b", "b2")
			_, err := s.Txn(t.Context(),
				[]store.Cond{store.MustNotExist("a"), store.AtRevision("b", stale)},
				[]store.Op{store.PutOp("a", []byte("a")), store.PutOp("c", []byte("c")), store.DeleteOp("b")})
			wantErr(t, err, store.ErrConflict, "txn with one failing cond")
			if got, want := store.ConflictRevision(err), mustGet(t, s, "b").ModRevision; got < want {
				t.Errorf("conflict revision %d, want at least %d (the write that caused it)", got, want)
			}
			wantNotFound(t, s, "a")
			wantNotFound(t, s, "c")
			mustGet(t, s, "b")

			put(t, s, "d/1", "x")
			put(t, s, "d/2", "x")
			rev, err := s.Txn(t.Context(),
				[]store.Cond{store.MustNotExist("a"), store.AtRevision("b", mustGet(t, s, "b").ModRevision), store.Any()},
				[]store.Op{store.PutOp("a", []byte("a")), store.PutOp("c", []byte("c")), store.DeleteOp("b"), store.DeletePrefixOp("d/")})
			if err != nil {
				t.Fatalf("txn with holding conds: %v", err)
			}
			if a, c := mustGet(t, s, "a"), mustGet(t, s, "c"); a.ModRevision != rev || c.ModRevision != rev {
				t.Fatalf("want both writes at revision %d, got %d and %d", rev, a.ModRevision, c.ModRevision)
			}
			wantNotFound(t, s, "b")
			wantNotFound(t, s, "d/1")
			wantNotFound(t, s, "d/2")

			_, err = s.Txn(t.Context(), nil, []store.Op{{}})
			if err == nil {
				t.Fatal("a txn with a zero Op must fail")
			}
		}},
		{"cross-namespace txn", func(t *testing.T, s *store.Store) {
			audit := ns(t, c, "audit")
			put(t, audit, "guard", "g")
			rev, err := s.Txn(t.Context(),
				[]store.Cond{store.MustNotExist("cert"), store.AtRevision("guard", mustGet(t, audit, "guard").ModRevision).In(audit)},
				[]store.Op{store.PutOp("cert", []byte("pem")), store.PutOp("0001", []byte("issued cert")).In(audit)})
			if err != nil {
				t.Fatalf("cross-namespace txn: %v", err)
			}
			if got := mustGet(t, audit, "0001"); got.ModRevision != rev || string(got.Value) != "issued cert" {
				t.Fatalf("audit record: want at rev %d, got %+v", rev, got)
			}
			wantNotFound(t, s, "0001")
			wantNotFound(t, audit, "cert")
			raw, err := c.Raw().Get(t.Context(), "/test/"+t.Name()+"/audit/0001")
			if err != nil || len(raw.Kvs) != 1 {
				t.Fatalf("raw keyspace: want the audit record under its absolute key, got %v, %v", raw, err)
			}

			put(t, audit, "guard", "moved")
			_, err = s.Txn(t.Context(),
				[]store.Cond{store.AtRevision("guard", rev).In(audit)},
				[]store.Op{store.PutOp("cert2", []byte("pem")), store.PutOp("0002", []byte("x")).In(audit)})
			wantErr(t, err, store.ErrConflict, "cross-namespace txn with a failing cond")
			wantNotFound(t, s, "cert2")
			wantNotFound(t, audit, "0002")

			stranger := etcdtest.Connect(t, etcdtest.StartServer(t)).Namespace("/audit/")
			if _, err := s.Txn(t.Context(), nil, []store.Op{store.PutOp("x", nil).In(stranger)}); err == nil {
				t.Fatal("an op on a Store of another Client must be refused")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, ns(t, c, "s"))
		})
	}
}

func TestWatch(t *testing.T) {
	c := etcdtest.Start(t)

	t.Run("from revision delivers exactly the later changes", func(t *testing.T) {
		s := ns(t, c, "s")
		put(t, s, "before", "x")
		from := put(t, s, "a", "1")
		put(t, s, "a", "2")
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		w := s.Watch(ctx, "", from)
		if _, err := s.Txn(t.Context(), nil, []store.Op{store.PutOp("b", []byte("1")), store.DeleteOp("a")}); err != nil {
			t.Fatal(err)
		}
		put(t, ns(t, c, "other"), "a", "not mine")
		last := put(t, s, "c", "1")

		var got []string
		for !slices.Contains(got, "put c=1") {
			b := recv(t, w)
			if b.Reset {
				t.Fatalf("unexpected reset: %+v", b)
			}
			for _, e := range b.Events {
				got = append(got, describe(e))
			}
			if b.Revision > last {
				t.Fatalf("batch revision %d beyond the last write %d", b.Revision, last)
			}
		}
		want := []string{"put a=1", "put a=2 (was 1)", "put b=1", "delete a (was 2)", "put c=1"}
		if !slices.Equal(got, want) {
			t.Fatalf("want events %q, got %q", want, got)
		}
	})

	t.Run("transaction events arrive in one batch", func(t *testing.T) {
		s := ns(t, c, "s")
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		w := s.Watch(ctx, "", put(t, s, "start", "x")+1)
		rev, err := s.Txn(t.Context(), nil, []store.Op{store.PutOp("x", []byte("1")), store.PutOp("y", []byte("1")), store.PutOp("z", []byte("1"))})
		if err != nil {
			t.Fatal(err)
		}
		b := recv(t, w)
		if len(b.Events) != 3 || b.Revision != rev {
			t.Fatalf("want one batch of 3 events at revision %d, got %+v", rev, b)
		}
	})

	t.Run("from zero starts with the current state", func(t *testing.T) {
		s := ns(t, c, "s")
		put(t, s, "p/a", "1")
		rev := put(t, s, "p/b", "1")
		put(t, s, "q", "outside the watched prefix")
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		w := s.Watch(ctx, "p/", 0)
		b := recv(t, w)
		if !b.Reset || b.Revision < rev {
			t.Fatalf("want a reset at revision >= %d, got %+v", rev, b)
		}
		if got := describeAll(b.Events); !slices.Equal(got, []string{"put p/a=1", "put p/b=1"}) {
			t.Fatalf("reset state: %q", got)
		}
		put(t, s, "p/c", "1")
		if got := describeAll(recv(t, w).Events); !slices.Equal(got, []string{"put p/c=1"}) {
			t.Fatalf("after the reset want put p/c=1, got %q", got)
		}
	})

	t.Run("closes when ctx is done", func(t *testing.T) {
		s := ns(t, c, "s")
		ctx, cancel := context.WithCancel(t.Context())
		w := s.Watch(ctx, "", 0)
		cancel()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case _, ok := <-w:
				if !ok {
					return
				}
			case <-timeout:
				t.Fatal("channel not closed 5s after ctx was cancelled")
			}
		}
	})

	t.Run("does not wait for a consumer that is gone", func(t *testing.T) {
		s := ns(t, c, "s")
		ctx, cancel := context.WithCancel(t.Context())
		s.Watch(ctx, "", 0) // never read: the Reset batch is stuck in send
		put(t, s, "k", "v")
		cancel()
		// goleak in TestMain fails the package if the watch goroutine stays.
	})
}

// Compaction is cluster-wide, so this test has its own etcd.
func TestWatchAfterCompaction(t *testing.T) {
	c := etcdtest.Start(t)
	s := c.Namespace("/svc/")
	from := put(t, s, "a", "1")
	put(t, s, "b", "1")
	put(t, s, "a", "2")
	if _, err := s.Delete(t.Context(), "b", store.Any()); err != nil {
		t.Fatal(err)
	}
	rev := put(t, s, "c", "1")
	if _, err := c.Raw().Compact(t.Context(), rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := s.Watch(ctx, "", from)
	b := recv(t, w)
	if !b.Reset || b.Revision < rev {
		t.Fatalf("want a reset at revision >= %d, got %+v", rev, b)
	}
	if got := describeAll(b.Events); !slices.Equal(got, []string{"put a=2", "put c=1"}) {
		t.Fatalf("reset must hold the full current state, got %q", got)
	}
	put(t, s, "d", "1")
	if got := describeAll(recv(t, w).Events); !slices.Equal(got, []string{"put d=1"}) {
		t.Fatalf("after the reset want put d=1, got %q", got)
	}
}

func recv(t *testing.T, w <-chan store.WatchBatch) store.WatchBatch {
	t.Helper()
	select {
	case b, ok := <-w:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no watch batch within 5s")
	}
	return store.WatchBatch{}
}

func describe(e store.Event) string {
	s := e.Type.String() + " " + e.KV.Key
	if e.Type == store.EventPut {
		s += "=" + string(e.KV.Value)
	}
	if e.PrevValue != nil {
		s += fmt.Sprintf(" (was %s)", e.PrevValue)
	}
	return s
}

func describeAll(events []store.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = describe(e)
	}
	return out
}

func TestLeases(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t)
	s := c.Namespace("/svc/")

	grant := func(ttl time.Duration) int64 {
		t.Helper()
		id, err := s.GrantLease(t.Context(), ttl)
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		return id
	}
	// etcd raises TTLs below its minimum (2s here) to it. kept's TTL leaves
	// two renewals of slack, so a loaded test machine does not lose it.
	const keptTTL = 3 * time.Second
	granted := time.Now()
	short, kept, revoked := grant(time.Second), grant(keptTTL), grant(time.Minute)
	if _, err := s.Txn(t.Context(), nil, []store.Op{
		store.PutWithLeaseOp("short", []byte("x"), short),
		store.PutWithLeaseOp("kept", []byte("x"), kept),
		store.PutWithLeaseOp("revoked", []byte("x"), revoked),
		store.PutOp("plain", []byte("x")),
	}); err != nil {
		t.Fatalf("put with leases: %v", err)
	}
	if got := mustGet(t, s, "short").Lease; got != short {
		t.Fatalf("key lease: want %x, got %x", short, got)
	}

	kaCtx, stopKeepAlive := context.WithCancel(t.Context())
	defer stopKeepAlive()
	lost, err := s.KeepAlive(kaCtx, kept)
	if err != nil {
		t.Fatalf("keepalive: %v", err)
	}

	if err := s.RevokeLease(t.Context(), revoked); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	wantNotFound(t, s, "revoked")
	wantErr(t, s.RevokeLease(t.Context(), revoked), store.ErrNotFound, "second revoke")

	etcdtest.Eventually(t, 10*time.Second, func() bool {
		_, err := s.Get(t.Context(), "short")
		return errors.Is(err, store.ErrNotFound)
	}, "key on an expired lease is deleted")
	time.Sleep(time.Until(granted.Add(keptTTL + 500*time.Millisecond)))
	mustGet(t, s, "kept")
	mustGet(t, s, "plain")
	select {
	case <-lost:
		t.Fatal("lost closed while keepalive was running")
	default:
	}

	stopKeepAlive()
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("lost not closed after keepalive ctx was cancelled")
	}

	lost2, err := s.KeepAlive(t.Context(), revoked)
	if err != nil {
		t.Fatalf("keepalive of a revoked lease: %v", err)
	}
	select {
	case <-lost2:
	case <-time.After(5 * time.Second):
		t.Fatal("keepalive of a revoked lease must report it lost")
	}
}

type contender struct {
	cancel context.CancelFunc
	// wait returns RunElected's result once it has returned.
	wait func() error
}

func campaign(t *testing.T, c *store.Client, name, id string, running chan<- string) *contender {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- c.RunElected(ctx, name, id, func(ctx context.Context) error {
			running <- id
			<-ctx.Done()
			running <- "stopped " + id
			return ctx.Err()
		})
	}()
	ct := &contender{cancel: cancel, wait: sync.OnceValue(func() error { return <-done })}
	t.Cleanup(func() {
		cancel()
		ct.wait()
	})
	return ct
}

func expect(t *testing.T, ch chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("want %q, got %q", want, got)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("want %q within 10s, got nothing", want)
	}
}

func expectQuiet(t *testing.T, ch chan string, d time.Duration) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("want nothing for %s, got %q", d, got)
	case <-time.After(d):
	}
}

func TestRunElected(t *testing.T) {
	t.Parallel()
	srv := etcdtest.StartServer(t)
	c1, c2 := etcdtest.Connect(t, srv), etcdtest.Connect(t, srv)

	t.Run("one leader at a time, the other takes over", func(t *testing.T) {
		running := make(chan string, 10)
		a := campaign(t, c1, "tls", "a", running)
		expect(t, running, "a")
		b := campaign(t, c2, "tls", "b", running)
		expectQuiet(t, running, 300*time.Millisecond)
		if got, err := c2.Leader(t.Context(), "tls"); err != nil || got != "a" {
			t.Fatalf("Leader: want a, got %q, %v", got, err)
		}

		a.cancel()
		expect(t, running, "stopped a")
		expect(t, running, "b")
		if err := a.wait(); err != nil {
			t.Fatalf("RunElected after ctx cancel: want nil, got %v", err)
		}
		if got, err := c1.Leader(t.Context(), "tls"); err != nil || got != "b" {
			t.Fatalf("Leader: want b, got %q, %v", got, err)
		}

		b.cancel()
		expect(t, running, "stopped b")
		etcdtest.Eventually(t, 5*time.Second, func() bool {
			got, err := c1.Leader(t.Context(), "tls")
			return err == nil && got == ""
		}, "no leader after both stopped")
	})

	t.Run("leadership lost cancels fn and campaigns again", func(t *testing.T) {
		running := make(chan string, 10)
		campaign(t, c1, "rotate", "a", running)
		expect(t, running, "a")

		resp, err := c2.Raw().Get(t.Context(), "/warden/election/rotate/", clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("election key: %v, %v", resp, err)
		}
		if _, err := c2.Raw().Revoke(t.Context(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
			t.Fatalf("revoke the leader's session: %v", err)
		}
		expect(t, running, "stopped a")
		expect(t, running, "a")
	})

	t.Run("fn failing while leader is returned", func(t *testing.T) {
		boom := errors.New("boom")
		err := c1.RunElected(t.Context(), "failing", "a", func(context.Context) error { return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("want boom, got %v", err)
		}
		if got, err := c1.Leader(t.Context(), "failing"); err != nil || got != "" {
			t.Fatalf("leader after failure: want none, got %q, %v", got, err)
		}
	})
}

func TestUnavailable(t *testing.T) {
	srv := etcdtest.StartServer(t)
	c, err := store.Open(t.Context(), srv.ClientConfig(), 300*time.Millisecond, etcdtest.Logger(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer c.Close()
	s := c.Namespace("/svc/")
	put(t, s, "k", "v")
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	_, err = s.Get(t.Context(), "k")
	wantErr(t, err, store.ErrUnavailable, "get with etcd stopped")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("get took %s, want it bounded by the op timeout", d)
	}
	_, err = s.Put(t.Context(), "k", []byte("v2"), store.Any())
	wantErr(t, err, store.ErrUnavailable, "put with etcd stopped")
	wantErr(t, c.Ping(t.Context()), store.ErrUnavailable, "ping with etcd stopped")
	if !strings.Contains(err.Error(), `put "k"`) {
		t.Fatalf("error should say what failed: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = c.RunElected(ctx, "down", "a", func(context.Context) error {
		t.Error("fn ran without etcd")
		return nil
	})
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("RunElected with etcd stopped: want nil soon after ctx ends, got %v after %s", err, time.Since(start))
	}
}

// A watch outlives an etcd restart: it resumes where it was, without a Reset
// and without losing or repeating changes.
func TestWatchSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func() *etcdembed.Server {
		srv, err := etcdembed.Start(t.Context(), etcdembed.Config{DataDir: dir, Log: etcdtest.Logger(t)})
		if err != nil {
			t.Fatalf("start etcd: %v", err)
		}
		t.Cleanup(func() { srv.Close() })
		return srv
	}
	srv := start()
	c := etcdtest.Connect(t, srv)
	s := c.Namespace("/svc/")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := s.Watch(ctx, "", put(t, s, "a", "1"))
	if got := describeAll(recv(t, w).Events); !slices.Equal(got, []string{"put a=1"}) {
		t.Fatalf("before restart: %q", got)
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if got := start().ClientConfig().Endpoints; !slices.Equal(got, c.Raw().Endpoints()) {
		t.Skipf("client port moved on restart (%v, was %v); the client cannot follow", got, c.Raw().Endpoints())
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool { return c.Ping(t.Context()) == nil }, "client reconnects")
	put(t, s, "b", "1")
	var got []string
	for len(got) < 1 {
		b := recv(t, w)
		if b.Reset {
			t.Fatalf("unexpected reset after restart: %+v", b)
		}
		got = append(got, describeAll(b.Events)...)
	}
	if !slices.Equal(got, []string{"put b=1"}) {
		t.Fatalf("after restart want exactly put b=1, got %q", got)
	}
}
