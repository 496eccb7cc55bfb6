package secretsvc

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/store"
)

// Key layout under Prefix (relative keys):
//
//	secrets/<name>/meta      secretRecord: type, scope, settings and the non-retired versions (never values)
//	secrets/<name>/v/<n>     the value of version n, sealed with the seal keyring; AAD = Prefix + this key
//	acks/<node-id>           ackRecord: what the node last acknowledged holding, and its clock
//
// A secret's meta and values share the prefix secrets/<name>/ so one mirror follows both, one
// DeletePrefixOp removes a secret entirely, and the acks (written on every agent acknowledgement) live
// in a mirror of their own and do not wake the snapshot hub.
const (
	prefSecrets = "secrets/"
	prefAcks    = "acks/"
	metaSuffix  = "/meta"
)

func keySecret(name string) string { return prefSecrets + name + "/" }
func keyMeta(name string) string   { return keySecret(name) + "meta" }
func keyValue(name string, n uint64) string {
	// Zero-padded so the values of a secret sort by number.
	return keySecret(name) + "v/" + fmt.Sprintf("%020d", n)
}
func keyAck(node string) string { return prefAcks + node }

// aad binds a sealed value to its full etcd key, so a value copied under another key fails to open.
func aad(key string) string { return Prefix + key }

// BuiltinName is the secret that exists from the first start and cannot be deleted.
const BuiltinName = "wa-secret"

// Secret types as stored.
const (
	typeWASecret = "wa_secret"
	typeGeneric  = "generic"
)

// Version states as stored. A retired version is dropped from the record with its value.
const (
	stateStaged   = "staged"
	stateActive   = "active"
	stateRetiring = "retiring"
)

type scope struct {
	Roles   []string `json:"roles,omitempty"`
	NodeIDs []string `json:"node_ids,omitempty"`
}

// all reports whether the scope selects every node.
func (s scope) all() bool { return len(s.Roles) == 0 && len(s.NodeIDs) == 0 }

func (s scope) includes(n certsvc.Node) bool {
	return s.all() || slices.Contains(s.Roles, n.Role) || slices.Contains(s.NodeIDs, n.ID)
}

type versionRecord struct {
	Number      uint64    `json:"number"`
	State       string    `json:"state"`
	CreatedAt   time.Time `json:"created_at"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	RetiringAt  time.Time `json:"retiring_at,omitzero"`
	Supplied    bool      `json:"supplied,omitempty"`
}

type secretRecord struct {
	Name            string        `json:"name"`
	Type            string        `json:"type"`
	Scope           scope         `json:"scope"`
	RotationPeriod  time.Duration `json:"rotation_period,omitempty"`
	GracePeriod     time.Duration `json:"grace_period"`
	RotationTimeout time.Duration `json:"rotation_timeout"`
	// Versions are the non-retired ones, in ascending number.
	Versions []versionRecord `json:"versions"`
	// Latest is the highest number ever used, so numbers are never reused after a version retires.
	Latest    uint64    `json:"latest"`
	CreatedAt time.Time `json:"created_at"`
	// RotatedAt is when the newest version was staged: the start of the scheduled rotation period.
	RotatedAt time.Time `json:"rotated_at"`
}

func (r *secretRecord) byState(state string) (versionRecord, bool) {
	for _, v := range r.Versions {
		if v.State == state {
			return v, true
		}
	}
	return versionRecord{}, false
}

func (r *secretRecord) version(n uint64) (versionRecord, bool) {
	for _, v := range r.Versions {
		if v.Number == n {
			return v, true
		}
	}
	return versionRecord{}, false
}

// stage appends version Latest+1 as staged and returns it.
func (r *secretRecord) stage(now time.Time, supplied bool) versionRecord {
	r.Latest++
	v := versionRecord{Number: r.Latest, State: stateStaged, CreatedAt: now, Supplied: supplied}
	r.Versions = append(r.Versions, v)
	r.RotatedAt = now
	return v
}

// promote makes version n active and the previous active version retiring.
func (r *secretRecord) promote(n uint64, now time.Time) {
	for i := range r.Versions {
		v := &r.Versions[i]
		switch {
		case v.Number == n:
			v.State, v.ActivatedAt = stateActive, now
		case v.State == stateActive:
			v.State, v.RetiringAt = stateRetiring, now
		}
	}
}

// retireExpired drops the retiring versions whose grace period ended and returns their numbers.
func (r *secretRecord) retireExpired(now time.Time) []uint64 {
	var gone []uint64
	r.Versions = slices.DeleteFunc(r.Versions, func(v versionRecord) bool {
		if v.State == stateRetiring && !now.Before(v.RetiringAt.Add(r.GracePeriod)) {
			gone = append(gone, v.Number)
			return true
		}
		return false
	})
	return gone
}

type ackRecord struct {
	NodeID  string `json:"node_id"`
	Version int64  `json:"version"`
	// Held maps a secret name to the version numbers the node holds.
	Held       map[string][]uint64 `json:"held,omitempty"`
	AgentTime  time.Time           `json:"agent_time,omitzero"`
	RTT        time.Duration       `json:"rtt,omitempty"`
	ReceivedAt time.Time           `json:"received_at"`
	// Skew and SkewAt are set once the agent reported its clock, and kept by acks that do not.
	Skew     time.Duration `json:"skew,omitempty"`
	SkewAt   time.Time     `json:"skew_at,omitzero"`
	ApplyErr string        `json:"error,omitempty"`
}

func (a ackRecord) holds(name string, n uint64) bool { return slices.Contains(a.Held[name], n) }

func (a ackRecord) highest(name string) uint64 {
	var h uint64
	for _, n := range a.Held[name] {
		h = max(h, n)
	}
	return h
}

// putOp is the put of v, JSON-encoded, at key.
func putOp(key string, v any) (store.Op, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return store.Op{}, fmt.Errorf("encode %q: %w", key, err)
	}
	return store.PutOp(key, b), nil
}

func decode[T any](kv store.KV) (T, error) {
	var v T
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return v, fmt.Errorf("decode %q: %w", kv.Key, err)
	}
	return v, nil
}

// nameOfMeta returns the secret name of a meta key, and false for any other key.
func nameOfMeta(key string) (string, bool) {
	if !strings.HasPrefix(key, prefSecrets) || !strings.HasSuffix(key, metaSuffix) {
		return "", false
	}
	name := strings.TrimSuffix(strings.TrimPrefix(key, prefSecrets), metaSuffix)
	return name, name != "" && !strings.Contains(name, "/")
}
