package bench

import (
	"context"
	"crypto/tls"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// dialTLS opens a lazily connecting client. localIP, when set, is the source address: every
// loopback address is local on Linux, so clients can present distinct peers from one host.
func dialTLS(addr string, tc *tls.Config, localIP net.IP, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
	}, opts...)
	if localIP != nil {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: localIP}}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", a)
		}))
	}
	return grpc.NewClient("passthrough:///"+addr, opts...)
}
