package node

import (
	"crypto/tls"
	"testing"
)

// TestSessionCacheIsPerIdentity: after a renewal the agent must not resume the session of its previous
// certificate, and the anonymous bootstrap connection has its own entry.
func TestSessionCacheIsPerIdentity(t *testing.T) {
	a := &tls.Certificate{Certificate: [][]byte{[]byte("certificate A")}}
	b := &tls.Certificate{Certificate: [][]byte{[]byte("certificate B")}}
	var cur *tls.Certificate
	cache := SessionCache(func() *tls.Certificate { return cur })
	sessA, sessNone := &tls.ClientSessionState{}, &tls.ClientSessionState{}

	cur = a
	cache.Put("control-plane", sessA)
	cur = nil
	cache.Put("control-plane", sessNone)

	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		want *tls.ClientSessionState
	}{
		{"same certificate", a, sessA},
		{"renewed certificate", b, nil},
		{"no certificate", nil, sessNone},
	} {
		cur = tc.cert
		got, ok := cache.Get("control-plane")
		if got != tc.want || ok != (tc.want != nil) {
			t.Errorf("%s: Get = %p, %v; want %p", tc.name, got, ok, tc.want)
		}
	}
}
