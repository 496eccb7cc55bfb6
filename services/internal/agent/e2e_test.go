package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/agent/agenttest"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/wardend"
)

// bound is the limit of every wait; the whole test normally takes well under a minute.
const bound = 45 * time.Second

var fiveHeaders = []string{"Content-Security-Policy", "X-Frame-Options", "X-Xss-Protection", "X-Content-Type-Options", "Strict-Transport-Security"}

// binaries returns the wardend and warden-agent executables: from $WARDEN_BIN (make builds them
// first), else built into a temporary directory.
func binaries(t *testing.T) (wardendBin, agentBin string) {
	t.Helper()
	if dir := os.Getenv("WARDEN_BIN"); dir != "" {
		w, a := filepath.Join(dir, "wardend"), filepath.Join(dir, "warden-agent")
		if _, err := os.Stat(w); err == nil {
			if _, err := os.Stat(a); err == nil {
				return w, a
			}
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "../../cmd/wardend", "../../cmd/warden-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "wardend"), filepath.Join(dir, "warden-agent")
}

// proc is a child process whose output goes to a log file, shown (its tail) when the test fails, or in
// full with E2E_LOGS=1.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(t *testing.T, name, logDir, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() || os.Getenv("E2E_LOGS") != "" {
			raw, _ := os.ReadFile(logPath)
			if len(raw) > 6000 && os.Getenv("E2E_LOGS") == "" {
				raw = raw[len(raw)-6000:]
			}
			t.Logf("---- %s log (tail) ----\n%s", name, raw)
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits, killing after a grace period.
func (p *proc) stop() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func adminConn(t *testing.T, addr, dataDir string) *grpc.ClientConn {
	t.Helper()
	files := wardend.AdminFilesIn(dataDir)
	pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(raw)
	tc := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// startWardend runs wardend and waits until it serves the admin.
func startWardend(t *testing.T, bin, addr, dataDir, logDir string) (*proc, *grpc.ClientConn) {
	t.Helper()
	p := start(t, "wardend", logDir, bin, "--data-dir", dataDir, "--listen", addr, "--metrics-listen", "", "--log-level", "info")
	var conn *grpc.ClientConn
	etcdtest.Eventually(t, bound, func() bool {
		if !p.running() {
			t.Fatal("wardend exited")
		}
		// wardend writes admin.crt last.
		if _, err := tls.LoadX509KeyPair(wardend.AdminFilesIn(dataDir).Cert, wardend.AdminFilesIn(dataDir).Key); err != nil {
			return false
		}
		// Dial afresh each time: after a CA rotation a restarted wardend replaces the admin files.
		if conn != nil {
			_ = conn.Close()
		}
		conn = adminConn(t, addr, dataDir)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := certv1.NewCertServiceClient(conn).GetCAStatus(ctx, &certv1.GetCAStatusRequest{})
		return err == nil
	}, "wardend serves")
	return p, conn
}

func zonesPolicy(profile policyv1.TLSProfile) *policyv1.PolicyDocument {
	zone := func(name, cidr string) *policyv1.Zone { return &policyv1.Zone{Name: name, Cidrs: []string{cidr}} }
	reach := func(ep policyv1.Endpoint, from ...string) *policyv1.Reach {
		return &policyv1.Reach{Endpoint: ep, FromZones: from}
	}
	return &policyv1.PolicyDocument{Defaults: &policyv1.PolicySettings{
		Tls: &policyv1.TLSSettings{Profile: profile},
		Network: &policyv1.NetworkSettings{
			// Distinct loopback networks stand in for the zones; Linux routes all of 127/8 to lo.
			Zones: []*policyv1.Zone{
				zone("coreapp", "127.0.0.0/24"), zone("webapp", "127.0.1.0/24"), zone("management", "127.0.2.0/24"),
				zone("clients", "127.0.3.0/24"), zone("db", "127.0.4.0/24"),
			},
			Reach: []*policyv1.Reach{
				reach(policyv1.Endpoint_ENDPOINT_WEBAPP_API, "clients", "management"),
				reach(policyv1.Endpoint_ENDPOINT_WEBAPP_ADMIN, "management"),
				reach(policyv1.Endpoint_ENDPOINT_COREAPP_COMMUNICATION, "webapp"),
				reach(policyv1.Endpoint_ENDPOINT_COREAPP_CONTROL, "coreapp"),
				reach(policyv1.Endpoint_ENDPOINT_DB, "webapp", "coreapp"),
			},
		},
	}}
}

// httpClient dials from the loopback address src; maxVersion 0 allows TLS 1.3.
func httpClient(src string, pool *x509.CertPool, maxVersion uint16) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:       d.DialContext,
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: maxVersion},
	}}
}

