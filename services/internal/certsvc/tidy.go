package certsvc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/store"
)

// tidyBatch is how many certificates one tidy transaction removes: each costs up to three deletes and
// two conditions plus the batch's audit event, under etcd's default limit of 128 operations.
const tidyBatch = 24

// defaultTidyMax bounds one tidy run, so a backlog (the first run after an upgrade, a retention
// shortened) is worked off in runs a minute apart (CRLCheck) instead of one long burst of writes
// that agents' acknowledgements would queue behind.
const defaultTidyMax = 10_000

// tidy removes what etcd holds about certificates that expired more than Retention before now and are
// no node's current certificate: the certificate record, its entry in the node's index and, while it
// still names this certificate, the by-key entry. Revocation entries are not touched here: each CRL
// re-sign drops the expired ones. Without tidy, etcd and every replica's mirror grow with every
// renewal (10,000 nodes add 15,000 records a day for their identity certificates alone, which last
// 24 h and are renewed after 16) until etcd's quota stops all writes.
//
// The records are read from the mirror and every delete is guarded by the revision it was read at, so a
// record changed in between makes that batch fail harmlessly; the next run sees the new state. It
// returns how many certificates it removed and whether it stopped at Config.tidyMax with more to do.
func (s *Service) tidy(ctx context.Context, now time.Time) (pruned int, more bool, err error) {
	m := s.cfg.View.Mirror()
	cutoff := now.Add(-s.cfg.Retention)
	ctx = audit.System(ctx, s.cfg.Authority.TrustDomain(), s.cfg.ReplicaID)
	var (
		ops     []store.Op
		conds   []store.Cond
		serials []string
		seen    int
		errs    []error
		lastRev int64
	)
	flush := func() {
		if len(serials) == 0 {
			return
		}
		ev := audit.Event{Target: "certificates", Outcome: audit.Success, Reason: "records of expired certificates pruned",
			Details: map[string]string{"count": strconv.Itoa(len(serials)), "serials": strings.Join(serials, ","), "retention": s.cfg.Retention.String()}}
		if rev, err := s.st.Txn(ctx, conds, append(ops, s.cfg.Audit.Op(ctx, ev))); err != nil {
			errs = append(errs, err)
		} else {
			lastRev = rev
			pruned += len(serials)
			s.pruned.Add(float64(len(serials)))
		}
		ops, conds, serials = nil, nil, nil
	}
	for _, kv := range m.List(prefCerts) {
		if ctx.Err() != nil {
			break
		}
		if seen == s.cfg.tidyMax {
			more = true
			break
		}
		rec, err := s.cfg.View.certRecs.Decode(kv)
		if err != nil {
			s.cfg.Log.Warn("unreadable certificate record left in place", "key", kv.Key, "err", err)
			continue
		}
		if rec.NotAfter.After(cutoff) {
			continue
		}
		// A node that has been offline since its certificate expired still has it as current: its
		// status and its next renewal refer to that record.
		if cur, ok := m.Get(keyCurrent(rec.NodeID, rec.Kind)); ok && rec.NodeID != "" && string(cur.Value) == rec.Serial {
			continue
		}
		ops = append(ops, store.DeleteOp(kv.Key))
		conds = append(conds, store.AtRevision(kv.Key, kv.ModRevision))
		if rec.NodeID != "" {
			ops = append(ops, store.DeleteOp(keyNodeCert(rec.NodeID, rec.Serial)))
			if bk, ok := m.Get(keyByKey(rec.NodeID, rec.Kind, rec.PubKeyID)); ok && string(bk.Value) == rec.Serial {
				ops = append(ops, store.DeleteOp(bk.Key))
				conds = append(conds, store.AtRevision(bk.Key, bk.ModRevision))
			}
		}
		serials = append(serials, rec.Serial)
		seen++
		if len(serials) == tidyBatch {
			flush()
		}
	}
	flush()
	// The next run reads the mirror again: it must not find this run's records still there.
	if lastRev > 0 {
		if err := m.WaitRevision(ctx, lastRev); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return pruned, more, fmt.Errorf("prune expired certificate records (%d batches failed): %w", len(errs), err)
	}
	return pruned, more, nil
}
