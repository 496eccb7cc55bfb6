package audit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

// seed records n events one minute apart, the last at end, alternating two targets and outcomes.
func seed(t *testing.T, c *store.Client, n int, end time.Time) *Log {
	t.Helper()
	l := New(c, etcdtest.Logger(t))
	ctx := authn.WithCaller(t.Context(), authn.Caller{Method: authn.MethodToken, Name: "ops", Role: authn.RoleAdmin})
	for i := range n {
		at := end.Add(time.Duration(i-n+1) * time.Minute)
		l.now = func() time.Time { return at }
		ev := Event{Target: fmt.Sprintf("node/n%d", i), Outcome: Success}
		if i%2 == 1 {
			ev.Outcome = Denied
		}
		if _, err := l.st.Txn(ctx, nil, []store.Op{l.Op(ctx, ev)}); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func TestListNewestFirstWithFilters(t *testing.T) {
	c := etcdtest.Start(t)
	now := time.Now()
	seed(t, c, 9, now)
	list := func(q Query) Page {
		t.Helper()
		p, err := List(context.Background(), c, time.Second, q)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	targets := func(p Page) string {
		s := ""
		for _, e := range p.Entries {
			s += e.Event.Target[len("node/"):] + " "
		}
		return s
	}
	for _, tc := range []struct {
		name string
		q    Query
		want string
		more bool
	}{
		{"all", Query{Limit: 100}, "n8 n7 n6 n5 n4 n3 n2 n1 n0 ", false},
		{"page", Query{Limit: 3}, "n8 n7 n6 ", true},
		{"denied", Query{Outcome: Denied, Limit: 100}, "n7 n5 n3 n1 ", false},
		{"since", Query{Since: now.Add(-150 * time.Second), Limit: 100}, "n8 n7 n6 ", false},
		{"target", Query{TargetPrefix: "node/n4", Limit: 100}, "n4 ", false},
		{"actor", Query{Actor: "user:ops", Method: "", Limit: 2}, "n8 n7 ", true},
		{"other actor", Query{Actor: "user:x", Limit: 100}, "", false},
		{"scan budget", Query{TargetPrefix: "node/n0", Limit: 1, MaxScan: 4}, "", true},
		{"exact last page", Query{Outcome: Success, Limit: 5}, "n8 n6 n4 n2 n0 ", false},
		// Older events remain that do not match: the client learns that on the next, empty page.
		{"full page before non-matching events", Query{Outcome: Denied, Limit: 4}, "n7 n5 n3 n1 ", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := list(tc.q)
			if got := targets(p); got != tc.want || (p.Next != "") != tc.more {
				t.Fatalf("got %q next=%q, want %q more=%v", got, p.Next, tc.want, tc.more)
			}
		})
	}
	t.Run("pages join up", func(t *testing.T) {
		got := ""
		q := Query{Limit: 2}
		for i := 0; i < 10; i++ {
			p := list(q)
			got += targets(p)
			if p.Next == "" {
				break
			}
			if !ValidID(p.Next) {
				t.Fatalf("next %q is not an id", p.Next)
			}
			q.Before = p.Next
		}
		if got != "n8 n7 n6 n5 n4 n3 n2 n1 n0 " {
			t.Fatalf("pages %q", got)
		}
	})
}

func TestPrune(t *testing.T) {
	c := etcdtest.Start(t)
	now := time.Now()
	seed(t, c, 20, now)
	count := func() int {
		t.Helper()
		p, err := List(context.Background(), c, time.Second, Query{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(p.Entries)
	}
	// Events are one minute apart: an age limit of 9.5 minutes keeps the newest ten.
	n, err := Prune(t.Context(), c, time.Second, now, 570*time.Second, 0)
	if err != nil || n != 10 || count() != 10 {
		t.Fatalf("prune by age: deleted %d (%v), %d left", n, err, count())
	}
	n, err = Prune(t.Context(), c, time.Second, now, 0, 4)
	if err != nil || n != 6 || count() != 4 {
		t.Fatalf("prune by count: deleted %d (%v), %d left", n, err, count())
	}
	p, _ := List(context.Background(), c, time.Second, Query{Limit: 1})
	if p.Entries[0].Event.Target != "node/n19" {
		t.Fatalf("newest event gone: %v", p.Entries[0].Event)
	}
	if n, err := Prune(t.Context(), c, time.Second, now, time.Hour, 100); err != nil || n != 0 {
		t.Fatalf("nothing to prune: %d, %v", n, err)
	}
}

func FuzzValidID(f *testing.F) {
	f.Add(NewID(time.Unix(1700000000, 0)))
	f.Add("00000000000000000000-zzzzzzzz")
	f.Add("")
	f.Fuzz(func(t *testing.T, id string) {
		if ValidID(id) && (len(id) != 29 || id[20] != '-') {
			t.Fatalf("accepted %q", id)
		}
	})
}
