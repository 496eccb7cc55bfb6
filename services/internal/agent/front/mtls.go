package front

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/identity"
)

const (
	handshakeTimeout = 10 * time.Second
	// pingIdle closes a control connection that sent no ping for this long.
	pingIdle = time.Minute
	// maxPingLine bounds a ping line, which is untrusted input.
	maxPingLine = 128
)

// mtlsListener is the shared part of the Coreapp fronts: it admits a connection only from an address
// in the endpoint's allowlist (checked before any TLS work) and only with a client certificate that
// verifies against the live trust bundle, is not revoked, and names a node of the allowed role.
type mtlsListener struct {
	ln       net.Listener
	kind     certv1.CertKind
	endpoint policyv1.Endpoint
	role     identity.Role
	state    *live.State
	log      *slog.Logger
	// handle serves one authenticated connection; it owns conn.
	handle func(ctx context.Context, conn *tls.Conn, peer identity.ID)
}

func (m *mtlsListener) serverTLS() *tls.Config {
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			creds := m.state.Creds()
			cert := creds.Cert(m.kind)
			if cert == nil || creds.Roots == nil {
				return nil, fmt.Errorf("no %v certificate yet", m.kind)
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientCAs:    creds.Roots,
				ClientAuth:   tls.RequireAndVerifyClientCert,
				// The standard verification above checks the chain; this adds the CRL, the trust domain
				// and the role, against the same credentials snapshot.
				VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
					_, err := m.authorize(creds, raw)
					return err
				},
			}, nil
		},
	}
}

// authorize checks a client chain and returns its identity.
func (m *mtlsListener) authorize(creds *live.Creds, raw [][]byte) (identity.ID, error) {
	id, err := creds.VerifyPeer(raw, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return identity.ID{}, err
	}
	if id.Kind != identity.KindNode || id.Role != m.role {
		return identity.ID{}, fmt.Errorf("identity %s may not reach this endpoint (only %s nodes)", id, m.role)
	}
	return id, nil
}

func (m *mtlsListener) run(ctx context.Context) error {
	cfg := m.serverTLS()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { _ = m.ln.Close() })
	defer stop()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.serveConn(ctx, conn, cfg)
		}()
	}
}

func (m *mtlsListener) serveConn(ctx context.Context, conn net.Conn, cfg *tls.Config) {
	addr := remoteAddr(conn.RemoteAddr().String())
	if !m.state.Policy().Allows(m.endpoint, addr) {
		m.log.Info("refused by zone allowlist", "endpoint", m.endpoint, "remote", conn.RemoteAddr())
		_ = conn.Close()
		return
	}
	tc := tls.Server(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		m.log.Info("mTLS handshake refused", "endpoint", m.endpoint, "remote", conn.RemoteAddr(), "err", err)
		_ = tc.Close()
		return
	}
	id, err := identity.FromCertificate(tc.ConnectionState().PeerCertificates[0])
	if err != nil {
		_ = tc.Close()
		return
	}
	stop := context.AfterFunc(ctx, func() { _ = tc.Close() })
	defer stop()
	m.handle(ctx, tc, id)
}

// CommConfig configures the Coreapp communication-service front.
type CommConfig struct {
	Listener net.Listener
	// Upstream is the local Coreapp's communication port, host:port.
	Upstream string
	State    *live.State
	Log      *slog.Logger
}

// Comm is the Coreapp communication-service front: Webapp identities only, TCP proxy to the Coreapp.
type Comm struct{ m *mtlsListener }

// NewComm builds the front.
func NewComm(cfg CommConfig) (*Comm, error) {
	if cfg.Listener == nil || cfg.Upstream == "" || cfg.State == nil || cfg.Log == nil {
		return nil, errors.New("front: Listener, Upstream, State and Log are required")
	}
	m := &mtlsListener{
		ln: cfg.Listener, kind: certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION, endpoint: policyv1.Endpoint_ENDPOINT_COREAPP_COMMUNICATION,
		role: identity.RoleWebapp, state: cfg.State, log: cfg.Log,
	}
	m.handle = func(ctx context.Context, conn *tls.Conn, peer identity.ID) {
		defer conn.Close()
		var d net.Dialer
		up, err := d.DialContext(ctx, "tcp", cfg.Upstream)
		if err != nil {
			cfg.Log.Warn("communication upstream unreachable", "upstream", cfg.Upstream, "peer", peer, "err", err)
			return
		}
		defer up.Close()
		pipe(conn, up)
	}
	return &Comm{m: m}, nil
}

