package agent_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

// TestReloadBySignal runs wardend and one warden-agent whose app wants a signal rather than a command
// (--reload-signal, --reload-pid-file): the app must get it once its files are on disk, and again when
// a policy change rewrites them, and keep running.
func TestReloadBySignal(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs wardend and a warden-agent process")
	}
	wardendBin, agentBin := binaries(t)
	root := t.TempDir()
	logDir := filepath.Join(root, "logs")
	appDir := filepath.Join(root, "app")
	for _, d := range []string{logDir, appDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	wardendAddr := etcdtest.FreeAddr(t)
	_, conn := startWardend(t, wardendBin, wardendAddr, filepath.Join(root, "wardend"), logDir)
	ctx := t.Context()

	// The app: writes its PID, then appends a line to "usr1" for every SIGUSR1 it gets.
	app := exec.Command("sh", "-c", `trap 'echo x >> usr1' USR1; echo $$ > app.pid; while :; do sleep 0.05; done`)
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
	signals := func() int {
		raw, _ := os.ReadFile(filepath.Join(appDir, "usr1"))
		return bytes.Count(raw, []byte("\n"))
	}

	node, err := certv1.NewCertServiceClient(conn).CreateNode(ctx, &certv1.CreateNodeRequest{
		NodeId: "web-sig", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp", Addresses: []string{"localhost", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	web := &agentProc{id: "web-sig", dataDir: filepath.Join(root, "web-sig")}
	web.proc = start(t, web.id, logDir, agentBin, "run", "--role", "webapp", "--node-id", web.id, "--data-dir", web.dataDir,
		"--server", wardendAddr, "--join-token", node.GetJoinToken(), "--ca-fingerprint", node.GetCaFingerprint(),
		"--reload-signal", "USR1", "--reload-pid-file", pidFile, "--reload-debounce", "100ms")

	etcdtest.Eventually(t, bound, func() bool {
		_, err := os.Stat(filepath.Join(web.certsDir(), "identity.key"))
		return err == nil && web.env(t)["WA_SECRET"] != "" && signals() >= 1
	}, "files on disk and the app signalled")
	before := signals()

	if _, err := policyv1.NewPolicyServiceClient(conn).SetPolicy(ctx, &policyv1.SetPolicyRequest{
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
