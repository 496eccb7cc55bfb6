package node

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
)

// sessionsPerAgent bounds the TLS sessions an agent keeps: one per control-plane name (the replicas
// share ticket keys) and identity certificate.
const sessionsPerAgent = 8

// SessionCache keeps TLS sessions with the control plane per identity certificate, so a reconnect (a
// restarted or another replica) resumes instead of repeating the full handshake. A session authenticates
// the certificate it was made with, so after a renewal the agent must not resume a session of its
// previous certificate: cert returns the certificate presented now, and sessions are filed under it.
// warden-bench's simulated agents use it as well.
func SessionCache(cert func() *tls.Certificate) tls.ClientSessionCache {
	return identitySessions{cache: tls.NewLRUClientSessionCache(sessionsPerAgent), cert: cert}
}

type identitySessions struct {
	cache tls.ClientSessionCache
	cert  func() *tls.Certificate
}

func (s identitySessions) Get(key string) (*tls.ClientSessionState, bool) {
	return s.cache.Get(s.scope(key))
}

func (s identitySessions) Put(key string, cs *tls.ClientSessionState) {
	s.cache.Put(s.scope(key), cs)
}

func (s identitySessions) scope(key string) string {
	c := s.cert()
	if c == nil || len(c.Certificate) == 0 {
		return key // no client certificate: the anonymous bootstrap connection
	}
	sum := sha256.Sum256(c.Certificate[0])
	return key + "|" + hex.EncodeToString(sum[:8])
}
