package authn

import (
	"crypto/tls"
	"crypto/x509"
	"net"

	"google.golang.org/grpc/credentials"

	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// ServerCredentials are TLS transport credentials that read the identity in a client certificate once
// per connection, at the handshake, rather than on every call of the connection: parsing the same URI
// SAN for every acknowledgement and subscription showed in the profiles of reconnect storms. What can
// change during a connection (revocation, the trust domain) is still checked per call by Authenticate.
// observe, if not nil, sees every completed handshake (metrics).
func ServerCredentials(c *tls.Config, observe func(tls.ConnectionState)) credentials.TransportCredentials {
	return connCredentials{credentials.NewTLS(c), observe}
}

type connCredentials struct {
	credentials.TransportCredentials
	observe func(tls.ConnectionState)
}

func (c connCredentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, info, err
	}
	ti, ok := info.(credentials.TLSInfo)
	if !ok {
		return conn, info, nil
	}
	if c.observe != nil {
		c.observe(ti.State)
	}
	ci := connInfo{TLSInfo: ti}
	if len(ti.State.VerifiedChains) > 0 {
		ci.leaf = ti.State.VerifiedChains[0][0]
		ci.serial = pki.Serial(ci.leaf.SerialNumber)
		ci.id, ci.idErr = identity.FromCertificate(ci.leaf)
	}
	return conn, ci, nil
}

func (c connCredentials) Clone() credentials.TransportCredentials {
	return connCredentials{c.TransportCredentials.Clone(), c.observe}
}

// connInfo is the AuthInfo of a connection made with ServerCredentials. It embeds the TLS information,
// so grpc's security-level checks and anything reading the TLS state keep working.
type connInfo struct {
	credentials.TLSInfo
	leaf   *x509.Certificate // nil: no client certificate
	serial string
	id     identity.ID
	idErr  error
}
