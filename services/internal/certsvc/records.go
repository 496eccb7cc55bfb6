package certsvc

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/warden-sec/warden/services/internal/store"
)

// Prefix is the cert service's etcd namespace. Layout (relative keys):
//
//	ca/state              caState: phase and the CAs (never keys)
//	ca/key/<ca-id>        sealed private key of a CA
//	nodes/<node-id>       nodeRecord
//	certs/<serial>        certRecord of every certificate issued
//	current/<node>/<kind> serial of the node's current certificate of a kind
//	nodecerts/<node>/<serial>  empty: index of every certificate issued to a node (decommission, listing)
//	bykey/<node>/<kind>/<spki-sha256>  serial of the last certificate issued for that key (reuse)
//	revoked/<serial>      revokedRecord
//	crl                   crlRecord
//	tokens/<sha256>       tokenRecord (join tokens, stored only hashed, with a lease = TTL)
//	acks/<node-id>        ackRecord
//	external/<node-id|*>  externalRecord (key sealed inside)
//	webhook/<name>        bundleRecord
//	dbca                  bundleRecord
const Prefix = "/warden/cert/"

// Key builders, so the layout above is the only place key shapes are spelled.
const (
	keyCAState  = "ca/state"
	keyCRL      = "crl"
	keyDBCA     = "dbca"
	allWebapps  = "*"
	prefNodes   = "nodes/"
	prefCerts   = "certs/"
	prefCurrent = "current/"
	prefRevoked = "revoked/"
	prefTokens  = "tokens/"
	prefAcks    = "acks/"
	prefExt     = "external/"
	prefWebhook = "webhook/"
	prefNodeIdx = "nodecerts/"
	prefByKey   = "bykey/"
)

func keyCAKey(id string) string              { return "ca/key/" + id }
func keyNode(id string) string               { return prefNodes + id }
func keyCert(serial string) string           { return prefCerts + serial }
func keyCurrent(node, kind string) string    { return prefCurrent + node + "/" + kind }
func keyRevoked(serial string) string        { return prefRevoked + serial }
func keyToken(hash string) string            { return prefTokens + hash }
func keyAck(node string) string              { return prefAcks + node }
func keyExternal(node string) string         { return prefExt + node }
func keyWebhook(name string) string          { return prefWebhook + name }
func keyNodeCert(node, serial string) string { return prefNodeIdx + node + "/" + serial }
func keyByKey(node, kind, pubID string) string {
	return prefByKey + node + "/" + kind + "/" + pubID
}

// CA states and phases as stored.
const (
	caPrepared = "prepared"
	caActive   = "active"
	caRetiring = "retiring"

	phaseStable    = "stable"
	phasePrepared  = "prepared"
	phaseActivated = "activated"

	sourceGenerated    = "generated"
	sourceRoot         = "uploaded-root"
	sourceIntermediate = "uploaded-intermediate"
)

type caRecord struct {
	ID          string    `json:"id"` // SHA-256 fingerprint of the CA certificate
	CertPEM     string    `json:"cert_pem"`
	ChainPEM    string    `json:"chain_pem,omitempty"` // uploaded intermediate: chain up to its root
	RootsPEM    string    `json:"roots_pem"`           // what the trust bundle carries for this CA
	State       string    `json:"state"`
	Source      string    `json:"source"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	CreatedAt   time.Time `json:"created_at"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
}

type caState struct {
	Phase string     `json:"phase"`
	CAs   []caRecord `json:"cas"`
}

func (s caState) byState(state string) (caRecord, bool) {
	for _, c := range s.CAs {
		if c.State == state {
			return c, true
		}
	}
	return caRecord{}, false
}

// crlSigners lists the CAs that sign a CRL, issuer first: the issuer and, during a rotation, the
// retiring CA, whose certificates stay trusted until it retires. A relying party (OpenSSL, nginx's
// ssl_crl, a JVM) looks a certificate up in the CRL of the certificate's own issuer and refuses the
// certificate when there is none, so each of them signs its own.
func (s caState) crlSigners() []caRecord {
	var out []caRecord
	for _, state := range []string{caActive, caRetiring} {
		if rec, ok := s.byState(state); ok {
			out = append(out, rec)
		}
	}
	return out
}

type nodeRecord struct {
	ID             string    `json:"id"`
	Role           string    `json:"role"`
	Zone           string    `json:"zone"`
	Addresses      []string  `json:"addresses"`
	CreatedAt      time.Time `json:"created_at"`
	BootstrappedAt time.Time `json:"bootstrapped_at,omitzero"`
}

type certRecord struct {
	Serial    string    `json:"serial"`
	NodeID    string    `json:"node_id"` // empty for control-plane and operator certificates
	Kind      string    `json:"kind"`
	SPIFFEID  string    `json:"spiffe_id"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	IPs       []string  `json:"ips,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	IssuerID  string    `json:"issuer_id"`
	KeyType   string    `json:"key_type"`
	PubKeyID  string    `json:"pub_key_id"` // SHA-256 of the SubjectPublicKeyInfo, for idempotent re-issue
	PEM       string    `json:"pem"`        // certificate followed by the issuing chain
}

type revokedRecord struct {
	Serial   string    `json:"serial"`
	At       time.Time `json:"at"`
	Reason   int       `json:"reason"`
	NotAfter time.Time `json:"not_after"` // dropped from the CRL after this
	NodeID   string    `json:"node_id"`
	IssuerID string    `json:"issuer_id,omitempty"` // the CA whose CRL lists it; empty in records older than that
}

// crlRecord is the published CRL set: one CRL per CA that signs (crlSigners), sharing one number.
type crlRecord struct {
	Number     int64     `json:"number"`
	PEM        string    `json:"pem"` // the CRLs, PEM, concatenated in the order of Signers
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	Signers    []string  `json:"signers"` // CA ids, issuer first
}

type tokenRecord struct {
	NodeID    string    `json:"node_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

type ackRecord struct {
	Version             int64             `json:"version"`
	TrustedFingerprints []string          `json:"trusted_fingerprints"`
	Held                map[string]string `json:"held"` // kind → serial
	At                  time.Time         `json:"at"`
	AgentTime           time.Time         `json:"agent_time,omitzero"`
	Error               string            `json:"error,omitempty"`
}

type externalRecord struct {
	NodeID      string    `json:"node_id"`
	ChainPEM    string    `json:"chain_pem"`
	SealedKey   []byte    `json:"sealed_key"`
	Names       []string  `json:"names"`
	NotAfter    time.Time `json:"not_after"`
	Fingerprint string    `json:"fingerprint"`
}

type bundleRecord struct {
	Name      string    `json:"name,omitempty"`
	BundlePEM string    `json:"bundle_pem"`
	Subjects  []string  `json:"subjects"`
	NotAfter  time.Time `json:"not_after"`
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil { // records are plain structs of strings, times and slices
		panic(fmt.Sprintf("certsvc: encode %T: %v", v, err))
	}
	return b
}

func decode[T any](kv store.KV) (T, error) {
	var v T
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return v, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return v, nil
}
