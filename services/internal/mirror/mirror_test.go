package mirror

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

// startMirror runs a mirror of a fresh namespace on a real etcd until the test ends.
func startMirror(t *testing.T) (*store.Store, *Mirror) {
	t.Helper()
	st := etcdtest.Start(t).Namespace("/t/")
	m := New(st, "", etcdtest.Logger(t))
	go func() { _ = m.Run(t.Context()) }()
	if err := m.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	return st, m
}

func TestMirrorFollowsPrefixAndVersions(t *testing.T) {
	st, m := startMirror(t)
	ctx := t.Context()
	nodes := m.ChangedUnder("nodes/")
	all := m.Changed()
	rev, err := st.Put(ctx, "acks/a", []byte("1"), store.Any())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	select {
	case <-all:
	default:
		t.Fatal("Changed did not fire for a put")
	}
	select {
	case <-nodes:
		t.Fatal("ChangedUnder(nodes/) fired for acks/a")
	default:
	}
	rev, err = st.Put(ctx, "nodes/n1", []byte("x"), store.Any())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-nodes:
	case <-time.After(10 * time.Second):
		t.Fatal("ChangedUnder(nodes/) did not fire for nodes/n1")
	}
	if err := m.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if v := m.Version("nodes/"); v != rev {
		t.Fatalf("Version(nodes/) = %d, want %d", v, rev)
	}
	if kv, ok := m.Get("nodes/n1"); !ok || string(kv.Value) != "x" {
		t.Fatalf("Get = %v %v", kv, ok)
	}
	// A delete moves the version forward although nothing is left under the prefix.
	drev, err := st.Delete(ctx, "nodes/n1", store.Any())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WaitRevision(ctx, drev); err != nil {
		t.Fatal(err)
	}
	if v := m.Version("nodes/"); v != drev {
		t.Fatalf("after delete Version(nodes/) = %d, want %d", v, drev)
	}
	if got := m.List("nodes/"); len(got) != 0 {
		t.Fatalf("List after delete = %v", got)
	}
	if v := m.Version("acks/"); v >= drev {
		t.Fatalf("Version(acks/) = %d moved with an unrelated delete", v)
	}
}

// TestFreshWaitsForProgress builds from two mirrors: after a change under only one of them, the other
// is behind until etcd confirms its progress, and Fresh says so until then.
func TestFreshWaitsForProgress(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	a := New(c.Namespace("/a/"), "", etcdtest.Logger(t))
	b := New(c.Namespace("/b/"), "", etcdtest.Logger(t))
	for _, m := range []*Mirror{a, b} {
		go func() { _ = m.Run(ctx) }()
		if err := m.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rev, err := c.Namespace("/b/").Put(ctx, "k", []byte("v"), store.Any())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if a.Revision() >= rev {
		t.Fatalf("mirror a is at %d without any change under its prefix; the test needs it behind %d", a.Revision(), rev)
	}
	woken := a.ChangedUnder("anything/")
	deadline := time.Now().Add(10 * time.Second)
	for !Fresh(rev, a, b) {
		if time.Now().After(deadline) {
			t.Fatalf("mirror a never confirmed revision %d (at %d)", rev, a.Revision())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-woken:
	default:
		t.Fatal("the progress notification did not wake ChangedUnder followers")
	}
}

// TestWaitRevisionEndsWhenStopped: a handler waiting for its write must not hold the server's
// graceful stop once the mirror no longer follows etcd.
func TestWaitRevisionEndsWhenStopped(t *testing.T) {
	c := etcdtest.Start(t)
	m := New(c.Namespace("/t/"), "", etcdtest.Logger(t))
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() { _ = m.Run(ctx); close(stopped) }()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-stopped
	err := m.WaitRevision(t.Context(), m.Revision()+1000)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("WaitRevision on a stopped mirror = %v, want ErrUnavailable", err)
	}
}

// TestChangesSince: followers learn which keys changed since the revision they last saw, and are told
// to rebuild everything when the mirror cannot say.
func TestChangesSince(t *testing.T) {
	st, m := startMirror(t)
	ctx := t.Context()
	start := m.Revision()
	if _, _, complete := m.ChangesSince(start - 1); complete {
		t.Fatal("changes before the initial load reported as complete")
	}
	var last int64
	for _, k := range []string{"nodes/a", "acks/a", "nodes/b"} {
		rev, err := st.Put(ctx, k, []byte("x"), store.Any())
		if err != nil {
			t.Fatal(err)
		}
		last = rev
	}
	if _, err := st.Delete(ctx, "nodes/a", store.Any()); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitRevision(ctx, last+1); err != nil {
		t.Fatal(err)
	}
	keys, upTo, complete := m.ChangesSince(start)
	if !complete || upTo != last+1 || !slices.Equal(keys, []string{"nodes/a", "acks/a", "nodes/b", "nodes/a"}) {
		t.Fatalf("ChangesSince(%d) = %v up to %d (complete %v), want the four changes up to %d", start, keys, upTo, complete, last+1)
	}
	keys, _, complete = m.ChangesSince(last)
	if !complete || !slices.Equal(keys, []string{"nodes/a"}) {
		t.Fatalf("ChangesSince(%d) = %v (complete %v), want the delete only", last, keys, complete)
	}
}

// TestProgressKeepsChangesComplete: an etcd progress report (asked for by any mirror on the same watch
// stream, so frequent under load) changes no key and must not make followers rebuild everything.
func TestProgressKeepsChangesComplete(t *testing.T) {
	client := etcdtest.Start(t)
	m := New(client.Namespace("/t/"), "", etcdtest.Logger(t))
	go func() { _ = m.Run(t.Context()) }()
	ctx := t.Context()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// The first call starts the change log at the current revision.
	before := m.Revision()
	if _, _, complete := m.ChangesSince(before); !complete {
		t.Fatal("no change yet, but not complete")
	}
	// A write outside the mirror's prefix: the mirror learns of the new revision only from progress.
	resp, err := client.Raw().Put(ctx, "/elsewhere/x", "1")
	if err != nil {
		t.Fatal(err)
	}
	// Fresh asks etcd for progress until the mirror reaches the revision.
	etcdtest.Eventually(t, 10*time.Second, func() bool { return Fresh(resp.Header.Revision, m) }, "progress report arrives")
	keys, upTo, complete := m.ChangesSince(before)
	if !complete || len(keys) != 0 || upTo < resp.Header.Revision {
		t.Fatalf("after a progress report: ChangesSince = %v up to %d (complete %v); want nothing changed, complete, up to %d", keys, upTo, complete, resp.Header.Revision)
	}
}