// exchange sends one line over mTLS from src and returns the answer line.
func exchange(src, addr string, cert tls.Certificate, pool *x509.CertPool, line string) (string, error) {
	d := &tls.Dialer{
		NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second},
		Config:    &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
	}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, line); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

type agentProc struct {
	*proc
	id      string
	dataDir string
	front   string // webapp HTTPS front, or coreapp control endpoint
	comm    string
}

func (a *agentProc) certsDir() string { return filepath.Join(a.dataDir, "certs") }

func (a *agentProc) readFile(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(a.certsDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (a *agentProc) keyPair(t *testing.T, kind string) tls.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(a.certsDir(), kind+".crt"), filepath.Join(a.certsDir(), kind+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func (a *agentProc) env(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(a.dataDir, materialize.EnvFileName))
	if err != nil {
		return nil
	}
	env, err := materialize.ParseEnv(raw)
	if err != nil {
		t.Fatalf("%s env file: %v", a.id, err)
	}
	return env
}

func (a *agentProc) status(t *testing.T) *status.Status {
	t.Helper()
	s, err := status.Read(a.dataDir)
	if err != nil {
		return &status.Status{}
	}
	return s
}

func (a *agentProc) pool(t *testing.T) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.readFile(t, "ca-bundle.crt"))
	return pool
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// issuedBy reports whether the leaf of a certificate file verifies against exactly the CA given.
func issuedBy(t *testing.T, certPEM []byte, ca *x509.Certificate) bool {
	t.Helper()
	certs, err := pki.ParseCertsPEM(certPEM)
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// TestEndToEnd runs wardend and four agents as processes and walks the acceptance criteria.
// e2e is wardend running as a process for an end-to-end test, with its data and every process's log
// under a fresh root directory.
type e2e struct {
	root, logDir, wardendAddr, wardendDir string
	wardendBin, agentBin                  string
	wardend                               *proc
	conn                                  *grpc.ClientConn // the admin's
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	e := &e2e{root: t.TempDir(), wardendAddr: etcdtest.FreeAddr(t)}
	e.wardendBin, e.agentBin = binaries(t)
	e.logDir, e.wardendDir = filepath.Join(e.root, "logs"), filepath.Join(e.root, "wardend")
	if err := os.MkdirAll(e.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.wardend, e.conn = startWardend(t, e.wardendBin, e.wardendAddr, e.wardendDir, e.logDir)
	return e
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs wardend and four warden-agent processes")
	}
	for _, ip := range []string{"127.0.1.1", "127.0.2.1", "127.0.3.1", "127.0.0.7"} {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("the zones are loopback networks; this host cannot bind %s: %v", ip, err)
		}
		_ = l.Close()
	}
	e := newE2E(t)
	root, logDir, wardendAddr, wdDir, wardendBin, agentBin, wd, conn := e.root, e.logDir, e.wardendAddr, e.wardendDir, e.wardendBin, e.agentBin, e.wardend, e.conn
	ctx := t.Context()
	certs := certv1.NewCertServiceClient(conn)
	policies := policyv1.NewPolicyServiceClient(conn)
	secrets := secretv1.NewSecretServiceClient(conn)
	mesh := meshv1.NewMeshServiceClient(conn)

	if _, err := policies.SetPolicy(ctx, &policyv1.SetPolicyRequest{
		Document: zonesPolicy(policyv1.TLSProfile_TLS_PROFILE_MODERN), Message: "e2e zones",
		AllowDowngrade: true, DowngradeReason: "e2e: zones on loopback networks",
	}); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	if _, err := mesh.SetMeshConfig(ctx, &meshv1.SetMeshConfigRequest{Config: &meshv1.MeshConfig{
		Shards: 2, MasterElection: true, MemberTtl: durationpb.New(3 * time.Second),
	}}); err != nil {
		t.Fatalf("SetMeshConfig: %v", err)
	}

	// The local apps the fronts stand before.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "webapp %s", r.URL.Path)
	}))
	t.Cleanup(upstream.Close)
	echo := agenttest.LineEcho(t, "coreapp ")

	newNode := func(id string, role certv1.NodeRole, zone string) *certv1.CreateNodeResponse {
		resp, err := certs.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: id, Role: role, Zone: zone, Addresses: []string{"localhost", "127.0.0.1"}})
		if err != nil {
			t.Fatalf("CreateNode %s: %v", id, err)
		}
		return resp
	}
	common := func(id, role string, node *certv1.CreateNodeResponse, dataDir string) []string {
		return []string{"run", "--role", role, "--node-id", id, "--data-dir", dataDir, "--server", wardendAddr,
			"--join-token", node.GetJoinToken(), "--ca-fingerprint", node.GetCaFingerprint(),
			"--reload-command", "touch " + filepath.Join(dataDir, "reloaded"), "--reload-debounce", "100ms",
			"--status-interval", "500ms"}
	}
	web := &agentProc{id: "web-1", dataDir: filepath.Join(root, "web-1"), front: etcdtest.FreeAddr(t)}
	webNode := newNode(web.id, certv1.NodeRole_NODE_ROLE_WEBAPP, "webapp")
	web.proc = start(t, web.id, logDir, agentBin, append(common(web.id, "webapp", webNode, web.dataDir),
		"--front-listen", web.front, "--upstream", upstream.URL)...)
	var cores []*agentProc
	for i := 1; i <= 3; i++ {
		a := &agentProc{id: fmt.Sprintf("core-%d", i), dataDir: filepath.Join(root, fmt.Sprintf("core-%d", i)), front: etcdtest.FreeAddr(t), comm: etcdtest.FreeAddr(t)}
		n := newNode(a.id, certv1.NodeRole_NODE_ROLE_COREAPP, "coreapp")
		args := append(common(a.id, "coreapp", n, a.dataDir), "--control-listen", a.front, "--comm-listen", a.comm,
			"--comm-upstream", echo.Addr().String(), "--mesh-interval", "1s")
		if i == 1 {
			args = append(args, "--master")
		}
		a.proc = start(t, a.id, logDir, agentBin, args...)
		cores = append(cores, a)
	}
	all := append([]*agentProc{web}, cores...)

	t.Run("files", func(t *testing.T) {
		want := map[string][]string{
			"webapp":  {"identity", "webapp-https", "db-client"},
			"coreapp": {"identity", "coreapp-communication", "coreapp-control", "db-client"},
		}
		for _, a := range all {
			role := "coreapp"
			if a == web {
				role = "webapp"
			}
			etcdtest.Eventually(t, bound, func() bool {
				for _, k := range want[role] {
					if _, err := os.Stat(filepath.Join(a.certsDir(), k+".key")); err != nil {
						return false
					}
				}
				env := a.env(t)
				_, reloaded := os.Stat(filepath.Join(a.dataDir, "reloaded"))
				return env["WA_SECRET"] != "" && reloaded == nil
			}, a.id+" materialised its files and reloaded the app")
			if m := fileMode(t, a.certsDir()); m != 0o700 {
				t.Errorf("%s: certs dir %o", a.id, m)
			}
			if m := fileMode(t, filepath.Join(a.dataDir, "warden.env")); m != 0o600 {
				t.Errorf("%s: env file %o", a.id, m)
			}
			pool := a.pool(t)
			for _, k := range want[role] {
				if m := fileMode(t, filepath.Join(a.certsDir(), k+".key")); m != 0o600 {
					t.Errorf("%s: %s.key mode %o", a.id, k, m)
				}
				if m := fileMode(t, filepath.Join(a.certsDir(), k+".crt")); m != 0o644 {
					t.Errorf("%s: %s.crt mode %o", a.id, k, m)
				}
				pair := a.keyPair(t, k)
				if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					t.Errorf("%s: %s does not verify against ca-bundle.crt: %v", a.id, k, err)
				}
				if id, err := identity.FromCertificate(pair.Leaf); err != nil || id.Name != a.id || string(id.Role) != role {
					t.Errorf("%s: %s names %v (%v)", a.id, k, id, err)
				}
			}
			env := a.env(t)
			if v, err := hex.DecodeString(env["WA_SECRET"]); err != nil || len(v) < 16 {
				t.Errorf("%s: WA_SECRET is not hex of at least 16 bytes", a.id)
			}
			if m := fileMode(t, filepath.Join(a.certsDir(), "wa-secret.json")); m != 0o600 {
				t.Errorf("%s: wa-secret.json mode %o", a.id, m)
			}
			if role == "webapp" {
				if env["WA_WEB_SECURITY_LEVEL"] != "MODERN" || env["WA_DB_SSL_CERT"] == "" || env["WA_DB_SSL_VERIFY"] == "" {
					t.Errorf("%s: env %v lacks the Webapp settings", a.id, keys(env))
				}
			} else if env["WA_DB_CONNECTION_OPTION"] == "" {
				t.Errorf("%s: env %v lacks WA_DB_CONNECTION_OPTION", a.id, keys(env))
			}
		}
		for _, f := range []string{"coreapp-control.key", "coreapp-communication.key", "webhook-ca.crt"} {
			if _, err := os.Stat(filepath.Join(web.certsDir(), f)); err == nil {
				t.Errorf("the Webapp holds %s", f)
			}
		}
	})

	t.Run("database and webhook CAs", func(t *testing.T) {
		extCA, err := pki.NewRootCA("db.example", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		caPEM := pki.EncodeCertsPEM(extCA.Cert)
		if _, err := certs.SetDatabaseCA(ctx, &certv1.SetDatabaseCARequest{BundlePem: string(caPEM)}); err != nil {
			t.Fatal(err)
		}
		if _, err := certs.AddWebhookCA(ctx, &certv1.AddWebhookCARequest{Name: "hooks", BundlePem: string(caPEM)}); err != nil {
			t.Fatal(err)
		}
		for _, a := range all {
			etcdtest.Eventually(t, bound, func() bool {
				raw, err := os.ReadFile(filepath.Join(a.certsDir(), "db-ca.crt"))
				if err != nil || !bytes.Equal(raw, caPEM) {
					return false
				}
				if a == web {
					return true
				}
				raw, err = os.ReadFile(filepath.Join(a.certsDir(), "webhook-ca.crt"))
				return err == nil && bytes.Contains(raw, caPEM)
			}, a.id+" wrote the database CA (and, on a Coreapp, the webhook CA)")
		}
		if _, err := os.Stat(filepath.Join(web.certsDir(), "webhook-ca.crt")); err == nil {
			t.Error("the Webapp holds the webhook CA bundle")
		}
	})

	webPool := web.pool(t)
	base := "https://" + web.front
	mgmt := httpClient("127.0.2.1", webPool, 0)
	get := func(c *http.Client, path string) (*http.Response, error) {
		resp, err := c.Get(base + path)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	t.Run("webapp front headers and allowlists", func(t *testing.T) {
		etcdtest.Eventually(t, bound, func() bool {
			resp, err := get(mgmt, "/admin/")
			return err == nil && resp.StatusCode == http.StatusOK
		}, "front serves the admin path to the management zone")
		resp, err := get(mgmt, "/admin/")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range fiveHeaders {
			if resp.Header.Get(h) == "" {
				t.Errorf("admin path lacks %s", h)
			}
		}
		resp, err = get(mgmt, "/v1/messages")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("API path: %v %v", resp, err)
		}
		for _, h := range fiveHeaders {
			if v := resp.Header.Get(h); v != "" {
				t.Errorf("API path carries %s: %s", h, v)
			}
		}
		// A Coreapp (coreapp zone) may not reach the Web Admin, nor the API.
		core := httpClient("127.0.0.7", webPool, 0)
		for _, p := range []string{"/admin/", "/v1/messages"} {
			if resp, err := get(core, p); err != nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s from the coreapp zone: %v %v, want 403", p, resp, err)
			}
		}
		clients := httpClient("127.0.3.1", webPool, 0)
		if resp, err := get(clients, "/admin/"); err != nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("admin from the clients zone: %v %v, want 403", resp, err)
		}
		if resp, err := get(clients, "/v1/messages"); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("API from the clients zone: %v %v, want 200", resp, err)
		}
	})

	t.Run("coreapp endpoints", func(t *testing.T) {
		c1, c2 := cores[0], cores[1]
		pool := c1.pool(t)
		webID := web.keyPair(t, "identity")
		ctl := c2.keyPair(t, "coreapp-control")
		etcdtest.Eventually(t, bound, func() bool {
			got, err := exchange("127.0.0.1", c1.front, ctl, pool, "PING 0a\n")
			return err == nil && got == "PONG core-1 0a\n"
		}, "control endpoint answers a Coreapp")
		if got, err := exchange("127.0.0.1", c1.front, webID, pool, "PING 0a\n"); err == nil {
			t.Errorf("a Webapp identity got %q from the control endpoint", got)
		}
		if got, err := exchange("127.0.1.1", c1.comm, webID, pool, "hello\n"); err != nil || got != "coreapp hello\n" {
			t.Errorf("Webapp through the communication front: %q %v", got, err)
		}
		if got, err := exchange("127.0.1.1", c1.comm, ctl, pool, "hello\n"); err == nil {
			t.Errorf("a Coreapp identity got %q through the communication front", got)
		}
		if got, err := exchange("127.0.2.1", c1.comm, webID, pool, "hello\n"); err == nil {
			t.Errorf("the communication front answered %q outside the webapp zone", got)
		}
	})

	t.Run("policy change reaches the front without restart", func(t *testing.T) {
		pid := web.status(t).PID
		tls12 := httpClient("127.0.2.1", webPool, tls.VersionTLS12)
		if _, err := get(tls12, "/v1/x"); err == nil {
			t.Fatal("TLS 1.2 client connected under MODERN")
		}
		if _, err := policies.SetPolicy(ctx, &policyv1.SetPolicyRequest{
			Document: zonesPolicy(policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE), Message: "e2e: TLS 1.2 clients",
			AllowDowngrade: true, DowngradeReason: "e2e: legacy clients",
		}); err != nil {
			t.Fatal(err)
		}
		etcdtest.Eventually(t, bound, func() bool {
			resp, err := get(tls12, "/v1/x")
			return err == nil && resp.TLS.Version == tls.VersionTLS12
		}, "TLS 1.2 client connects after INTERMEDIATE")
		if !web.running() || web.status(t).PID != pid {
			t.Error("the Webapp agent restarted")
		}
		if web.env(t)["WA_WEB_SECURITY_LEVEL"] != "INTERMEDIATE" {
			t.Error("env file not updated to INTERMEDIATE")
		}
	})

	t.Run("secret rotation", func(t *testing.T) {
		rot, err := secrets.RotateSecret(ctx, &secretv1.RotateSecretRequest{Name: "wa-secret"})
		if err != nil {
			t.Fatal(err)
		}
		n := rot.GetStagedNumber()
		etcdtest.Eventually(t, bound, func() bool {
			st, err := secrets.GetRotationStatus(ctx, &secretv1.GetRotationStatusRequest{Name: "wa-secret"})
			return err == nil && st.GetActiveNumber() == n && st.GetStagedNumber() == 0
		}, "rotation promoted after every node acknowledged")
		val, err := secrets.RevealSecret(ctx, &secretv1.RevealSecretRequest{Name: "wa-secret", Number: n, Reason: "e2e check"})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range all {
			etcdtest.Eventually(t, bound, func() bool {
				return a.env(t)["WA_SECRET"] == hex.EncodeToString(val.GetValue())
			}, a.id+" renders the new active WA_SECRET")
		}
	})

	t.Run("CA rotation", func(t *testing.T) {
		oldCA, err := pki.ParseCertsPEM(web.readFile(t, "ca-bundle.crt"))
		if err != nil || len(oldCA) != 1 {
			t.Fatalf("trust bundle before the rotation: %d roots, %v", len(oldCA), err)
		}
		// crlSignedBy: crl.pem holds one CRL per CA, signed by each of cas in that order.
		crlSignedBy := func(a *agentProc, cas ...*x509.Certificate) bool {
			crls, err := pki.ParseCRLs(a.readFile(t, "crl.pem"))
			if err != nil || len(crls) != len(cas) {
				return false
			}
			for i, ca := range cas {
				if crls[i].CheckSignatureFrom(ca) != nil {
					return false
				}
			}
			return true
		}
		prep, err := certs.PrepareCA(ctx, &certv1.PrepareCARequest{})
		if err != nil {
			t.Fatal(err)
		}
		newCA, err := pki.ParseCertsPEM([]byte(prep.GetCa().GetCertPem()))
		if err != nil {
			t.Fatal(err)
		}
		etcdtest.Eventually(t, bound, func() bool {
			st, err := certs.GetCAStatus(ctx, &certv1.GetCAStatusRequest{})
			return err == nil && len(st.GetLagging()) == 0
		}, "every node acknowledged the bundle with the new CA")
		if _, err := certs.ActivateCA(ctx, &certv1.ActivateCARequest{}); err != nil {
			t.Fatalf("ActivateCA without force: %v", err)
		}
		for _, a := range all {
			kinds := []string{"identity", "db-client", "coreapp-control", "coreapp-communication"}
			if a == web {
				kinds = []string{"identity", "db-client", "webapp-https"}
			}
			etcdtest.Eventually(t, bound, func() bool {
				for _, k := range kinds {
					raw, err := os.ReadFile(filepath.Join(a.certsDir(), k+".crt"))
					if err != nil || !issuedBy(t, raw, newCA[0]) {
						return false
					}
				}
				return true
			}, a.id+" re-issued every certificate from the new CA")
			etcdtest.Eventually(t, bound, func() bool { return crlSignedBy(a, newCA[0], oldCA[0]) },
				a.id+" holds a CRL from each trusted CA, so the old CA's certificates can still be checked")
		}
		if _, err := certs.RetireCA(ctx, &certv1.RetireCARequest{Force: true}); err != nil {
			t.Fatal(err)
		}
		for _, a := range all {
			etcdtest.Eventually(t, bound, func() bool {
				certs, err := pki.ParseCertsPEM(a.readFile(t, "ca-bundle.crt"))
				return err == nil && len(certs) == 1 && certs[0].Equal(newCA[0])
			}, a.id+" trusts only the new CA")
			etcdtest.Eventually(t, bound, func() bool { return crlSignedBy(a, newCA[0]) }, a.id+" holds the new CA's CRL only")
		}
	})

	t.Run("mesh", func(t *testing.T) {
		etcdtest.Eventually(t, bound, func() bool {
			st, err := mesh.GetMeshStatus(ctx, &meshv1.GetMeshStatusRequest{})
			if err != nil || len(st.GetMembers()) != 3 {
				return false
			}
			up := 0
			for _, l := range st.GetLinks() {
				if l.GetReachable() {
					up++
				}
			}
			return up == 6
		}, "three members that all see each other")
		cores[2].kill()
		etcdtest.Eventually(t, bound, func() bool {
			st, err := mesh.GetMeshStatus(ctx, &meshv1.GetMeshStatusRequest{})
			if err != nil {
				return false
			}
			for _, m := range st.GetMembers() {
				if m.GetNodeId() == "core-3" {
					return false
				}
			}
			for _, l := range st.GetLinks() {
				if l.GetToNodeId() == "core-3" && l.GetReachable() {
					return false
				}
			}
			return true
		}, "the killed Coreapp leaves the mesh matrix")
	})

	t.Run("offline and resync", func(t *testing.T) {
		wd.stop()
		clients := httpClient("127.0.3.1", web.pool(t), 0)
		etcdtest.Eventually(t, bound, func() bool {
			return !web.status(t).Streams[status.StreamPolicy].Connected
		}, "the agent notices the control plane is gone")
		if resp, err := get(clients, "/v1/offline"); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("front while the control plane is down: %v %v", resp, err)
		}
		for _, f := range []string{"identity.key", "webapp-https.key", "ca-bundle.crt"} {
			if _, err := os.Stat(filepath.Join(web.certsDir(), f)); err != nil {
				t.Errorf("%s gone while offline: %v", f, err)
			}
		}
		out, err := exec.Command(agentBin, "status", "--data-dir", web.dataDir).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("disconnected")) || !bytes.Contains(out, []byte("cert webapp-https")) {
			t.Errorf("warden-agent status: %v\n%s", err, out)
		}
		out, err = exec.Command(agentBin, "status", "--data-dir", web.dataDir, "-o", "json").Output()
		var st status.Status
		if err != nil || json.Unmarshal(out, &st) != nil || st.NodeID != "web-1" {
			t.Errorf("warden-agent status -o json: %v\n%s", err, out)
		}

		restarted := time.Now()
		_, conn := startWardend(t, wardendBin, wardendAddr, wdDir, logDir)
		for _, a := range all[:3] {
			etcdtest.Eventually(t, bound, func() bool {
				s := a.status(t)
				return s.LastContact.After(restarted) && s.Streams[status.StreamCredentials].Connected
			}, a.id+" resynchronised with the restarted control plane")
		}
		// A change after the restart flows again: back to MODERN refuses TLS 1.2.
		if _, err := policyv1.NewPolicyServiceClient(conn).SetPolicy(ctx, &policyv1.SetPolicyRequest{
			Document: zonesPolicy(policyv1.TLSProfile_TLS_PROFILE_MODERN), Message: "e2e: back to MODERN",
		}); err != nil {
			t.Fatal(err)
		}
		tls12 := httpClient("127.0.2.1", web.pool(t), tls.VersionTLS12)
		etcdtest.Eventually(t, bound, func() bool {
			_, err := get(tls12, "/v1/x")
			return err != nil
		}, "MODERN reaches the front after the restart")
	})
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
