package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

const (
	electionPrefix = "/warden/election/"
	// electionTTL is how long a crashed leader keeps leadership. A leader
	// that stops cleanly hands over at once, by revoking its session.
	electionTTL = 10 * time.Second

	electionRetryMin = 100 * time.Millisecond
	electionRetryMax = 5 * time.Second
)

var errSessionLost = errors.New("election session lost")

// RunElected campaigns for leadership of the election name with the given id
// and runs fn while it is leader. fn's context is cancelled when leadership
// is lost (the session's lease could not be renewed); RunElected then
// campaigns again. If fn returns nil while still leader, RunElected resigns
// and campaigns again. It returns nil when ctx is done (after revoking its
// session, which takes at most the op timeout), and fn's error if fn fails
// while still leader.
//
// Leadership is a lease and the leader learns of its loss only when renewal
// fails, so a leader cut off from etcd may briefly act after its successor
// is elected; writes that must never overlap need their own compare in the
// transaction.
func (c *Client) RunElected(ctx context.Context, name, id string, fn func(ctx context.Context) error) error {
	b := backoff{min: electionRetryMin, max: electionRetryMax}
	for ctx.Err() == nil {
		elected, fnErr, err := c.leadOnce(ctx, name, id, fn)
		if ctx.Err() != nil {
			return nil
		}
		if fnErr != nil {
			return fmt.Errorf("election %q: leader task: %w", name, fnErr)
		}
		if elected {
			b.reset()
		}
		if err != nil {
			c.log.Warn("election interrupted, campaigning again", "election", name, "id", id, "error", err)
		}
		if !b.wait(ctx) {
			return nil
		}
	}
	return nil
}

// leadOnce runs one session: campaign, then fn while leader.
func (c *Client) leadOnce(ctx context.Context, name, id string, fn func(ctx context.Context) error) (elected bool, fnErr, err error) {
	// The lease is granted here, under the op timeout, because the session's
	// own context must outlive ctx (so that the lease can still be revoked
	// after ctx is cancelled, handing leadership over at once rather than
	// after electionTTL) and would leave a grant against a dead etcd unbounded.
	gctx, gcancel := c.opCtx(ctx)
	lease, err := c.raw.Grant(gctx, int64(electionTTL/time.Second))
	gcancel()
	if err != nil {
		return false, nil, fmt.Errorf("grant session lease: %w", mapErr(err))
	}
	session, err := concurrency.NewSession(c.raw,
		concurrency.WithLease(lease.ID),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		c.revoke(ctx, lease.ID)
		return false, nil, fmt.Errorf("create session: %w", mapErr(err))
	}
	defer func() {
		session.Orphan()
		c.revoke(ctx, lease.ID)
	}()

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-session.Done():
			cancel()
		case <-lctx.Done():
		}
	}()

	e := concurrency.NewElection(session, electionPrefix+name)
	if err := e.Campaign(lctx, id); err != nil {
		if lctx.Err() != nil && ctx.Err() == nil {
			return false, nil, errSessionLost
		}
		return false, nil, fmt.Errorf("campaign: %w", mapErr(err))
	}
	// Campaign can return after the session died, its key gone with it.
	if lctx.Err() != nil {
		return false, nil, errSessionLost
	}

	c.log.Info("elected leader", "election", name, "id", id)
	fnErr = fn(lctx)
	switch {
	case ctx.Err() != nil:
		c.log.Info("resigning leadership", "election", name, "id", id)
		return true, nil, nil
	case lctx.Err() != nil:
		return true, nil, errSessionLost
	default:
		return true, fnErr, nil
	}
}

// revoke ends an election session's lease, which deletes its election key.
func (c *Client) revoke(ctx context.Context, id clientv3.LeaseID) {
	rctx, cancel := c.opCtx(context.WithoutCancel(ctx))
	defer cancel()
	if _, err := c.raw.Revoke(rctx, id); err != nil && !errors.Is(mapErr(err), ErrNotFound) {
		c.log.Warn("revoke election session; leadership passes on when it expires", "ttl", electionTTL, "error", err)
	}
}

// Leader returns the id of the current leader of the election name, or ""
// when there is none.
func (c *Client) Leader(ctx context.Context, name string) (string, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	resp, err := c.raw.Get(ctx, electionPrefix+name+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("leader of %q: %w", name, mapErr(err))
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
