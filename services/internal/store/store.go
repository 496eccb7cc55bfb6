package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is one key with its value and etcd's bookkeeping. Key is relative to the
// Store it was read from.
type KV struct {
	Key            string
	Value          []byte
	ModRevision    int64
	CreateRevision int64
	Version        int64
	Lease          int64
}

// Store is a view of etcd limited to one key prefix. Keys passed to and
// returned from a Store are relative to that prefix and must not be empty.
type Store struct {
	c       *Client
	prefix  string
	kv      clientv3.KV
	watcher clientv3.Watcher
}

// Get returns the key's current value, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (KV, error) {
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return KV{}, fmt.Errorf("get %q: %w", key, mapErr(err))
	}
	if len(resp.Kvs) == 0 {
		return KV{}, fmt.Errorf("get %q: %w", key, ErrNotFound)
	}
	return fromPB(resp.Kvs[0]), nil
}

// List returns keys that start with prefix and sort after the key after, in
// key order, at most limit of them (all if limit <= 0). rev is the revision
// the page was read at; more reports that keys remain past the last one
// returned, which the caller passes as after to read the next page. Pages are
// each consistent, not with each other.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) (kvs []KV, rev int64, more bool, err error) {
	start := prefix
	if after >= prefix {
		// The smallest key greater than after.
		start = after + "\x00"
	}
	if start == "" {
		// etcd rejects an empty key even as the start of a range.
		start = "\x00"
	}
	opts := []clientv3.OpOption{
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend),
	}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	resp, err := s.kv.Get(ctx, start, opts...)
	if err != nil {
		return nil, 0, false, fmt.Errorf("list %q after %q: %w", prefix, after, mapErr(err))
	}
	kvs = make([]KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		kvs[i] = fromPB(kv)
	}
	return kvs, resp.Header.Revision, resp.More, nil
}

// Txn applies ops if every cond holds, all or nothing, and returns the
// revision of the change. If a cond fails nothing is written and the error
// is ErrConflict.
func (s *Store) Txn(ctx context.Context, conds []Cond, ops []Op) (rev int64, err error) {
	resp, err := s.txn(ctx, conds, ops)
	if err != nil {
		return 0, fmt.Errorf("txn: %w", err)
	}
	return resp.Header.Revision, nil
}

// Put writes key if cond holds (Any() for an unconditional write).
func (s *Store) Put(ctx context.Context, key string, val []byte, cond Cond) (rev int64, err error) {
	resp, err := s.txn(ctx, []Cond{cond}, []Op{PutOp(key, val)})
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	return resp.Header.Revision, nil
}

// Delete removes key if cond holds. Deleting a key that does not exist is
// ErrNotFound when cond is Any(), and ErrConflict when cond expected it.
func (s *Store) Delete(ctx context.Context, key string, cond Cond) (rev int64, err error) {
	resp, err := s.txn(ctx, []Cond{cond}, []Op{DeleteOp(key)})
	if err != nil {
		return 0, fmt.Errorf("delete %q: %w", key, err)
	}
	if resp.Responses[0].GetResponseDeleteRange().GetDeleted() == 0 {
		return 0, fmt.Errorf("delete %q: %w", key, ErrNotFound)
	}
	return resp.Header.Revision, nil
}

// txn resolves every key to its absolute form and runs the transaction on
// the un-namespaced client. clientv3/namespace can only apply one prefix to a
// whole transaction, and ops may target other Stores (see Op.In).
func (s *Store) txn(ctx context.Context, conds []Cond, ops []Op) (*clientv3.TxnResponse, error) {
	cmps := make([]clientv3.Cmp, 0, len(conds))
	for _, c := range conds {
		if !c.set {
			continue
		}
		ns, err := s.target(c.ns)
		if err != nil {
			return nil, err
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(ns.prefix+c.key), "=", c.modRev))
	}
	then := make([]clientv3.Op, 0, len(ops))
	for _, op := range ops {
		ns, err := s.target(op.ns)
		if err != nil {
			return nil, err
		}
		resolved, ok := op.resolve(ns.prefix)
		if !ok {
			return nil, errors.New("empty Op")
		}
		then = append(then, resolved)
	}
	ctx, cancel := s.c.opCtx(ctx)
	defer cancel()
	resp, err := s.c.raw.Txn(ctx).If(cmps...).Then(then...).Commit()
	if err != nil {
		return nil, mapErr(err)
	}
	if !resp.Succeeded {
		return nil, &ConflictError{Rev: resp.Header.Revision}
	}
	return resp, nil
}

func (s *Store) target(ns *Store) (*Store, error) {
	if ns == nil {
		return s, nil
	}
	if ns.c != s.c {
		// A transaction runs on one connection; silently writing the other
		// Store's keys through ours could hit a different cluster.
		return nil, errors.New("op targets a Store of another Client")
	}
	return ns, nil
}

func fromPB(kv *mvccpb.KeyValue) KV {
	return KV{
		Key:            string(kv.Key),
		Value:          kv.Value,
		ModRevision:    kv.ModRevision,
		CreateRevision: kv.CreateRevision,
		Version:        kv.Version,
		Lease:          kv.Lease,
	}
}
