package store

import (
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cond is a transaction condition on one key's ModRevision.
type Cond struct {
	set    bool
	key    string
	modRev int64
	ns     *Store
}

// Any is no condition.
func Any() Cond { return Cond{} }

// MustNotExist holds when key does not exist.
func MustNotExist(key string) Cond { return AtRevision(key, 0) }

// AtRevision holds when key's ModRevision is modRev: the key has not changed
// since it was read at that revision. modRev 0 means the key must not exist,
// since etcd compares a missing key's revisions as 0.
func AtRevision(key string, modRev int64) Cond {
	return Cond{set: true, key: key, modRev: modRev}
}

// In makes the condition apply to a key of ns instead of the Store running
// the transaction. ns must come from the same Client.
func (c Cond) In(ns *Store) Cond {
	c.ns = ns
	return c
}

type opKind int

const (
	opPut opKind = iota + 1
	opDelete
	opDeletePrefix
)

// Op is one write in a transaction.
type Op struct {
	kind  opKind
	key   string
	val   []byte
	lease int64
	ns    *Store
}

// PutOp writes key.
func PutOp(key string, val []byte) Op { return Op{kind: opPut, key: key, val: val} }

// PutWithLeaseOp writes key attached to a lease: the key is deleted when the
// lease expires or is revoked.
func PutWithLeaseOp(key string, val []byte, lease int64) Op {
	return Op{kind: opPut, key: key, val: val, lease: lease}
}

// DeleteOp deletes key; a missing key is not an error.
func DeleteOp(key string) Op { return Op{kind: opDelete, key: key} }

// DeletePrefixOp deletes every key starting with prefix.
func DeletePrefixOp(prefix string) Op { return Op{kind: opDeletePrefix, key: prefix} }

// In makes the op write to ns instead of the Store running the transaction,
// so one transaction can change a service's keys and append to the audit log
// atomically:
//
//	certs.Txn(ctx, conds, []store.Op{store.PutOp(id, cert), store.PutOp(ev, rec).In(audit)})
//
// ns must come from the same Client.
func (o Op) In(ns *Store) Op {
	o.ns = ns
	return o
}

// resolve reports false for the zero Op, which must not turn into a write.
func (o Op) resolve(prefix string) (clientv3.Op, bool) {
	key := prefix + o.key
	switch o.kind {
	case opPut:
		if o.lease != 0 {
			return clientv3.OpPut(key, string(o.val), clientv3.WithLease(clientv3.LeaseID(o.lease))), true
		}
		return clientv3.OpPut(key, string(o.val)), true
	case opDelete:
		return clientv3.OpDelete(key), true
	case opDeletePrefix:
		return clientv3.OpDelete(key, clientv3.WithPrefix()), true
	default:
		return clientv3.Op{}, false
	}
}
