package agent_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/pkitest"
)

// oneAgent runs wardend and one Webapp warden-agent (node web-1) as processes, waits for the agent's
// files and returns the admin connection and the agent. prepare gets the test's root directory before
// the agent starts and returns the agent's extra arguments.
func oneAgent(t *testing.T, prepare func(root string) []string) (*grpc.ClientConn, *agentProc) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs wardend and a warden-agent process")
	}
	e := newE2E(t)
	node, err := certv1.NewCertServiceClient(e.conn).CreateNode(t.Context(), &certv1.CreateNodeRequest{
		NodeId: "web-1", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp", Addresses: []string{"localhost", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	web := &agentProc{id: "web-1", dataDir: filepath.Join(e.root, "web-1")}
	args := []string{"run", "--role", "webapp", "--node-id", web.id, "--data-dir", web.dataDir,
		"--server", e.wardendAddr, "--join-token", node.GetJoinToken(), "--ca-fingerprint", node.GetCaFingerprint()}
	web.proc = start(t, web.id, e.logDir, e.agentBin, append(args, prepare(e.root)...)...)
	etcdtest.Eventually(t, bound, func() bool {
		_, err := os.Stat(filepath.Join(web.certsDir(), "webapp-https.key"))
		return err == nil && web.env(t)["WA_SECRET"] != ""
	}, "the agent's files on disk")
	return e.conn, web
}

// TestReloadBySignal: an app that wants a signal rather than a command (--reload-signal,
// --reload-pid-file) gets it once its files are on disk, and again when a policy change rewrites them.
func TestReloadBySignal(t *testing.T) {
	var app *exec.Cmd
	var appDir string
	conn, web := oneAgent(t, func(root string) []string {
		// The app: writes its PID, then appends a line to "usr1" for every SIGUSR1 it gets.
		appDir = filepath.Join(root, "app")
		if err := os.MkdirAll(appDir, 0o755); err != nil {
			t.Fatal(err)
		}
		app = exec.Command("sh", "-c", `trap 'echo x >> usr1' USR1; echo $$ > app.pid; while :; do sleep 0.05; done`)
		app.Dir = appDir
		if err := app.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = app.Process.Kill(); _ = app.Wait() })
		pidFile := filepath.Join(appDir, "app.pid")
		etcdtest.Eventually(t, bound, func() bool {
			raw, err := os.ReadFile(pidFile)
			return err == nil && strings.TrimSpace(string(raw)) == strconv.Itoa(app.Process.Pid)
		}, "the app wrote its PID")
		return []string{"--reload-signal", "USR1", "--reload-pid-file", pidFile, "--reload-debounce", "100ms"}
	})
	signals := func() int {
		raw, _ := os.ReadFile(filepath.Join(appDir, "usr1"))
		return bytes.Count(raw, []byte("\n"))
	}
	etcdtest.Eventually(t, bound, func() bool { return signals() >= 1 }, "the app signalled once its files were written")
	before := signals()

	if _, err := policyv1.NewPolicyServiceClient(conn).SetPolicy(t.Context(), &policyv1.SetPolicyRequest{
		Document: &policyv1.PolicyDocument{Defaults: &policyv1.PolicySettings{
			Tls: &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE}}},
		Message: "e2e: signal on change", AllowDowngrade: true, DowngradeReason: "e2e: reload by signal",
	}); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, bound, func() bool {
		return web.env(t)["WA_WEB_SECURITY_LEVEL"] == "INTERMEDIATE" && signals() > before
	}, "the policy change rewrote the env file and signalled the app again")
	if app.ProcessState != nil || !web.running() {
		t.Fatal("the app or the agent exited")
	}
}

// TestExternalCertificateReachesAgent: a certificate the operator uploads for a Webapp (from a public
// CA, say) replaces the one Warden issued on the node's disk, key included, and Warden's comes back
// when the upload is deleted.
func TestExternalCertificateReachesAgent(t *testing.T) {
	conn, web := oneAgent(t, func(string) []string { return nil })
	certs := certv1.NewCertServiceClient(conn)
	// The pair as the node's disk holds it, nil while it does not load (a key that does not match
	// its certificate does not).
	served := func() *x509.Certificate {
		pair, err := tls.LoadX509KeyPair(filepath.Join(web.certsDir(), "webapp-https.crt"), filepath.Join(web.certsDir(), "webapp-https.key"))
		if err != nil {
			return nil
		}
		return pair.Leaf
	}
	issued := web.keyPair(t, "webapp-https").Leaf
	pool := web.pool(t)
	if _, err := issued.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("the first webapp-https is not Warden's: %v", err)
	}

	bundle, leaf := pkitest.ExternalBundle(t, []string{"www.example.com"}, time.Now().Add(12*time.Hour), nil)
	if _, err := certs.UploadExternalCertificate(t.Context(), &certv1.UploadExternalCertificateRequest{NodeId: "web-1", BundlePem: bundle}); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, bound, func() bool { c := served(); return c != nil && c.Equal(leaf) }, "the uploaded certificate and its key on the node's disk")
	if m := fileMode(t, filepath.Join(web.certsDir(), "webapp-https.key")); m != 0o600 {
		t.Errorf("external key mode %o", m)
	}

	if _, err := certs.DeleteExternalCertificate(t.Context(), &certv1.DeleteExternalCertificateRequest{NodeId: "web-1"}); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, bound, func() bool {
		c := served()
		if c == nil || c.Equal(leaf) {
			return false
		}
		_, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err == nil
	}, "a Warden-issued webapp-https back once the upload is deleted")
}

// TestGroupReadableFiles: with --group, the app's group (another user than the agent's, typically)
// can read the certificates directory and the keys, and nobody else can.
func TestGroupReadableFiles(t *testing.T) {
	gid := otherGroup(t)
	_, web := oneAgent(t, func(string) []string { return []string{"--group", strconv.Itoa(gid)} })
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{
		{web.certsDir(), 0o750},
		{filepath.Join(web.certsDir(), "identity.key"), 0o640},
		{filepath.Join(web.certsDir(), "webapp-https.key"), 0o640},
		{filepath.Join(web.certsDir(), "webapp-https.crt"), 0o644},
	} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tc.mode {
			t.Errorf("%s: mode %o, want %o", tc.path, fi.Mode().Perm(), tc.mode)
		}
		if got := int(fi.Sys().(*syscall.Stat_t).Gid); tc.mode != 0o644 && got != gid {
			t.Errorf("%s: group %d, want %d", tc.path, got, gid)
		}
	}
}

// otherGroup is a group other than the process's own that it may give files to: one of its
// supplementary groups, or any group when it runs as root; the test is skipped without one.
func otherGroup(t *testing.T) int {
	t.Helper()
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if g != os.Getgid() {
			return g
		}
	}
	if os.Geteuid() == 0 {
		for _, name := range []string{"nogroup", "daemon", "nobody"} {
			if g, err := user.LookupGroup(name); err == nil {
				if id, err := strconv.Atoi(g.Gid); err == nil && id != os.Getgid() {
					return id
				}
			}
		}
	}
	t.Skip("no group other than the process's own to give files to")
	return 0
}
