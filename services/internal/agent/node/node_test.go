package node

import (
	"context"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
	"github.com/warden-sec/warden/services/internal/wardend"
)

const wait = 30 * time.Second

type runningAgent struct {
	a       *Agent
	state   *live.State
	tracker *status.Tracker
	cancel  context.CancelFunc
	exited  chan struct{}
	err     error
}

func (r *runningAgent) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.exited:
		if r.err != nil {
			t.Errorf("agent stopped with %v", r.err)
		}
	case <-time.After(wait):
		t.Fatal("agent did not stop")
	}
}

func newAgent(t *testing.T, cfg Config) *runningAgent {
	t.Helper()
	state := &live.State{}
	tracker := status.NewTracker(cfg.DataDir, status.Status{Role: string(cfg.Role), NodeID: cfg.NodeID})
	cfg.State, cfg.Status, cfg.Log = state, tracker, etcdtest.Logger(t)
	cfg.GroupID = materialize.NoGroup
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{a: a, state: state, tracker: tracker, cancel: cancel, exited: make(chan struct{})}
	go func() {
		r.err = a.Run(ctx)
		close(r.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.exited
	})
	return r
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestAgentAgainstWardend runs the node core against an in-process wardend: a wrong pin is refused
// without using the token, bootstrap writes the identity, the streams materialise every file with the
// right modes, acknowledgements reach the control plane, and after the control plane stops a restarted
// agent serves from its cache and resynchronises when it returns.
func TestAgentAgainstWardend(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wardend with an embedded etcd")
	}
	addr := etcdtest.FreeAddr(t)
	wdDir := t.TempDir()
	configure := func(c *wardend.Config) { c.Listen = addr }
	env := wardentest.Start(t, wardentest.Options{DataDir: wdDir, Configure: configure})
	ctx := t.Context()
	certs := certv1.NewCertServiceClient(env.AdminConn())
	created, err := certs.CreateNode(ctx, &certv1.CreateNodeRequest{
		NodeId: "web-1", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp", Addresses: []string{"localhost", "127.0.0.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	base := Config{
		Role: identity.RoleWebapp, NodeID: "web-1", DataDir: dataDir, Servers: []string{addr},
		JoinToken: created.GetJoinToken(), StreamIdle: 10 * time.Second,
	}

	t.Run("wrong pin refused", func(t *testing.T) {
		other, err := pki.NewRootCA("other.example", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cfg := base
		cfg.CAFingerprint = pki.Fingerprint(other.Cert)
		cfg.DataDir = t.TempDir()
		r := newAgent(t, cfg)
		select {
		case <-r.exited:
			if !errors.Is(r.err, ErrPinMismatch) {
				t.Fatalf("Run = %v, want ErrPinMismatch", r.err)
			}
		case <-time.After(wait):
			t.Fatal("agent with a wrong pin did not give up")
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "certs", "identity.crt")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("identity written despite the pin mismatch: %v", err)
		}
	})

	cfg := base
	cfg.CAFingerprint = created.GetCaFingerprint()
	r := newAgent(t, cfg)
	certsDir := filepath.Join(dataDir, "certs")
	etcdtest.Eventually(t, wait, func() bool {
		for _, f := range []string{"identity.crt", "webapp-https.crt", "db-client.crt", "ca-bundle.crt", "wa-secret.json"} {
			if _, err := os.Stat(filepath.Join(certsDir, f)); err != nil {
				return false
			}
		}
		env, err := os.ReadFile(filepath.Join(dataDir, materialize.EnvFileName))
		return err == nil && strings.Contains(string(env), "WA_SECRET=") && strings.Contains(string(env), "WA_WEB_SECURITY_LEVEL=")
	}, "files materialised")

	if m := mode(t, certsDir); m != 0o700 {
		t.Errorf("certs dir mode %o, want 700", m)
	}
	for f, want := range map[string]fs.FileMode{
		"identity.key": 0o600, "identity.crt": 0o644, "webapp-https.key": 0o600, "webapp-https.crt": 0o644,
		"db-client.key": 0o600, "ca-bundle.crt": 0o644, "wa-secret.json": 0o600,
	} {
		if m := mode(t, filepath.Join(certsDir, f)); m != want {
			t.Errorf("%s mode %o, want %o", f, m, want)
		}
	}
	if m := mode(t, filepath.Join(dataDir, materialize.EnvFileName)); m != 0o600 {
		t.Errorf("env file mode %o, want 600", m)
	}
	for _, f := range []string{"coreapp-control.crt", "coreapp-communication.crt", "webhook-ca.crt"} {
		if _, err := os.Stat(filepath.Join(certsDir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a Webapp holds %s", f)
		}
	}
	// Every certificate verifies against the bundle on disk and names the node.
	bundle, _ := os.ReadFile(filepath.Join(certsDir, "ca-bundle.crt"))
	pool, _, err := parseBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range Kinds(identity.RoleWebapp) {
		h, err := loadHeld(certsDir, kind)
		if err != nil {
			t.Fatalf("%v: %v", kind, err)
		}
		if _, err := h.leaf().Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%v does not verify: %v", kind, err)
		}
		if id, _ := identity.FromCertificate(h.leaf()); id.Name != "web-1" {
			t.Errorf("%v names %s", kind, id)
		}
	}
	// The control plane has the acknowledgements.
	etcdtest.Eventually(t, wait, func() bool {
		n, err := certs.GetNode(ctx, &certv1.GetNodeRequest{NodeId: "web-1"})
		return err == nil && n.GetNode().GetAckedVersion() > 0 && n.GetNode().GetAckedVersion() == r.a.version(status.StreamCredentials)
	}, "credentials acknowledged")
	secrets := secretv1.NewSecretServiceClient(env.AdminConn())
	etcdtest.Eventually(t, wait, func() bool {
		st, err := secrets.GetRotationStatus(ctx, &secretv1.GetRotationStatusRequest{Name: WASecretName})
		if err != nil {
			return false
		}
		for _, n := range st.GetNodes() {
			if n.GetNodeId() == "web-1" && n.GetAckedNumber() >= st.GetActiveNumber() {
				return true
			}
		}
		return false
	}, "secrets acknowledged")
	if r.state.Policy().Number == 0 {
		t.Error("no policy published")
	}
	if got := r.tracker.Snapshot().Server; got != env.Addr {
		t.Errorf("status names server %q, want the replica the streams reached, %s", got, env.Addr)
	}

	// Control plane down: files stay, a restarted agent starts from its cache.
	env.Stop()
	r.stop(t)
	before, _ := os.ReadFile(filepath.Join(certsDir, "webapp-https.crt"))
	cfg.JoinToken, cfg.CAFingerprint = "", ""
	r2 := newAgent(t, cfg)
	etcdtest.Eventually(t, wait, func() bool {
		return r2.state.Creds().Cert(certv1.CertKind_CERT_KIND_WEBAPP_HTTPS) != nil && r2.state.Policy().Number > 0
	}, "state restored from disk and cache while offline")
	// The status is updated once the whole cache is loaded, just after the state is published.
	etcdtest.Eventually(t, wait, func() bool { return r2.tracker.Snapshot().FromCache }, "status says the agent serves from cache")
	after, _ := os.ReadFile(filepath.Join(certsDir, "webapp-https.crt"))
	if string(before) != string(after) {
		t.Error("certificate changed while the control plane was down")
	}

	// Control plane back on the same address: the agent resynchronises.
	restarted := time.Now()
	env2 := wardentest.Start(t, wardentest.Options{DataDir: wdDir, Configure: configure})
	// The channel's re-dial back-off may have grown to its ceiling (4 s, up to 8 s with jitter) while
	// wardend was down.
	etcdtest.Eventually(t, 2*wait, func() bool {
		return r2.tracker.Snapshot().LastContact.After(restarted)
	}, "agent reached the restarted control plane")
	// A rotation after the restart reaches the agent.
	rot, err := secretv1.NewSecretServiceClient(env2.AdminConn()).RotateSecret(ctx, &secretv1.RotateSecretRequest{Name: WASecretName})
	if err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, wait, func() bool {
		raw, err := os.ReadFile(filepath.Join(certsDir, FileWASecret))
		return err == nil && strings.Contains(string(raw), `"staged"`) && rot.GetStagedNumber() > 0
	}, "staged secret version materialised after resync")
}
