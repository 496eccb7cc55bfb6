package secretsvc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/store"
)

// generatedSize is the length of a server-generated value.
const generatedSize = 32

func generateValue() ([]byte, error) {
	b := make([]byte, generatedSize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate secret value: %w", err)
	}
	return b, nil
}

func target(name string) string { return "secret/" + name }

// sealOp seals value as version n of name.
func (s *Service) sealOp(name string, n uint64, value []byte) (store.Op, error) {
	key := keyValue(name, n)
	sealed, err := s.cfg.Seal.Seal(value, aad(key))
	if err != nil {
		return store.Op{}, fmt.Errorf("seal %s version %d: %w", name, n, err)
	}
	return store.PutOp(key, sealed), nil
}

// newSecretOps gives rec its first version, active at once (nothing to stage against), and returns the
// puts of the record and the sealed value.
func (s *Service) newSecretOps(rec *secretRecord, value []byte, supplied bool, now time.Time) ([]store.Op, error) {
	rec.Latest = 1
	rec.Versions = []versionRecord{{Number: 1, State: stateActive, CreatedAt: now, ActivatedAt: now, Supplied: supplied}}
	rec.RotatedAt = now
	op, err := s.sealOp(rec.Name, 1, value)
	if err != nil {
		return nil, err
	}
	put, err := putOp(keyMeta(rec.Name), rec)
	if err != nil {
		return nil, err
	}
	return []store.Op{put, op}, nil
}

// systemContext attributes automatic transitions to the control plane in the audit log.
func (s *Service) systemContext(ctx context.Context) context.Context {
	return audit.System(ctx, s.cfg.TrustDomain, s.cfg.ReplicaID)
}

// nodesInScope yields the registered nodes sc selects, sorted by id. It does not copy the fleet's list:
// allAcked runs on every burst of acknowledgements, and the copies showed as 73 MB of a 10,000-agent
// wardend's heap in a profile taken during a rotation step.
func (s *Service) nodesInScope(sc scope) iter.Seq[certsvc.Node] {
	return func(yield func(certsvc.Node) bool) {
		for _, n := range s.cfg.Certs.Nodes("") {
			if sc.includes(n) && !yield(n) {
				return
			}
		}
	}
}

func (s *Service) ackOf(node string) (ackRecord, bool) {
	kv, ok := s.acks.Get(keyAck(node))
	if !ok {
		return ackRecord{}, false
	}
	a, err := s.ackRecs.Decode(kv)
	if err != nil {
		s.log.Warn("unreadable acknowledgement; treating the node as not acknowledged", "node", node, "err", err)
		return ackRecord{}, false
	}
	return a, true
}

// pending lists the in-scope nodes that have not acknowledged holding version n of rec.
func (s *Service) pending(rec *secretRecord, n uint64) []string {
	var out []string
	for node := range s.nodesInScope(rec.Scope) {
		if a, ok := s.ackOf(node.ID); !ok || !a.holds(rec.Name, n) {
			out = append(out, node.ID)
		}
	}
	return out
}

// allAcked reports whether every in-scope node holds version n of rec; it stops at the first that does
// not, since it runs on every acknowledgement.
func (s *Service) allAcked(rec *secretRecord, n uint64) bool {
	for node := range s.nodesInScope(rec.Scope) {
		if a, ok := s.ackOf(node.ID); !ok || !a.holds(rec.Name, n) {
			return false
		}
	}
	return true
}

