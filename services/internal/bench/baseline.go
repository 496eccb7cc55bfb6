package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// The baseline server runs in a child process, as wardend does: the same process topology, the same
// split of the cores, and each side within its own open-file limit (10,000 streams on one connection
// each are 20,000 sockets, which one process may not be allowed to hold). The child is this
// executable with baselineEnv set; it reads its files from the paths in the environment.
const (
	baselineEnv      = "WARDEN_BENCH_BASELINE_DIR"
	baselineCert     = "server.crt"
	baselineKey      = "server.key"
	baselineSample   = "sample.pb"
	baselineAddrLine = "listening "
	baselinePushLine = "push "
)

// ServeBaselineIfAsked turns this process into the baseline server when the bench started it as
// one, and exits when the parent closes its stdin. Call it first in main (and in TestMain).
func ServeBaselineIfAsked() {
	dir := os.Getenv(baselineEnv)
	if dir == "" {
		return
	}
	if err := serveBaseline(dir, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "baseline server:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

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

// rawFrame is an already serialized message; rawCodec sends its bytes as they are.
type rawFrame struct{ b []byte }

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

// frameFor is the sample snapshot renumbered so receivers can tell pushes apart; the size is that of
// the real snapshot.
func frameFor(sample *policyv1.WatchPolicyResponse, number uint64) (*rawFrame, error) {
	m := proto.Clone(sample).(*policyv1.WatchPolicyResponse)
	if m.Rendered == nil {
		m.Rendered = &policyv1.RenderedPolicy{}
	}
	m.Rendered.PolicyNumber = number
	b, err := proto.Marshal(m)
	return &rawFrame{b: b}, err
}

// serveBaseline is the child's side: serve on a free loopback port, print it, then push on every
// "push <n>" line until stdin closes.
func serveBaseline(dir string, in io.Reader, out io.Writer) error {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, baselineCert), filepath.Join(dir, baselineKey))
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(dir, baselineSample))
	if err != nil {
		return err
	}
	sample := &policyv1.WatchPolicyResponse{}
	if err := proto.Unmarshal(raw, sample); err != nil {
		return fmt.Errorf("sample: %w", err)
	}
	first, err := frameFor(sample, 1)
	if err != nil {
		return err
	}
	bare := &bareServer{cur: &bareRound{done: make(chan struct{}), msg: first}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}})),
		grpc.ForceServerCodec(rawCodec{}))
	policyv1.RegisterPolicyServiceServer(gs, bare)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	if _, err := fmt.Fprintf(out, "%s%s\n", baselineAddrLine, lis.Addr()); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		arg, ok := strings.CutPrefix(sc.Text(), baselinePushLine)
		if !ok {
			return fmt.Errorf("unknown command %q", sc.Text())
		}
		n, err := strconv.ParseUint(arg, 10, 64)
		if err != nil {
			return fmt.Errorf("push %q: %w", arg, err)
		}
		f, err := frameFor(sample, n)
		if err != nil {
			return err
		}
		bare.push(f)
	}
	return sc.Err()
}

// baselineProc is the running child.
type baselineProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
	pool  *x509.CertPool
}

// startBaseline writes the server credentials and the sample, starts the child and waits for its
// address.
func startBaseline(self, dir string, sample *policyv1.WatchPolicyResponse) (*baselineProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := pki.NewRootCA("baseline.bench.local", 24*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		return nil, err
	}
	leaf, _, err := ca.Issue(pki.Template{
		ID:       identity.ControlPlaneID("baseline.bench.local"),
		DNSNames: []string{"localhost"}, Lifetime: 24 * time.Hour, Server: true,
	}, key.Public(), time.Now())
	if err != nil {
		return nil, err
	}
	certPEM := pki.EncodeCertsPEM(leaf)
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	raw, err := proto.Marshal(sample)
	if err != nil {
		return nil, err
	}
	for name, b := range map[string][]byte{baselineCert: certPEM, baselineKey: keyPEM, baselineSample: raw} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	logf, err := os.Create(filepath.Join(dir, "baseline.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), baselineEnv+"="+dir)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start baseline server %s: %w", self, err)
	}
	p := &baselineProc{cmd: cmd, stdin: stdin, pool: x509.NewCertPool()}
	p.pool.AddCert(ca.Cert)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), baselineAddrLine)
	if err != nil || !ok {
		p.stop()
		return nil, fmt.Errorf("baseline server did not start (%q, %v); log: %s\n%s", line, err, logf.Name(), tail(logf.Name(), 2000))
	}
	p.addr = addr
	return p, nil
}

func (p *baselineProc) push(n uint64) error {
	_, err := fmt.Fprintf(p.stdin, "%s%d\n", baselinePushLine, n)
	return err
}

func (p *baselineProc) stop() {
	_ = p.stdin.Close()
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// baselineRun is what one baseline measurement found.
type baselineRun struct {
	recv Dist
	// The server's RSS growth per stream, read after the pushes like wardend's.
	rssKiBPerStream float64
}

// runBaseline measures the bare server with n streams: over one TLS connection per stream (as the
// agents connect to wardend) when conns is 0, else multiplexed over conns connections. It returns the
// receive latencies of every push, pooled over rounds, and the server's memory per stream.
func runBaseline(ctx context.Context, self, dir string, sample *policyv1.WatchPolicyResponse, n, conns, rounds int) (baselineRun, error) {
	srv, err := startBaseline(self, dir, sample)
	if err != nil {
		return baselineRun{}, err
	}
	defer srv.stop()
	idle, err := rssKiB(srv.cmd.Process.Pid)
	if err != nil {
		return baselineRun{}, err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nconn := n
	if conns > 0 {
		nconn = min(conns, n)
	}
	clients := make([]*grpc.ClientConn, 0, nconn)
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	for range nconn {
		c, err := dialTLS(srv.addr, &tls.Config{RootCAs: srv.pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}, nil)
		if err != nil {
			return baselineRun{}, err
		}
		clients = append(clients, c)
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
					if ctx.Err() == nil {
						select {
						case errc <- err:
						default:
						}
					}
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
			return baselineRun{}, fmt.Errorf("baseline stream: %w", err)
		case <-ctx.Done():
			return baselineRun{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return baselineRun{}, fmt.Errorf("baseline: only %d of %d streams subscribed", subscribed.Load(), n)
		}
	}
	var all []time.Duration
	missing := 0
	for r := range rounds {
		pause(ctx, 300*time.Millisecond)
		k := uint64(r + 2)
		t0 := time.Now()
		if err := srv.push(k); err != nil {
			return baselineRun{}, fmt.Errorf("baseline push: %w", err)
		}
		wctx, wcancel := context.WithTimeout(ctx, roundDeadline(n))
		tr.wait(wctx, k, n, false)
		wcancel()
		recv, _ := tr.take(k)
		missing += n - len(recv)
		ds, _ := since(t0, recv)
		all = append(all, ds...)
	}
	run := baselineRun{recv: summarize(all)}
	pause(ctx, 3*time.Second) // as wardend's memory is read 3 s after its changes
	if rss, err := rssKiB(srv.cmd.Process.Pid); err == nil {
		run.rssKiBPerStream = float64(rss-idle) / float64(n)
	}
	if missing > 0 {
		return run, errors.New("baseline: " + strconv.Itoa(missing) + " receipts missing")
	}
	return run, nil
}

// pause lets the previous step's traffic drain before the next one is timed.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