// Run serves until ctx is done.
func (c *Comm) Run(ctx context.Context) error { return c.m.run(ctx) }

// pipe copies both ways until both directions ended, passing half-closes on.
func pipe(a *tls.Conn, b net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(b, a)
		if tc, ok := b.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		} else {
			_ = b.Close()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(a, b)
		_ = a.CloseWrite()
		done <- struct{}{}
	}()
	<-done
	<-done
}

// ControlConfig configures the Coreapp control endpoint.
type ControlConfig struct {
	Listener net.Listener
	// NodeID is answered in pongs.
	NodeID string
	State  *live.State
	Log    *slog.Logger
}

// Control is the Coreapp control-service endpoint the mesh probes reach: Coreapp identities only.
//
// Protocol, one line each way per probe: the client sends "PING <nonce>\n" (nonce: 1–64 characters of
// [0-9a-f]), the server answers "PONG <node-id> <nonce>\n". Anything else closes the connection.
type Control struct{ m *mtlsListener }

// NewControl builds the endpoint.
func NewControl(cfg ControlConfig) (*Control, error) {
	if cfg.Listener == nil || cfg.NodeID == "" || cfg.State == nil || cfg.Log == nil {
		return nil, errors.New("front: Listener, NodeID, State and Log are required")
	}
	m := &mtlsListener{
		ln: cfg.Listener, kind: certv1.CertKind_CERT_KIND_COREAPP_CONTROL, endpoint: policyv1.Endpoint_ENDPOINT_COREAPP_CONTROL,
		role: identity.RoleCoreapp, state: cfg.State, log: cfg.Log,
	}
	m.handle = func(_ context.Context, conn *tls.Conn, _ identity.ID) {
		defer conn.Close()
		servePings(conn, cfg.NodeID)
	}
	return &Control{m: m}, nil
}

// Run serves until ctx is done.
func (c *Control) Run(ctx context.Context) error { return c.m.run(ctx) }

func servePings(conn net.Conn, nodeID string) {
	r := bufio.NewReaderSize(conn, maxPingLine)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(pingIdle))
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		nonce, err := ParsePing(line)
		if err != nil {
			return
		}
		_ = conn.SetWriteDeadline(time.Now().Add(handshakeTimeout))
		if _, err := fmt.Fprintf(conn, "PONG %s %s\n", nodeID, nonce); err != nil {
			return
		}
	}
}

// ParsePing parses one ping line (with its newline) and returns the nonce.
func ParsePing(line []byte) (string, error) {
	s, ok := strings.CutSuffix(string(line), "\n")
	if !ok {
		return "", errors.New("ping: no newline")
	}
	nonce, ok := strings.CutPrefix(s, "PING ")
	if !ok {
		return "", errors.New("ping: not a PING line")
	}
	if len(nonce) == 0 || len(nonce) > 64 {
		return "", errors.New("ping: nonce must have 1 to 64 characters")
	}
	for i := 0; i < len(nonce); i++ {
		if c := nonce[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", errors.New("ping: nonce must be lowercase hex")
		}
	}
	return nonce, nil
}

// Probe dials a peer's control endpoint with the node's control certificate, verifies that the peer
// presents exactly wantID, and times one ping. The handshake is part of what is measured as reachable;
// the returned RTT is the ping's alone.
func Probe(ctx context.Context, state *live.State, addr, wantID string) (time.Duration, error) {
	creds := state.Creds()
	cert := creds.Cert(certv1.CertKind_CERT_KIND_COREAPP_CONTROL)
	if cert == nil {
		return 0, errors.New("no control certificate yet")
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*cert},
		// The peer is named by its SPIFFE identity, not by a host name; VerifyConnection checks both
		// the chain (against the live bundle) and that identity.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			id, err := creds.VerifyPeer(raw, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if id.String() != wantID {
				return fmt.Errorf("peer presents %s, want %s", id, wantID)
			}
			return nil
		},
	}
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	start := time.Now()
	if _, err := fmt.Fprintf(conn, "PING %s\n", nonce); err != nil {
		return 0, err
	}
	line, err := bufio.NewReaderSize(conn, maxPingLine).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("no pong: %w", err)
	}
	rtt := time.Since(start)
	fields := strings.Fields(line)
	if len(fields) != 3 || fields[0] != "PONG" || fields[2] != nonce {
		return 0, fmt.Errorf("bad pong %.40q", line)
	}
	return rtt, nil
}
