package meshsvc

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Prefix is the service's etcd namespace. Layout (relative keys):
//
//	config                  configRecord (absent: defaults)
//	members/<node>          memberRecord, attached to the member's lease, which the replica serving
//	                        its WatchPeers stream keeps alive and revokes when the stream ends
//	master                  the elected master's node id, attached to that member's lease, so it
//	                        disappears with the member and another eligible member claims it
//	links/<from>/<to>       linkRecord from <from>'s last report, attached to <from>'s lease
//
// Snapshots (WatchPeers) depend on members/, master and config only: link reports do not wake every
// Coreapp.
const Prefix = "/warden/mesh/"

const (
	keyConfig     = "config"
	keyMaster     = "master"
	prefixMembers = "members/"
	prefixLinks   = "links/"
)

func keyMember(node string) string       { return prefixMembers + node }
func keyLink(from, to string) string     { return prefixLinks + from + "/" + to }
func prefixLinksFrom(from string) string { return prefixLinks + from + "/" }

// splitLinkKey returns the ends of a links/<from>/<to> key.
func splitLinkKey(key string) (from, to string, ok bool) {
	return strings.Cut(strings.TrimPrefix(key, prefixLinks), "/")
}

// Defaults and bounds of the mesh settings.
const (
	DefaultShards    = 1
	DefaultMemberTTL = 15 * time.Second
	// MinMemberTTL stays above etcd's minimum lease TTL, which it would silently raise a shorter one to.
	MinMemberTTL = 2 * time.Second
	MaxMemberTTL = 10 * time.Minute
)

var validShards = []uint32{1, 2, 4, 8, 16, 32}

type configRecord struct {
	Shards         uint32        `json:"shards"`
	MasterElection bool          `json:"master_election"`
	MemberTTL      time.Duration `json:"member_ttl_ns"`
}

func defaultConfig() configRecord {
	return configRecord{Shards: DefaultShards, MemberTTL: DefaultMemberTTL}
}

type memberRecord struct {
	ControlAddress string    `json:"control_address"`
	Zone           string    `json:"zone,omitempty"`
	MasterEligible bool      `json:"master_eligible"`
	JoinedAt       time.Time `json:"joined_at"`
	SpiffeID       string    `json:"spiffe_id"`
}

type linkRecord struct {
	Reachable bool          `json:"reachable"`
	RTT       time.Duration `json:"rtt_ns"`
	Error     string        `json:"error,omitempty"`
	At        time.Time     `json:"at"`
}

func encodeJSON(v any) []byte {
	// Records are structs of strings, numbers, booleans and times, which always marshal.
	b, _ := json.Marshal(v)
	return b
}

func decodeJSON[T any](val []byte) (T, error) {
	var v T
	if err := json.Unmarshal(val, &v); err != nil {
		return v, fmt.Errorf("decode %T: %w", v, err)
	}
	return v, nil
}
