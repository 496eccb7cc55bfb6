package bench

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/backoff"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// Issuance is one concurrency setting of the issuance comparison.
type Issuance struct {
	Clients int `json:"clients"`
	// Through wardend: IssueCertificate, each CSR with a fresh P-256 key, signed and stored in etcd.
	Issued    int     `json:"issued"`
	PerSec    float64 `json:"certs_per_sec"`
	Latency   Dist    `json:"latency"`
	Throttled int     `json:"throttled"`
	Failed    int     `json:"failed"`
	// The first failure, when any.
	Error string `json:"error,omitempty"`
	// Raw in-process signing: pki.CA.Issue on a P-256 CA, Clients goroutines.
	RawSignPerSec float64 `json:"raw_sign_per_sec"`
	// Raw etcd puts (1.5 KiB values, about a certificate record) against wardend's embedded etcd,
	// Clients goroutines over one client connection.
	RawPutPerSec float64 `json:"raw_etcd_put_per_sec"`
	// PerSec / RawSignPerSec.
	OfRawSign float64 `json:"of_raw_sign"`
}

// issuer is a registered node that asks for its own certificates.
type issuer struct {
	id   string
	conn *grpc.ClientConn
}

// newIssuers registers n nodes for the issuance run. wardend limits each identity to 200 requests/s,
// so requests are spread over several nodes, as many agents renewing at once would be.
func (f *fleet) newIssuers(ctx context.Context, n int) ([]issuer, error) {
	out := make([]issuer, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("%s-issuer-%03d", f.prefix, i)
			cert, err := f.register(ctx, i, id)
			if err != nil {
				errs <- err
				return
			}
			tc := f.serverTLS()
			tc.Certificates = []tls.Certificate{cert}
			c, err := dialTLS(f.addr, tc, nil)
			if err != nil {
				errs <- err
				return
			}
			out[i] = issuer{id: id, conn: c}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closeIssuers(out)
		return nil, err
	}
	return out, nil
}

// issue asks wardend for a DB client certificate for csr, as the node itself.
func (i issuer) issue(ctx context.Context, csr []byte) (*certv1.IssueCertificateResponse, error) {
	return certv1.NewCertServiceClient(i.conn).IssueCertificate(ctx, &certv1.IssueCertificateRequest{
		NodeId: i.id, Kind: certv1.CertKind_CERT_KIND_DB_CLIENT, CsrPem: string(csr),
	})
}

func closeIssuers(is []issuer) {
	for _, i := range is {
		if i.conn != nil {
			_ = i.conn.Close()
		}
	}
}

// csrPool holds CSRs for fresh keys, generated before timing so key generation (the agent's work,
// done on the agent's host) does not compete with the server for this machine's CPUs.
type csrPool struct {
	csrs [][]byte
	keys []crypto.Signer
	next atomic.Int64
}

func newCSRPool(td string, n int) (*csrPool, error) {
	p := &csrPool{csrs: make([][]byte, n), keys: make([]crypto.Signer, n)}
	id := identity.NodeID(td, identity.RoleWebapp, "pool")
	for i := range n {
		k, err := pki.GenerateKey(pki.DefaultKeyType)
		if err != nil {
			return nil, err
		}
		csr, err := pki.CreateCSR(k, id)
		if err != nil {
			return nil, err
		}
		p.csrs[i], p.keys[i] = csr, k
	}
	return p, nil
}

// take returns an unused CSR and its key, false when the pool is spent.
func (p *csrPool) take() ([]byte, crypto.Signer, bool) {
	i := p.next.Add(1) - 1
	if i >= int64(len(p.csrs)) {
		return nil, nil, false
	}
	return p.csrs[i], p.keys[i], true
}

// issueThroughWardend runs clients concurrent callers for d (or until the pool is spent). Calls carry
// no deadline: the callers stop starting new ones after d and the ones in flight complete and count.
func issueThroughWardend(ctx context.Context, is []issuer, pool *csrPool, clients int, d time.Duration) (Issuance, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var throttled, failed atomic.Int64
	var firstErr atomic.Value
	var seq atomic.Int64
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			for ctx.Err() == nil && time.Now().Before(stop) {
				csr, _, ok := pool.take()
				if !ok {
					return
				}
				node := is[int(seq.Add(1))%len(is)]
				t := time.Now()
				_, err := node.issue(ctx, csr)
				switch {
				case err == nil:
					mine = append(mine, time.Since(t))
				case ctx.Err() != nil:
				case status.Code(err) == codes.ResourceExhausted:
					throttled.Add(1)
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := Issuance{Clients: clients, Issued: len(lat), Latency: summarize(lat), Throttled: int(throttled.Load()), Failed: int(failed.Load())}
	r.PerSec = float64(r.Issued) / elapsed.Seconds()
	if err, ok := firstErr.Load().(error); ok {
		r.Error = err.Error()
	}
	if r.Issued == 0 {
		if r.Error != "" {
			return r, fmt.Errorf("IssueCertificate: %s", r.Error)
		}
		return r, fmt.Errorf("IssueCertificate: nothing issued in %s", elapsed)
	}
	return r, nil
}

// rawSignRate is how many P-256 leaves an in-process CA signs per second with clients goroutines.
func rawSignRate(ctx context.Context, pool *csrPool, clients int, d time.Duration) (float64, error) {
	ca, err := pki.NewRootCA("raw.bench.local", 24*time.Hour, time.Now())
	if err != nil {
		return 0, err
	}
	tpl := pki.Template{
		ID:       identity.NodeID("raw.bench.local", identity.RoleWebapp, "web-1"),
		DNSNames: []string{"web-1.bench.local"}, Lifetime: 30 * 24 * time.Hour, Client: true,
	}
	return loopRate(ctx, clients, d, func(i int) error {
		_, _, err := ca.Issue(tpl, pool.keys[i%len(pool.keys)].Public(), time.Now())
		return err
	})
}

// rawPutRate is how many 1.5 KiB puts per second wardend's embedded etcd takes from clients
// goroutines sharing one client, through the client certificate under <data-dir>/etcd/pki. The keys
// live under a prefix no service reads and are deleted afterwards.
func rawPutRate(ctx context.Context, dataDir string, clients int, d time.Duration) (float64, error) {
	cli, err := etcdClient(dataDir)
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	const prefix = "/warden-bench/put/"
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = cli.Delete(dctx, prefix, clientv3.WithPrefix())
	}()
	val := make([]byte, 1536)
	_, _ = rand.Read(val)
	sval := string(val)
	return loopRate(ctx, clients, d, func(i int) error {
		_, err := cli.Put(ctx, prefix+strconv.Itoa(i), sval)
		return err
	})
}

func etcdClient(dataDir string) (*clientv3.Client, error) {
	dir := filepath.Join(dataDir, "etcd")
	b, err := os.ReadFile(filepath.Join(dir, "endpoints.json"))
	if err != nil {
		return nil, err
	}
	var ep struct {
		ClientPort int `json:"client_port"`
	}
	if err := json.Unmarshal(b, &ep); err != nil {
		return nil, fmt.Errorf("endpoints.json: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "pki", "client.crt"), filepath.Join(dir, "pki", "client.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("etcd ca.crt: no certificate")
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://127.0.0.1:" + strconv.Itoa(ep.ClientPort)},
		TLS:         &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13},
		DialTimeout: 5 * time.Second,
	})
}

