package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// bareServer is the baseline: a gRPC server that implements WatchPolicy and nothing else, with no
// interceptors, no store and no rendering. On each trigger it sends the same serialized snapshot
// (marshalled once) to every open stream, so the time it takes is what gRPC, TLS and the loopback
// network cost on this machine.
type bareServer struct {
	policyv1.UnimplementedPolicyServiceServer

	mu  sync.Mutex
	cur *bareRound
}

// bareRound is one push; next is the one after it, filled when it is triggered.
type bareRound struct {
	done chan struct{}
	msg  *rawFrame
	next *bareRound
}

func newBareServer(initial *rawFrame) *bareServer {
	return &bareServer{cur: &bareRound{done: make(chan struct{}), msg: initial}}
}

// rawFrame is an already serialized message; rawCodec sends its bytes as they are.
type rawFrame struct{ b []byte }

func marshalFrame(m proto.Message) (*rawFrame, error) {
	b, err := proto.Marshal(m)
	return &rawFrame{b: b}, err
}

// rawCodec is the proto codec, except that a rawFrame is not marshalled again.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if f, ok := v.(*rawFrame); ok {
		return f.b, nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (rawCodec) Unmarshal(b []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(b, m)
}

func (rawCodec) Name() string { return "proto" }

func (b *bareServer) WatchPolicy(_ *policyv1.WatchPolicyRequest, st grpc.ServerStreamingServer[policyv1.WatchPolicyResponse]) error {
	b.mu.Lock()
	r := b.cur
	b.mu.Unlock()
	// The first snapshot on subscribe, as wardend sends it.
	if err := st.SendMsg(r.msg); err != nil {
		return err
	}
	for {
		select {
		case <-st.Context().Done():
			return nil
		case <-r.done:
		}
		r = r.next
		if err := st.SendMsg(r.msg); err != nil {
			return err
		}
	}
}

// push publishes msg to every stream.
func (b *bareServer) push(msg *rawFrame) {
	b.mu.Lock()
	r := b.cur
	next := &bareRound{done: make(chan struct{}), msg: msg}
	r.next = next
	b.cur = next
	b.mu.Unlock()
	close(r.done)
}

// runBaseline measures the bare server with n streams: over one TLS connection per stream (as the
// agents connect to wardend) when conns is 0, else multiplexed over conns connections. It returns the
// receive latencies of every push, pooled over rounds.
func runBaseline(ctx context.Context, sample *policyv1.WatchPolicyResponse, n, conns, rounds int) (Dist, error) {
	ca, err := pki.NewRootCA("baseline.bench.local", 24*time.Hour, time.Now())
	if err != nil {
		return Dist{}, err
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		return Dist{}, err
	}
	leaf, _, err := ca.Issue(pki.Template{
		ID:       identity.ControlPlaneID("baseline.bench.local"),
		DNSNames: []string{"localhost"}, Lifetime: time.Hour, Server: true,
	}, key.Public(), time.Now())
	if err != nil {
		return Dist{}, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srvTLS := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Dist{}, err
	}
	first, err := frameFor(sample, 1)
	if err != nil {
		return Dist{}, err
	}
	bare := newBareServer(first)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvTLS)), grpc.ForceServerCodec(rawCodec{}))
	policyv1.RegisterPolicyServiceServer(gs, bare)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nconn := n
	if conns > 0 {
		nconn = min(conns, n)
	}
	clients := make([]*grpc.ClientConn, nconn)
	for i := range clients {
		c, err := dialTLS(lis.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}, nil)
		if err != nil {
			return Dist{}, err
		}
		defer c.Close()
		clients[i] = c
	}
	tr := newTracker()
	var subscribed atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	errc := make(chan error, 1)
	for i := range n {
		wg.Go(func() {
			st, err := policyv1.NewPolicyServiceClient(clients[i%nconn]).WatchPolicy(ctx, &policyv1.WatchPolicyRequest{NodeId: "baseline"}, grpc.WaitForReady(true))
			if err != nil {
				select {
				case errc <- err:
				default:
				}
				return
			}
			var seen uint64
			for {
				m, err := st.Recv()
				if err != nil {
					return
				}
				now := time.Now()
				if k := m.GetRendered().GetPolicyNumber(); k > seen {
					if seen == 0 {
						subscribed.Add(1)
					} else {
						tr.markRecv(k, now)
					}
					seen = k
				}
			}
		})
	}
	deadline := time.Now().Add(60*time.Second + time.Duration(n)*5*time.Millisecond)
	for subscribed.Load() < int64(n) {
		select {
		case err := <-errc:
			return Dist{}, fmt.Errorf("baseline stream: %w", err)
		case <-ctx.Done():
			return Dist{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return Dist{}, fmt.Errorf("baseline: only %d of %d streams subscribed", subscribed.Load(), n)
		}
	}
	var all []time.Duration
	for r := range rounds {
		k := uint64(r + 2)
		msg, err := frameFor(sample, k)
		if err != nil {
			return Dist{}, err
		}
		t0 := time.Now()
		bare.push(msg)
		wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
		tr.wait(wctx, k, n, false)
		wcancel()
		recv, _ := tr.take(k)
		ds, _ := since(t0, recv)
		all = append(all, ds...)
		pause(ctx, 200*time.Millisecond)
	}
	return summarize(all), nil
}

// frameFor is the sample snapshot renumbered so receivers can tell pushes apart; the size is that of
// the real snapshot.
func frameFor(sample *policyv1.WatchPolicyResponse, number uint64) (*rawFrame, error) {
	m := proto.Clone(sample).(*policyv1.WatchPolicyResponse)
	if m.Rendered == nil {
		m.Rendered = &policyv1.RenderedPolicy{}
	}
	m.Rendered.PolicyNumber = number
	return marshalFrame(m)
}

// pause lets the previous step's traffic drain before the next one is timed.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
