package adminsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/store"
)

// Sealed values are found by shape rather than by a list of known keys, so a service that starts
// sealing something new is covered without a change here. Two shapes exist:
//   - a raw value in the sealed format (CA keys, secret values), sealed with AAD = its full etcd key;
//   - a JSON object with a top-level "sealed_key" field (external certificate records), whose bytes are
//     sealed with AAD = the record's full etcd key as well.
//
// The audit log and election keys never hold sealed values and are skipped.
const (
	sealScanRoot  = "/warden/"
	sealScanBatch = 256
	sealedKeyJSON = "sealed_key"
)

var sealScanSkip = []string{audit.Prefix, "/warden/election/"}

// sealedValue is one sealed value found by the scan.
type sealedValue struct {
	key    string // full etcd key, also the AAD
	modRev int64
	kekID  string
	raw    []byte // the whole stored value
	inJSON bool   // the sealed bytes are the sealed_key field of the JSON object raw
	sealed []byte
}

// scanSealed calls fn for every sealed value under /warden/.
func (s *Service) scanSealed(ctx context.Context, fn func(sealedValue) error) error {
	start := sealScanRoot
	end := clientv3.GetPrefixRangeEnd(sealScanRoot)
	for start < end {
		if skip := skippedPrefix(start); skip != "" {
			start = clientv3.GetPrefixRangeEnd(skip)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
		resp, err := s.cfg.Client.Raw().Get(rctx, start, clientv3.WithRange(end),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(sealScanBatch))
		cancel()
		if err != nil {
			return fmt.Errorf("scan sealed values: %w: %w", store.ErrUnavailable, err)
		}
		for _, kv := range resp.Kvs {
			if skippedPrefix(string(kv.Key)) != "" {
				continue
			}
			if v, ok := asSealed(kv); ok {
				if err := fn(v); err != nil {
					return err
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return nil
}

func skippedPrefix(key string) string {
	for _, p := range sealScanSkip {
		if strings.HasPrefix(key, p) {
			return p
		}
	}
	return ""
}

func asSealed(kv *mvccpb.KeyValue) (sealedValue, bool) {
	v := sealedValue{key: string(kv.Key), modRev: kv.ModRevision, raw: kv.Value}
	if id, err := seal.KEKID(kv.Value); err == nil {
		v.kekID, v.sealed = id, kv.Value
		return v, true
	}
	if len(kv.Value) == 0 || kv.Value[0] != '{' || !bytes.Contains(kv.Value, []byte(`"`+sealedKeyJSON+`"`)) {
		return v, false
	}
	var obj struct {
		SealedKey []byte `json:"sealed_key"`
	}
	if err := json.Unmarshal(kv.Value, &obj); err != nil {
		return v, false
	}
	id, err := seal.KEKID(obj.SealedKey)
	if err != nil {
		return v, false
	}
	v.kekID, v.sealed, v.inJSON = id, obj.SealedKey, true
	return v, true
}

// GetSealStatus counts sealed values per key-encryption key.
func (s *Service) GetSealStatus(ctx context.Context, _ *adminv1.GetSealStatusRequest) (*adminv1.GetSealStatusResponse, error) {
	counts := map[string]int64{s.cfg.Seal.PrimaryID(): 0}
	err := s.scanSealed(ctx, func(v sealedValue) error {
		counts[v.kekID]++
		return nil
	})
	if err != nil {
		return nil, err
	}
	resp := &adminv1.GetSealStatusResponse{}
	for id, n := range counts {
		resp.Keys = append(resp.Keys, &adminv1.KEKUsage{KekId: id, Primary: id == s.cfg.Seal.PrimaryID(), Values: n})
	}
	sort.Slice(resp.Keys, func(i, j int) bool {
		a, b := resp.Keys[i], resp.Keys[j]
		if a.Primary != b.Primary {
			return a.Primary
		}
		return a.KekId < b.KekId
	})
	return resp, nil
}

// maxRewrapAttempts bounds retries of a value that keeps changing under the rewrap; a value rewritten
// meanwhile by its service is sealed under the primary key anyway.
const maxRewrapAttempts = 3

// RewrapSealed re-wraps every sealed value under the primary key, one compare-and-swap per value, so
// it runs online beside the services writing them. Values that cannot be opened (unknown key, wrong
// binding) are left alone and reported as a failed precondition after the rest are done.
func (s *Service) RewrapSealed(ctx context.Context, _ *adminv1.RewrapSealedRequest) (*adminv1.RewrapSealedResponse, error) {
	select {
	case s.rewrapping <- struct{}{}:
		defer func() { <-s.rewrapping }()
	default:
		return nil, apierr.FailedPrecondition("a re-wrap is already running on this replica")
	}
	resp := &adminv1.RewrapSealedResponse{}
	var failed []string
	err := s.scanSealed(ctx, func(v sealedValue) error {
		changed, err := s.rewrapOne(ctx, v)
		switch {
		case errors.Is(err, seal.ErrUnknownKEK), errors.Is(err, seal.ErrCorrupt):
			failed = append(failed, fmt.Sprintf("%s (%v)", v.key, err))
		case err != nil:
			return err
		case changed:
			resp.Rewrapped++
		default:
			resp.Unchanged++
		}
		return nil
	})
	details := map[string]string{"rewrapped": fmt.Sprint(resp.Rewrapped), "unchanged": fmt.Sprint(resp.Unchanged),
		"failed": fmt.Sprint(len(failed)), "primary": s.cfg.Seal.PrimaryID()}
	ev := audit.Event{Target: "seal", Outcome: audit.Success, Reason: "re-wrapped sealed values under the primary key", Details: details}
	if err != nil || len(failed) > 0 {
		ev.Outcome, ev.Reason = audit.Failed, "re-wrap incomplete"
	}
	s.cfg.Audit.Record(ctx, ev)
	if err != nil {
		return nil, fmt.Errorf("rewrap (re-wrapped %d so far): %w", resp.Rewrapped, err)
	}
	if len(failed) > 0 {
		shown := failed[:min(len(failed), 5)]
		return nil, apierr.FailedPrecondition("re-wrapped %d, %d already under %s, %d could not be opened with this keyring: %s",
			resp.Rewrapped, resp.Unchanged, s.cfg.Seal.PrimaryID(), len(failed), strings.Join(shown, "; "))
	}
	return resp, nil
}

// rewrapOne re-wraps v and writes it back if nobody changed it since it was read; otherwise it reads
// the key again and retries.
func (s *Service) rewrapOne(ctx context.Context, v sealedValue) (bool, error) {
	for attempt := 0; ; attempt++ {
		out, changed, err := s.cfg.Seal.Rewrap(v.sealed, v.key)
		if err != nil || !changed {
			return false, err
		}
		val := out
		if v.inJSON {
			if val, err = replaceSealedKey(v.raw, out); err != nil {
				return false, fmt.Errorf("rewrap %s: %w", v.key, err)
			}
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
		// WithIgnoreLease keeps a value attached to its lease, if it has one.
		tx, err := s.cfg.Client.Raw().Txn(rctx).
			If(clientv3.Compare(clientv3.ModRevision(v.key), "=", v.modRev)).
			Then(clientv3.OpPut(v.key, string(val), clientv3.WithIgnoreLease())).
			Else(clientv3.OpGet(v.key)).
			Commit()
		cancel()
		if err != nil {
			return false, fmt.Errorf("rewrap %s: %w: %w", v.key, store.ErrUnavailable, err)
		}
		if tx.Succeeded {
			return true, nil
		}
		kvs := tx.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			return false, nil // deleted meanwhile: nothing left to protect
		}
		next, ok := asSealed(kvs[0])
		if !ok {
			return false, nil
		}
		if attempt+1 >= maxRewrapAttempts {
			return false, fmt.Errorf("rewrap %s: %w: it keeps changing", v.key, store.ErrConflict)
		}
		v = next
	}
}

// replaceSealedKey swaps the sealed_key field of a JSON object and keeps every other field as stored.
func replaceSealedKey(raw, sealed []byte) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	enc, err := json.Marshal(sealed)
	if err != nil {
		return nil, err
	}
	obj[sealedKeyJSON] = enc
	return json.Marshal(obj)
}
