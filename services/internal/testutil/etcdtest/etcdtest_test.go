package etcdtest

import (
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/store"
)

func TestStart(t *testing.T) {
	began := time.Now()
	c := Start(t)
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("ping: %v", err)
	}
	t.Logf("embedded etcd ready in %s", time.Since(began))
}

func TestTwoClientsShareOneServer(t *testing.T) {
	srv := StartServer(t)
	a, b := Connect(t, srv), Connect(t, srv)
	if _, err := a.Namespace("/x/").Put(t.Context(), "k", []byte("v"), store.Any()); err != nil {
		t.Fatalf("put: %v", err)
	}
	kv, err := b.Namespace("/x/").Get(t.Context(), "k")
	if err != nil || string(kv.Value) != "v" {
		t.Fatalf("get through the second client: %+v, %v", kv, err)
	}
}
