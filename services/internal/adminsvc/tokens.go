package adminsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/token"
)

// TokenCacheTTL bounds how long a verified token is trusted from memory. Every authenticated call
// would otherwise read etcd; the price is that a token revoked (Logout, RevokeTokens, ChangePassword,
// DeleteUser) on another replica, or on a replica whose verifier does not Run, keeps working for at
// most this long. A verifier that Runs drops revoked tokens as soon as its watch sees the delete.
const TokenCacheTTL = 5 * time.Second

// maxCachedTokens bounds the cache; past it, expired entries are dropped and, if that is not enough,
// everything (the next calls simply read etcd again).
const maxCachedTokens = 10_000

// TokenVerifier checks bearer tokens against the tokens Login stored. It implements
// authn.TokenVerifier and is safe for concurrent use.
type TokenVerifier struct {
	st  *store.Store
	log *slog.Logger
	now func() time.Time
	ttl time.Duration

	mu    sync.Mutex
	cache map[string]cachedToken
}

type cachedToken struct {
	user    authn.TokenUser
	expires time.Time // the token's own expiry
	until   time.Time // end of trust from memory
}

// NewTokenVerifier returns a verifier reading tokens from st, the service's namespace
// (client.Namespace(adminsvc.Prefix)).
func NewTokenVerifier(st *store.Store, log *slog.Logger) *TokenVerifier {
	return &TokenVerifier{st: st, log: log, now: time.Now, ttl: TokenCacheTTL, cache: map[string]cachedToken{}}
}

var errBadToken = fmt.Errorf("%w: the bearer token is invalid, expired or revoked", authn.ErrUnauthenticated)

// VerifyToken returns the user tok stands for, or an error wrapping authn.ErrUnauthenticated.
func (v *TokenVerifier) VerifyToken(ctx context.Context, tok string) (authn.TokenUser, error) {
	t, err := token.Parse(tok, token.BearerPrefix)
	if err != nil {
		return authn.TokenUser{}, fmt.Errorf("%w: %w", authn.ErrUnauthenticated, err)
	}
	hash := t.Hash()
	now := v.now()
	v.mu.Lock()
	c, ok := v.cache[hash]
	v.mu.Unlock()
	if ok && now.Before(c.until) && now.Before(c.expires) {
		return c.user, nil
	}
	kv, err := v.st.Get(ctx, keyToken(hash))
	if errors.Is(err, store.ErrNotFound) {
		v.forget(hash)
		return authn.TokenUser{}, errBadToken
	}
	if err != nil {
		return authn.TokenUser{}, fmt.Errorf("verify token: %w", err)
	}
	rec, err := decodeToken(kv.Value)
	if err != nil {
		return authn.TokenUser{}, fmt.Errorf("verify token: %w", err)
	}
	if !now.Before(rec.Expires) {
		v.forget(hash)
		return authn.TokenUser{}, errBadToken
	}
	u := authn.TokenUser{Name: rec.User, Role: rec.Role, MustChangePassword: rec.MustChange, TokenHash: hash}
	// A must-change token is about to lose its flag through ChangePassword; caching it would make the
	// changed password look ineffective for a while. Such tokens are used for one call or two anyway.
	if !rec.MustChange {
		v.remember(hash, cachedToken{user: u, expires: rec.Expires, until: now.Add(v.ttl)})
	}
	return u, nil
}

func (v *TokenVerifier) remember(hash string, c cachedToken) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cache) >= maxCachedTokens {
		now := v.now()
		for h, e := range v.cache {
			if !now.Before(e.until) {
				delete(v.cache, h)
			}
		}
		if len(v.cache) >= maxCachedTokens {
			clear(v.cache)
		}
	}
	v.cache[hash] = c
}

func (v *TokenVerifier) forget(hash string) {
	v.mu.Lock()
	delete(v.cache, hash)
	v.mu.Unlock()
}

// Run makes revocation immediate on this replica: it watches the stored tokens and drops any cached
// token that changes or disappears. Without Run, TokenCacheTTL bounds the delay.
func (v *TokenVerifier) Run(ctx context.Context) error {
	for b := range v.st.Watch(ctx, prefixTokens, 0) {
		if b.Reset {
			v.mu.Lock()
			clear(v.cache)
			v.mu.Unlock()
			continue
		}
		for _, ev := range b.Events {
			v.forget(strings.TrimPrefix(ev.KV.Key, prefixTokens))
		}
	}
	return nil
}
