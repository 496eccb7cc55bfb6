// Package etcdtest starts a real embedded etcd for tests in other packages, and holds the few helpers
// those tests share (Eventually, FreeAddr). It is imported only by tests.
package etcdtest

import (
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/etcdembed"
	"github.com/warden-sec/warden/services/internal/store"
)

// opTimeout is the store's usual default: tests share a loaded machine under
// -race, and a shorter bound would turn slowness into flaky ErrUnavailable.
const opTimeout = store.DefaultOpTimeout

// StartServer starts an embedded etcd in a fresh temporary directory and
// stops it when the test ends.
func StartServer(t testing.TB) *etcdembed.Server {
	t.Helper()
	srv, err := etcdembed.Start(t.Context(), etcdembed.Config{DataDir: t.TempDir(), Log: Logger(t)})
	if err != nil {
		t.Fatalf("etcdtest: start embedded etcd: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("etcdtest: stop embedded etcd: %v", err)
		}
	})
	return srv
}

// Start starts an embedded etcd and returns a client connected to it; both
// are closed when the test ends.
func Start(t testing.TB) *store.Client {
	t.Helper()
	return Connect(t, StartServer(t))
}

// Connect opens another client to srv, closed when the test ends: tests of
// failover need two clients with separate sessions.
func Connect(t testing.TB, srv *etcdembed.Server) *store.Client {
	t.Helper()
	c, err := store.Open(t.Context(), srv.ClientConfig(), opTimeout, Logger(t))
	if err != nil {
		t.Fatalf("etcdtest: connect: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("etcdtest: close client: %v", err)
		}
	})
	return c
}

// Logger logs warnings and errors through t.Log, so they show with the test
// that caused them and only when it fails or runs with -v.
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	// t.Log panics once the test has finished, and etcd's goroutines may
	// still log while they wind down.
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FreeAddr returns a loopback address with a port that was free a moment ago, for a child process or
// server that must be told its address before it listens.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
