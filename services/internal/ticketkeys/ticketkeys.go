// Package ticketkeys keeps the TLS session-ticket keys every wardend replica shares. With them an agent
// that reconnects after a restart, or fails over to another replica, resumes its TLS session instead of
// repeating the full handshake (certificate chains verified and signatures made on both sides), which is
// most of the cost of a reconnect storm.
//
// The keys are sealed in etcd like every other secret, so a dump does not reveal them and RewrapSealed
// re-wraps them with the rest. The elected replica rotates them; a ticket stays usable while the key that
// encrypted it is one of the two kept, i.e. for at most two rotation periods.
package ticketkeys

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/store"
)

const (
	// Prefix is the namespace of TLS state shared by replicas.
	Prefix = "/warden/tls/"
	// Key holds the sealed keys, relative to Prefix.
	Key = "session-ticket-keys"
	// Election elects the replica that rotates the keys.
	Election = "tls-ticket-keys"
	// DefaultRotation is how often the encrypting key is replaced.
	DefaultRotation = 24 * time.Hour
	// kept is how many keys decrypt: the current one and its predecessor, so tickets issued just before
	// a rotation still resume.
	kept = 2
)

// record is the sealed value.
type record struct {
	// Keys are the ticket keys, the encrypting one first.
	Keys [][]byte `json:"keys"`
	// Rotated is when Keys[0] was made.
	Rotated time.Time `json:"rotated"`
}

// Config is what Keys needs.
type Config struct {
	Client    *store.Client
	Seal      *seal.Keyring
	ReplicaID string
	Log       *slog.Logger
	// Rotation defaults to DefaultRotation.
	Rotation time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
}

// Keys loads, follows and (on the elected replica) rotates the shared keys.
type Keys struct {
	cfg Config
	ns  *store.Store
	aad string
}

// New returns Keys for cfg.
func New(cfg Config) *Keys {
	if cfg.Rotation <= 0 {
		cfg.Rotation = DefaultRotation
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// The AAD is the full etcd key, as for every sealed value (RewrapSealed relies on it).
	return &Keys{cfg: cfg, ns: cfg.Client.Namespace(Prefix), aad: Prefix + Key}
}

// Load returns the stored keys, or none when no replica has made them yet.
func (k *Keys) Load(ctx context.Context) ([][32]byte, error) {
	kv, err := k.ns.Get(ctx, Key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("session ticket keys: %w", err)
	}
	rec, err := k.open(kv.Value)
	if err != nil {
		return nil, err
	}
	return rec.keys(), nil
}

// Ensure returns the stored keys, making the first ones if no replica has yet: a replica then never
// serves with keys of its own, whose tickets no other replica (nor itself after a restart) could open.
func (k *Keys) Ensure(ctx context.Context) ([][32]byte, error) {
	keys, err := k.Load(ctx)
	if err != nil || len(keys) > 0 {
		return keys, err
	}
	// Absent: the write is conditional on that, so replicas starting together make one set.
	if _, err := k.rotateIfDue(ctx); err != nil {
		return nil, err
	}
	return k.Load(ctx)
}

// Run feeds apply every change of the stored keys until ctx is done, and rotates them while this replica
// holds the election.
func (k *Keys) Run(ctx context.Context, apply func([][32]byte)) error {
	elected := make(chan error, 1)
	go func() {
		elected <- k.cfg.Client.RunElected(ctx, Election, k.cfg.ReplicaID, k.rotateLoop)
	}()
	for b := range k.ns.Watch(ctx, Key, 0) {
		for _, ev := range b.Events {
			if ev.Type != store.EventPut || ev.KV.Key != Key {
				continue
			}
			rec, err := k.open(ev.KV.Value)
			if err != nil {
				// Another replica with a keyring that lacks this KEK: keep resuming with what we had.
				k.cfg.Log.Error("cannot open the shared TLS session ticket keys; resumption keeps the previous keys", "err", err)
				continue
			}
			apply(rec.keys())
		}
	}
	return <-elected
}

// rotateLoop replaces the encrypting key every rotation period (and makes the first keys if Ensure did not).
func (k *Keys) rotateLoop(ctx context.Context) error {
	for {
		next, err := k.rotateIfDue(ctx)
		if err != nil {
			k.cfg.Log.Error("rotating TLS session ticket keys failed; retrying in 30s", "err", err)
			next = 30 * time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// rotateIfDue rotates when the encrypting key is older than the period and returns how long until the
// next rotation is due. The write is conditional on the value read, so two replicas that both believe
// they lead (a lease about to expire) rotate once, not twice.
func (k *Keys) rotateIfDue(ctx context.Context) (time.Duration, error) {
	cond := store.MustNotExist(Key)
	var cur record
	kv, err := k.ns.Get(ctx, Key)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return 0, err
	default:
		if cur, err = k.open(kv.Value); err != nil {
			return 0, err
		}
		cond = store.AtRevision(Key, kv.ModRevision)
	}
	now := k.cfg.Now()
	if due := cur.Rotated.Add(k.cfg.Rotation); len(cur.Keys) > 0 && now.Before(due) {
		return due.Sub(now), nil
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return 0, err
	}
	next := record{Keys: append([][]byte{fresh}, cur.Keys[:min(len(cur.Keys), kept-1)]...), Rotated: now}
	val, err := k.seal(next)
	if err != nil {
		return 0, err
	}
	if _, err := k.ns.Put(ctx, Key, val, cond); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return 0, nil // rotated by another replica meanwhile: read again at once
		}
		return 0, fmt.Errorf("store session ticket keys: %w", err)
	}
	k.cfg.Log.Info("rotated TLS session ticket keys", "kept", len(next.Keys))
	return k.cfg.Rotation, nil
}

func (k *Keys) seal(rec record) ([]byte, error) {
	plain, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	return k.cfg.Seal.Seal(plain, k.aad)
}

func (k *Keys) open(sealed []byte) (record, error) {
	plain, err := k.cfg.Seal.Open(sealed, k.aad)
	if err != nil {
		return record{}, fmt.Errorf("open session ticket keys: %w", err)
	}
	var rec record
	if err := json.Unmarshal(plain, &rec); err != nil {
		return record{}, fmt.Errorf("decode session ticket keys: %w", err)
	}
	for i, key := range rec.Keys {
		if len(key) != 32 {
			return record{}, fmt.Errorf("session ticket key %d has %d bytes, want 32", i, len(key))
		}
	}
	return rec, nil
}

func (r record) keys() [][32]byte {
	out := make([][32]byte, len(r.Keys))
	for i, key := range r.Keys {
		copy(out[i][:], key)
	}
	return out
}
