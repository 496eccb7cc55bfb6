package store

import (
	"context"
	"fmt"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// GrantLease creates a lease of at least ttl (etcd counts in whole seconds
// and may raise short TTLs to its minimum). Keys written with
// PutWithLeaseOp are deleted when it expires.
func (s *Store) GrantLease(ctx context.Context, ttl time.Duration) (int64, error) {
	secs := max(int64(math.Ceil(ttl.Seconds())), 1)
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	resp, err := s.c.raw.Grant(ctx, secs)
	if err != nil {
		return 0, fmt.Errorf("grant lease: %w", mapErr(err))
	}
	return int64(resp.ID), nil
}

// KeepAlive renews the lease until ctx is done. The returned channel is
// closed when the lease is lost (expired, revoked, or not renewable before
// its TTL ran out) or when ctx is done; after that the lease's keys must be
// presumed gone.
func (s *Store) KeepAlive(ctx context.Context, id int64) (<-chan struct{}, error) {
	ch, err := s.c.raw.KeepAlive(ctx, clientv3.LeaseID(id))
	if err != nil {
		return nil, fmt.Errorf("keep lease %x alive: %w", id, mapErr(err))
	}
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		// Renewal responses carry nothing we need; only the channel closing
		// matters.
		for range ch {
		}
	}()
	return lost, nil
}

// RevokeLease ends the lease now, deleting its keys; ErrNotFound if it does
// not exist (any more).
func (s *Store) RevokeLease(ctx context.Context, id int64) error {
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	if _, err := s.c.raw.Revoke(ctx, clientv3.LeaseID(id)); err != nil {
		return fmt.Errorf("revoke lease %x: %w", id, mapErr(err))
	}
	return nil
}
