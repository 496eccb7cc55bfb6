package adminsvc

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/warden-sec/warden/services/internal/authn"
)

// Prefix is the service's etcd namespace. Layout (relative keys):
//
//	bootstrap                    marks that the bootstrap admin was created once (never again)
//	users/<name>                 userRecord
//	tokens/<sha256 hex>          tokenRecord, attached to a lease that ends with the token
//	usertokens/<name>/<sha256>   empty, same lease: index of a user's tokens for revocation
//
// The audit log lives under audit.Prefix and is read, tailed and pruned here.
const Prefix = "/warden/admin/"

const (
	keyBootstrap        = "bootstrap"
	prefixUsers         = "users/"
	prefixTokens        = "tokens/"
	prefixUserTokens    = "usertokens/"
	bootstrapUser       = "admin"
	initialPasswordFile = "initial-password"
)

func keyUser(name string) string                 { return prefixUsers + name }
func keyToken(hash string) string                { return prefixTokens + hash }
func keyUserToken(name, hash string) string      { return prefixUserTokens + name + "/" + hash }
func prefixUserTokensOf(name string) string      { return prefixUserTokens + name + "/" }
func hashFromUserTokenKey(name, k string) string { return k[len(prefixUserTokensOf(name)):] }

var usernameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

type userRecord struct {
	Role               authn.Role `json:"role"`
	PasswordHash       string     `json:"password_hash"`
	MustChangePassword bool       `json:"must_change_password"`
	Created            time.Time  `json:"created"`
}

type tokenRecord struct {
	User       string     `json:"user"`
	Role       authn.Role `json:"role"`
	Expires    time.Time  `json:"expires"`
	MustChange bool       `json:"must_change"`
	Created    time.Time  `json:"created"`
}

func encodeJSON(v any) []byte {
	// Records are structs of strings, booleans and times, which always marshal.
	b, _ := json.Marshal(v)
	return b
}

func decodeUser(val []byte) (userRecord, error) {
	var u userRecord
	if err := json.Unmarshal(val, &u); err != nil {
		return u, fmt.Errorf("decode user record: %w", err)
	}
	return u, nil
}

func decodeToken(val []byte) (tokenRecord, error) {
	var t tokenRecord
	if err := json.Unmarshal(val, &t); err != nil {
		return t, fmt.Errorf("decode token record: %w", err)
	}
	return t, nil
}
