// Package store is the only package that talks to etcd. It offers a narrow,
// domain-neutral view: opaque values under a per-service key prefix, reads and
// writes that carry revisions, transactions guarded by revision compares,
// resumable watches, leases and leader election.
//
// Every call except a watch runs under the Client's operation timeout, and
// every error is either one of the sentinels below or wraps the etcd error
// with the operation that failed.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultOpTimeout is used when Open is given no operation timeout.
const DefaultOpTimeout = 5 * time.Second

var (
	// ErrNotFound: the key (or lease) does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a transaction condition failed, so nothing was written.
	ErrConflict = errors.New("store: condition failed")
	// ErrUnavailable: etcd could not be reached, has no leader, or did not
	// answer before the deadline. The operation may be retried; a write may
	// or may not have been applied.
	ErrUnavailable = errors.New("store: etcd unavailable")
	// ErrCompacted: the requested revision has been compacted away.
	ErrCompacted = errors.New("store: revision compacted")
)

// ConflictError is the ErrConflict of a transaction: Rev is the store's revision when its conditions
// were evaluated. A caller that read its inputs from a mirror waits for the mirror to reach Rev before
// retrying, so that the retry sees the write that caused the conflict.
type ConflictError struct{ Rev int64 }

func (e *ConflictError) Error() string        { return ErrConflict.Error() }
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// ConflictRevision returns the revision carried by a transaction's ErrConflict (0 if err has none).
func ConflictRevision(err error) int64 {
	var ce *ConflictError
	if errors.As(err, &ce) {
		return ce.Rev
	}
	return 0
}

// Client is a shared connection to etcd from which namespaced Stores are cut.
type Client struct {
	raw       *clientv3.Client
	opTimeout time.Duration
	log       *slog.Logger
}

// Open dials etcd and checks that it answers. opTimeout bounds every
// non-watch call (DefaultOpTimeout if zero); ctx bounds only the dial.
func Open(ctx context.Context, cfg clientv3.Config, opTimeout time.Duration, log *slog.Logger) (*Client, error) {
	if opTimeout <= 0 {
		opTimeout = DefaultOpTimeout
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.Logger == nil {
		// The etcd client logs every retried call at warn; the errors it
		// returns reach our callers, who decide what is worth logging.
		cfg.Logger = zap.NewNop()
	}
	raw, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: dial etcd %v: %w", cfg.Endpoints, mapErr(err))
	}
	c := &Client{raw: raw, opTimeout: opTimeout, log: log.With("component", "store")}
	if err := c.Ping(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("store: dial etcd %v: %w", cfg.Endpoints, err)
	}
	return c, nil
}

// Namespace returns a Store whose keys are all relative to prefix, for
// example "/warden/cert/". Stores are cheap and share the Client's connection.
func (c *Client) Namespace(prefix string) *Store {
	return &Store{
		c:       c,
		prefix:  prefix,
		kv:      namespace.NewKV(c.raw.KV, prefix),
		watcher: namespace.NewWatcher(c.raw.Watcher, prefix),
	}
}

// Raw exposes the etcd client for the health check and for tests that scan
// the raw keyspace. Domain code uses Stores.
func (c *Client) Raw() *clientv3.Client { return c.raw }

// Ping is a cheap liveness probe. It is a linearizable read, so it also fails
// when the cluster has no quorum, not only when the endpoint is down.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	if _, err := c.raw.Get(ctx, "/warden/ping", clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("ping: %w", mapErr(err))
	}
	return nil
}

// Close closes the connection; Stores, watches and elections cut from it
// stop working.
func (c *Client) Close() error {
	if err := c.raw.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

func (c *Client) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opTimeout)
}

// mapErr turns etcd and gRPC errors into the package's sentinels while
// keeping the original in the chain for logs. A caller's own cancellation is
// left alone: it is not etcd being unavailable.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrGRPCCompacted) {
		return fmt.Errorf("%w: %w", ErrCompacted, err)
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, clientv3.ErrNoAvailableEndpoints) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// etcd reports no leader, leader changes, server timeouts and stopped
	// servers as Unavailable; the client may have decoded them to EtcdError.
	code := status.Code(err)
	var etcdErr rpctypes.EtcdError
	if errors.As(err, &etcdErr) {
		code = etcdErr.Code()
	}
	if code == codes.Unavailable || code == codes.DeadlineExceeded {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
