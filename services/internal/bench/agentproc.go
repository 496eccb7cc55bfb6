package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// FirstCredential is the join of one real warden-agent process.
type FirstCredential struct {
	// From the CreateNode call to the identity certificate on disk.
	TotalMS float64 `json:"total_ms"`
	// The CreateNode RPC alone.
	CreateNodeMS float64 `json:"create_node_ms"`
	// From exec of warden-agent to the identity certificate on disk.
	AgentMS float64 `json:"agent_ms"`
	// From exec to the env file holding WA_SECRET (secrets and policy applied too); 0 if not seen.
	EnvFileMS float64 `json:"env_file_ms,omitempty"`
	// Resident set of the agent, idle a few seconds after it applied everything.
	AgentRSSKiB int64 `json:"agent_rss_kib"`
	// One agent, change committed → applied: SetPolicy returned → the agent rewrote its env file
	// with the new WA_WEB_SECURITY_LEVEL (TLS profile alternating INTERMEDIATE / MODERN).
	Applied Dist   `json:"applied"`
	Error   string `json:"error,omitempty"`
}

// firstCredential registers a node, starts warden-agent with its join token and times the arrival
// of its identity certificate, then measures the idle agent's RSS and stops it.
func (f *fleet) firstCredential(ctx context.Context, bin, workDir string, settle time.Duration, rounds int) (FirstCredential, error) {
	var r FirstCredential
	id := f.prefix + "-real-agent"
	dir := filepath.Join(workDir, "agent-"+id)
	t0 := time.Now()
	var created *certv1.CreateNodeResponse
	err := f.adminCall(ctx, func(ctx context.Context) (err error) {
		created, err = f.certs().CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: id, Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: benchZone, Addresses: []string{"127.0.0.1", "localhost"}})
		return err
	})
	if err != nil {
		return r, fmt.Errorf("CreateNode: %w", err)
	}
	r.CreateNodeMS = ms(time.Since(t0))
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = f.adminCall(dctx, func(ctx context.Context) error {
			_, err := f.certs().DecommissionNode(ctx, &certv1.DecommissionNodeRequest{NodeId: id, Reason: "warden-bench: first-credential agent done"})
			return err
		})
	}()
	logf, err := os.Create(filepath.Join(workDir, "warden-agent.log"))
	if err != nil {
		return r, err
	}
	defer logf.Close()
	// As the README's quick start: the join token and the CA fingerprint are all the agent is given.
	cmd := exec.Command(bin, "--role", "webapp", "--node-id", id, "--data-dir", dir, "--server", f.addr,
		"--join-token", created.GetJoinToken(), "--ca-fingerprint", created.GetCaFingerprint())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t1 := time.Now()
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("start warden-agent: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	want := identity.NodeID(f.td, identity.RoleWebapp, id).String()
	certsDir := filepath.Join(dir, "certs")
	envFile := filepath.Join(dir, "warden.env")
	deadline := time.After(60 * time.Second)
wait:
	for r.AgentMS == 0 || r.EnvFileMS == 0 {
		if r.AgentMS == 0 && holdsIdentity(certsDir, want) {
			r.AgentMS, r.TotalMS = ms(time.Since(t1)), ms(time.Since(t0))
		}
		if r.EnvFileMS == 0 {
			if b, err := os.ReadFile(envFile); err == nil && strings.Contains(string(b), "WA_SECRET=") {
				r.EnvFileMS = ms(time.Since(t1))
			}
		}
		select {
		case err := <-exited:
			exited <- err
			return r, fmt.Errorf("warden-agent exited early (%v); log:\n%s", err, tail(logf.Name(), 2000))
		case <-deadline:
			if r.AgentMS == 0 {
				return r, fmt.Errorf("no identity certificate under %s after 60s; log:\n%s", certsDir, tail(logf.Name(), 2000))
			}
			break wait
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	pause(ctx, settle)
	if r.AgentRSSKiB, err = rssKiB(cmd.Process.Pid); err != nil {
		return r, fmt.Errorf("warden-agent RSS: %w", err)
	}
	if r.EnvFileMS == 0 {
		r.Error = "no env file with WA_SECRET: change → applied not measured"
		return r, nil
	}
	if r.Applied, err = f.applyRounds(ctx, envFile, rounds); err != nil {
		r.Error = err.Error()
	}
	return r, nil
}

// applyRounds times SetPolicy returning → the real agent's env file rewritten, alternating the TLS
// profile (INTERMEDIATE is a downgrade, stored with allow_downgrade) and ending on MODERN.
func (f *fleet) applyRounds(ctx context.Context, envFile string, rounds int) (Dist, error) {
	var ds []time.Duration
	for r := range rounds {
		profile := policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE
		if r%2 == 1 {
			profile = policyv1.TLSProfile_TLS_PROFILE_MODERN
		}
		pause(ctx, 300*time.Millisecond)
		before, err := os.ReadFile(envFile)
		if err != nil {
			return summarize(ds), err
		}
		_, _, t0, err := f.changePolicy(ctx, "warden-bench: apply timing", profile != policyv1.TLSProfile_TLS_PROFILE_MODERN, func(doc *policyv1.PolicyDocument) {
			doc.Defaults.Tls = &policyv1.TLSSettings{Profile: profile}
		})
		if err != nil {
			return summarize(ds), err
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, err := os.ReadFile(envFile)
			if err == nil && !bytes.Equal(b, before) {
				ds = append(ds, max(time.Since(t0), 0))
				break
			}
			if time.Now().After(deadline) {
				return summarize(ds), fmt.Errorf("env file unchanged 10s after the TLS profile became %s", profile)
			}
			pause(ctx, time.Millisecond)
		}
	}
	return summarize(ds), nil
}

// holdsIdentity reports whether dir has a certificate file whose leaf carries the identity want. The
// file name is the agent's business; the content is what the node needs.
func holdsIdentity(dir, want string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".crt") || strings.HasSuffix(n, ".pem")) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		certs, err := pki.ParseCertsPEM(b)
		if err != nil || len(certs) == 0 {
			continue
		}
		if got, err := identity.FromCertificate(certs[0]); err == nil && got.String() == want {
			return true
		}
	}
	return false
}
