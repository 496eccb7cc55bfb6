package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/store"
)

// The audit log is read through the raw etcd client because the Store API only scans forwards, and
// the log is read newest first and pruned oldest first, both in pages over millions of keys.

// Query filters a listing. Zero fields do not filter.
type Query struct {
	Actor        string
	Method       string // substring of the full method name
	TargetPrefix string
	Outcome      Outcome
	Since        time.Time
	// Before is the key (id) of the last event of the previous page; the listing continues after it.
	Before string
	Limit  int
	// MaxScan bounds how many events one call examines, so a filter that matches nothing cannot make
	// one request walk the whole log; the caller continues from Next.
	MaxScan int
}

// Entry is one stored event with the etcd revision that wrote it.
type Entry struct {
	Event    *adminv1.AuditEvent
	Revision int64
}

// Page is the result of List. Next is empty when nothing older is left to examine.
type Page struct {
	Entries []Entry
	Next    string
}

const listBatch = 256

// List pages through the log newest first.
func List(ctx context.Context, c *store.Client, opTimeout time.Duration, q Query) (Page, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	if q.MaxScan <= 0 {
		q.MaxScan = 10 * q.Limit
	}
	low := Prefix
	if !q.Since.IsZero() {
		low = Prefix + idTimePrefix(q.Since)
	}
	high := clientv3.GetPrefixRangeEnd(Prefix)
	if q.Before != "" {
		high = Prefix + q.Before
	}
	var page Page
	for scanned := 0; scanned < q.MaxScan && len(page.Entries) < q.Limit; {
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := c.Raw().Get(rctx, low,
			clientv3.WithRange(high),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend),
			clientv3.WithLimit(int64(min(listBatch, q.MaxScan-scanned))))
		cancel()
		if err != nil {
			return Page{}, fmt.Errorf("audit: list: %w", storeErr(err))
		}
		if len(resp.Kvs) == 0 {
			return page, nil
		}
		for _, kv := range resp.Kvs {
			scanned++
			high = string(kv.Key)
			ev := &adminv1.AuditEvent{}
			if err := proto.Unmarshal(kv.Value, ev); err != nil {
				// A damaged record must not hide the rest of the log.
				continue
			}
			if q.match(ev) {
				page.Entries = append(page.Entries, Entry{Event: ev, Revision: kv.ModRevision})
				if len(page.Entries) == q.Limit {
					break
				}
			}
		}
		if !resp.More && len(page.Entries) < q.Limit {
			return page, nil
		}
	}
	// Stopped at the page size or the scan budget: continue after the last key examined, unless
	// nothing older is left.
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.Raw().Get(rctx, low, clientv3.WithRange(high), clientv3.WithCountOnly())
	if err != nil {
		return Page{}, fmt.Errorf("audit: list: %w", storeErr(err))
	}
	if resp.Count > 0 {
		page.Next = strings.TrimPrefix(high, Prefix)
	}
	return page, nil
}

func (q Query) match(ev *adminv1.AuditEvent) bool {
	switch {
	case q.Actor != "" && ev.GetActor() != q.Actor:
		return false
	case q.Method != "" && !strings.Contains(ev.GetMethod(), q.Method):
		return false
	case q.TargetPrefix != "" && !strings.HasPrefix(ev.GetTarget(), q.TargetPrefix):
		return false
	case q.Outcome != adminv1.Outcome_OUTCOME_UNSPECIFIED && ev.GetOutcome() != q.Outcome:
		return false
	case !q.Since.IsZero() && ev.GetTime().AsTime().Before(q.Since):
		return false
	}
	return true
}

// idTimePrefix is the part of NewID that orders by time: every event at or after t has an id that
// sorts at or after it.
func idTimePrefix(t time.Time) string {
	n := t.UnixNano()
	if n < 0 {
		n = 0
	}
	return fmt.Sprintf("%020d", n)
}

// ValidID reports whether id has the shape NewID produces, for ids that come back from clients.
func ValidID(id string) bool {
	stamp, rnd, ok := strings.Cut(id, "-")
	if !ok || len(stamp) != 20 || len(rnd) != 8 {
		return false
	}
	for _, r := range stamp {
		if r < '0' || r > '9' {
			return false
		}
	}
	for _, r := range rnd {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// Decode parses a stored event.
func Decode(val []byte) (*adminv1.AuditEvent, error) {
	ev := &adminv1.AuditEvent{}
	if err := proto.Unmarshal(val, ev); err != nil {
		return nil, fmt.Errorf("audit: decode event: %w", err)
	}
	return ev, nil
}

const pruneBatch = 1000

// Prune deletes events older than maxAge (0: no age limit) and then the oldest events beyond maxEvents
// (0: no count limit), in batches so no single etcd request grows with the log. It returns how many
// events it deleted.
func Prune(ctx context.Context, c *store.Client, opTimeout time.Duration, now time.Time, maxAge time.Duration, maxEvents int64) (int64, error) {
	var deleted int64
	if maxAge > 0 {
		cutoff := Prefix + idTimePrefix(now.Add(-maxAge))
		for {
			n, err := deleteOldest(ctx, c, opTimeout, cutoff, pruneBatch)
			deleted += n
			if err != nil {
				return deleted, err
			}
			if n < pruneBatch {
				break
			}
		}
	}
	if maxEvents > 0 {
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := c.Raw().Get(rctx, Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			return deleted, fmt.Errorf("audit: prune: count: %w", storeErr(err))
		}
		for excess := resp.Count - maxEvents; excess > 0; {
			n, err := deleteOldest(ctx, c, opTimeout, clientv3.GetPrefixRangeEnd(Prefix), min(excess, pruneBatch))
			deleted += n
			excess -= n
			if err != nil {
				return deleted, err
			}
			if n == 0 {
				break
			}
		}
	}
	return deleted, nil
}

// deleteOldest deletes up to limit of the oldest events with keys below end.
func deleteOldest(ctx context.Context, c *store.Client, opTimeout time.Duration, end string, limit int64) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.Raw().Get(rctx, Prefix, clientv3.WithRange(end), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(limit))
	if err != nil {
		return 0, fmt.Errorf("audit: prune: list: %w", storeErr(err))
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	last := string(resp.Kvs[len(resp.Kvs)-1].Key)
	del, err := c.Raw().Delete(rctx, string(resp.Kvs[0].Key), clientv3.WithRange(last+"\x00"))
	if err != nil {
		return 0, fmt.Errorf("audit: prune: delete: %w", storeErr(err))
	}
	return del.Deleted, nil
}

// storeErr gives raw etcd failures the store's sentinel for unavailability, which is what callers
// (and the gRPC error mapping) act on.
func storeErr(err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	code := status.Code(err)
	var etcdErr rpctypes.EtcdError
	if errors.As(err, &etcdErr) {
		code = etcdErr.Code()
	}
	if errors.Is(err, context.DeadlineExceeded) || code == codes.Unavailable || code == codes.DeadlineExceeded {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}