// evaluate applies the transitions due for the secret whose meta is kv: promotion of a staged version
// every in-scope node holds and, when full, retirement after the grace period and scheduled rotation.
// It commits them in one Txn guarded by kv's revision and returns that revision (0 when nothing was due).
// A store.ErrConflict means another replica or an operator changed the secret first.
func (s *Service) evaluate(ctx context.Context, kv store.KV, now time.Time, full bool) (int64, error) {
	rec, err := decode[secretRecord](kv)
	if err != nil {
		return 0, err
	}
	var events []audit.Event
	var ops []store.Op
	if st, ok := rec.byState(stateStaged); ok && s.allAcked(&rec, st.Number) {
		rec.promote(st.Number, now)
		events = append(events, audit.Event{
			Reason:  "every node in scope acknowledged the staged version",
			Details: map[string]string{"action": "promote", "version": strconv.FormatUint(st.Number, 10)},
		})
	}
	if full {
		for _, n := range rec.retireExpired(now) {
			ops = append(ops, store.DeleteOp(keyValue(rec.Name, n)))
			events = append(events, audit.Event{
				Reason:  "grace period ended",
				Details: map[string]string{"action": "retire", "version": strconv.FormatUint(n, 10)},
			})
		}
		_, staged := rec.byState(stateStaged)
		if rec.RotationPeriod > 0 && !staged && !now.Before(rec.RotatedAt.Add(rec.RotationPeriod)) {
			value, err := generateValue()
			if err != nil {
				return 0, err
			}
			v := rec.stage(now, false)
			op, err := s.sealOp(rec.Name, v.Number, value)
			if err != nil {
				return 0, err
			}
			ops = append(ops, op)
			events = append(events, audit.Event{
				Reason:  "scheduled rotation",
				Details: map[string]string{"action": "rotate", "version": strconv.FormatUint(v.Number, 10)},
			})
			if s.allAcked(&rec, v.Number) {
				rec.promote(v.Number, now)
				events = append(events, audit.Event{
					Reason:  "no node in scope: promoted at once",
					Details: map[string]string{"action": "promote", "version": strconv.FormatUint(v.Number, 10)},
				})
			}
		}
	}
	if len(events) == 0 {
		return 0, nil
	}
	put, err := putOp(keyMeta(rec.Name), rec)
	if err != nil {
		return 0, err
	}
	ops = append(ops, put)
	actx := s.systemContext(ctx)
	for _, ev := range events {
		ev.Target, ev.Outcome = target(rec.Name), audit.Success
		ops = append(ops, s.cfg.Audit.Op(actx, ev))
	}
	rev, err := s.cfg.Store.Txn(ctx, []store.Cond{store.AtRevision(kv.Key, kv.ModRevision)}, ops)
	if err != nil {
		return 0, fmt.Errorf("secret %s: %w", rec.Name, err)
	}
	for _, ev := range events {
		s.log.Info("secret version transition", "secret", rec.Name, "action", ev.Details["action"], "version", ev.Details["version"], "reason", ev.Reason)
	}
	return rev, nil
}

// metas lists the meta entries of every secret in the mirror, sorted by name.
func (s *Service) metas() []store.KV {
	var out []store.KV
	for _, kv := range s.secrets.List(prefSecrets) {
		if _, ok := nameOfMeta(kv.Key); ok {
			out = append(out, kv)
		}
	}
	return out
}

// tick is one pass of the rotation loop.
func (s *Service) tick(ctx context.Context) {
	now := s.cfg.Now()
	for _, kv := range s.metas() {
		if _, err := s.evaluate(ctx, kv, now, true); err != nil && !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
			s.log.Warn("secret rotation step failed; retrying next tick", "key", kv.Key, "err", err)
		}
	}
	s.forgetGoneNodes(ctx)
}

// promoteReady promotes every staged version that every in-scope node now holds; called after an
// acknowledgement so a rotation completes without waiting for the loop.
func (s *Service) promoteReady(ctx context.Context) {
	now := s.cfg.Now()
	for _, kv := range s.metas() {
		if _, err := s.evaluate(ctx, kv, now, false); err != nil && !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
			s.log.Warn("promote after acknowledgement failed; the rotation loop retries", "key", kv.Key, "err", err)
		}
	}
}

// forgetGoneNodes deletes the acknowledgements of nodes no longer in the registry, so they neither
// linger in ListClockSkew nor count if a node of the same id is created again.
func (s *Service) forgetGoneNodes(ctx context.Context) {
	for _, kv := range s.acks.List(prefAcks) {
		id := strings.TrimPrefix(kv.Key, prefAcks)
		if _, ok := s.cfg.Certs.Node(id); ok {
			continue
		}
		if _, err := s.cfg.Store.Txn(ctx, []store.Cond{store.AtRevision(kv.Key, kv.ModRevision)}, []store.Op{store.DeleteOp(kv.Key)}); err != nil &&
			!errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
			s.log.Warn("delete the acknowledgement of a removed node", "node", id, "err", err)
		}
	}
}