// loopRate runs op from clients goroutines for d and returns completed operations per second. The
// operations in flight at the end complete and count.
func loopRate(ctx context.Context, clients int, d time.Duration, op func(i int) error) (float64, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil && firstErr.Load() == nil && time.Now().Before(stop) {
				if err := op(int(n.Add(1))); err != nil {
					firstErr.CompareAndSwap(nil, err)
					n.Add(-1)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// OneNode is a burst of certificates for a single node identity, the closest Warden analogue of
// "1,000 new credentials for one node": a Warden node holds a handful of certificates, so the burst
// is 1,000 IssueCertificate calls by one node, retried after back-off when the per-identity rate
// limit refuses them, as an agent would. Each credential counts once its key and certificate are on
// disk, written the way warden-agent writes its own (materialize.Writer: synced, renamed into place,
// directory synced).
type OneNode struct {
	Node      string  `json:"node"`
	Certs     int     `json:"certs"`
	Clients   int     `json:"clients"`
	TotalMS   float64 `json:"total_ms"`
	Throttled int     `json:"throttled"`
	// Credentials whose key and certificate files were written; TotalMS ends with the last of them.
	OnDisk int `json:"on_disk"`
}

// burstFiles names the key and certificate files of the burst's i-th credential.
func burstFiles(i int) (key, cert string) {
	return fmt.Sprintf("burst-%04d.key", i), fmt.Sprintf("burst-%04d.crt", i)
}

func oneNodeBurst(ctx context.Context, node issuer, pool *csrPool, certs, clients int, dir string) (OneNode, error) {
	r := OneNode{Node: node.id, Certs: certs, Clients: clients}
	w, err := materialize.NewWriter(materialize.Options{Dir: dir, GroupID: materialize.NoGroup})
	if err != nil {
		return r, err
	}
	var left, throttled, onDisk atomic.Int64
	left.Store(int64(certs))
	var firstErr atomic.Value
	fail := func(err error) { firstErr.CompareAndSwap(nil, err) }
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for n := left.Add(-1); n >= 0; n = left.Add(-1) {
				csr, key, ok := pool.take()
				if !ok {
					fail(fmt.Errorf("CSR pool spent"))
					return
				}
				certPEM, err := issueRetrying(ctx, node, csr, &throttled)
				if err != nil {
					fail(fmt.Errorf("IssueCertificate: %w", err))
					return
				}
				keyPEM, err := pki.MarshalKeyPEM(key)
				if err != nil {
					fail(err)
					return
				}
				keyName, certName := burstFiles(int(n))
				if _, err := w.Apply([]materialize.File{
					{Name: keyName, Data: keyPEM, Secret: true},
					{Name: certName, Data: []byte(certPEM)},
				}); err != nil {
					fail(err)
					return
				}
				onDisk.Add(1)
			}
		})
	}
	wg.Wait()
	r.TotalMS, r.Throttled, r.OnDisk = ms(time.Since(start)), int(throttled.Load()), int(onDisk.Load())
	if err, ok := firstErr.Load().(error); ok {
		return r, err
	}
	return r, nil
}

// issueRetrying asks for one certificate, sleeping with back-off while the rate limit refuses.
func issueRetrying(ctx context.Context, node issuer, csr []byte, throttled *atomic.Int64) (string, error) {
	b := backoff.Backoff{Initial: 10 * time.Millisecond, Max: time.Second, Jitter: 1}
	for {
		resp, err := node.issue(ctx, csr)
		if status.Code(err) != codes.ResourceExhausted {
			return resp.GetCertificate().GetCertificatePem(), err
		}
		throttled.Add(1)
		if err := backoff.Sleep(ctx, b.Next()); err != nil {
			return "", err
		}
	}
}
