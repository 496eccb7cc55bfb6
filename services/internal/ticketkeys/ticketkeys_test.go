package ticketkeys

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

func keyring(t *testing.T) *seal.Keyring {
	t.Helper()
	k, err := seal.NewKeyring(seal.KEK{ID: "test", Key: [32]byte{9, 8, 7}})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRotation drives the elected replica's rotation with a fake clock against a real etcd: the first
// keys appear, nothing changes before the period ends, then a new key encrypts and the previous one
// still decrypts, and the oldest is dropped.
func TestRotation(t *testing.T) {
	client := etcdtest.Start(t)
	now := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	k := New(Config{Client: client, Seal: keyring(t), ReplicaID: "r1", Log: etcdtest.Logger(t), Rotation: time.Hour, Now: func() time.Time { return now }})
	ctx := t.Context()

	if got, err := k.Load(ctx); err != nil || got != nil {
		t.Fatalf("Load before any rotation = %v, %v; want none", got, err)
	}
	step := func(wantNext time.Duration) [][32]byte {
		t.Helper()
		next, err := k.rotateIfDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if next != wantNext {
			t.Fatalf("next rotation in %v, want %v", next, wantNext)
		}
		got, err := k.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	first := step(time.Hour)
	if len(first) != 1 || first[0] == ([32]byte{}) {
		t.Fatalf("first keys = %d, want one non-zero key", len(first))
	}
	now = now.Add(40 * time.Minute)
	if again := step(20 * time.Minute); len(again) != 1 || again[0] != first[0] {
		t.Fatal("keys changed before the rotation period ended")
	}
	now = now.Add(20 * time.Minute)
	second := step(time.Hour)
	if len(second) != 2 || second[1] != first[0] || second[0] == first[0] {
		t.Fatalf("after one rotation: want [new, previous], got %d keys (previous kept: %v)", len(second), len(second) == 2 && second[1] == first[0])
	}
	now = now.Add(time.Hour)
	third := step(time.Hour)
	if len(third) != kept || third[1] != second[0] {
		t.Fatalf("after two rotations: want %d keys, the previous one second; got %d", kept, len(third))
	}

	// Sealed: the raw value in etcd holds none of the key bytes.
	resp, err := client.Raw().Get(ctx, Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("%d keys under %s, want 1", len(resp.Kvs), Prefix)
	}
	for _, key := range third {
		if bytes.Contains(resp.Kvs[0].Value, key[:]) {
			t.Fatal("a session ticket key is stored in the clear")
		}
	}
}

// TestReplicasFollowTheKeys runs two replicas: both receive the keys the elected one made, and both
// receive the next rotation.
func TestReplicasFollowTheKeys(t *testing.T) {
	client := etcdtest.Start(t)
	seal := keyring(t)
	type seen struct {
		mu   sync.Mutex
		keys [][32]byte
	}
	run := func(id string, s *seen) {
		k := New(Config{Client: client, Seal: seal, ReplicaID: id, Log: etcdtest.Logger(t), Rotation: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- k.Run(ctx, func(keys [][32]byte) { s.mu.Lock(); s.keys = keys; s.mu.Unlock() })
		}()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("replica %s: %v", id, err)
			}
		})
	}
	var a, b seen
	run("r1", &a)
	run("r2", &b)
	current := func(s *seen) [][32]byte { s.mu.Lock(); defer s.mu.Unlock(); return s.keys }
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		ka, kb := current(&a), current(&b)
		return len(ka) == 1 && len(kb) == 1 && ka[0] == kb[0]
	}, "both replicas hold the same first key")

	// Another replica's rotation (here: a third instance whose clock is a day ahead) reaches both.
	ahead := New(Config{Client: client, Seal: seal, ReplicaID: "r3", Log: etcdtest.Logger(t), Rotation: time.Hour,
		Now: func() time.Time { return time.Now().Add(24 * time.Hour) }})
	if _, err := ahead.rotateIfDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		ka, kb := current(&a), current(&b)
		return len(ka) == 2 && len(kb) == 2 && ka[0] == kb[0] && ka[1] == kb[1]
	}, "both replicas hold the rotated keys")
}
