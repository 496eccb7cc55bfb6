//go:build linux

package faults

import (
	"bufio"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/agent/node"
	agentstatus "github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h: no entry of the directory can be created, renamed or
// removed, by root either.
const fsImmutableFL = 0x10

// enroll registers a Webapp node and runs a warden-agent process for it until its three streams are
// applied and acknowledged.
func enroll(t *testing.T, env *wardentest.Env, nodeID string) *agentProc {
	t.Helper()
	created, err := certv1.NewCertServiceClient(env.AdminConn()).CreateNode(t.Context(), &certv1.CreateNodeRequest{
		NodeId: nodeID, Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp", Addresses: []string{"localhost", "127.0.0.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, nodeID, env.Addr, created.GetJoinToken(), created.GetCaFingerprint(), env.Admin.CA)
	t.Cleanup(func() {
		if t.Failed() {
			raw, _ := os.ReadFile(agentstatus.Path(ag.dataDir))
			t.Logf("agent status:\n%s\nagent log:\n%s", raw, ag.tail())
		}
	})
	etcdtest.Eventually(t, bound, func() bool {
		if ag.exited() {
			t.Fatalf("agent exited (%v):\n%s", ag.err, ag.tail())
		}
		st, err := agentstatus.Read(ag.dataDir)
		if err != nil {
			return false
		}
		for _, name := range []string{agentstatus.StreamCredentials, agentstatus.StreamSecrets, agentstatus.StreamPolicy} {
			if s := st.Streams[name]; s == nil || s.AckedVersion == 0 || s.AckedVersion != s.Version {
				return false
			}
		}
		_, err = os.Stat(filepath.Join(ag.certsDir(), node.FileWASecret))
		return err == nil
	}, "agent applied and acknowledged every stream")
	return ag
}

// holds reports whether the agent's wa-secret.json lists version number.
func holds(t *testing.T, ag *agentProc, number uint64) bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(ag.certsDir(), node.FileWASecret))
	if err != nil {
		return false
	}
	var f node.SecretsFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", node.FileWASecret, err)
	}
	return slices.ContainsFunc(f.Versions, func(v node.SecretFileVersion) bool { return v.Number == number })
}

// logged reports whether a JSON log line of the process matches.
func logged(p *proc, match func(map[string]any) bool) bool {
	f, err := os.Open(p.log)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && match(rec) {
			return true
		}
	}
	return false
}

// TestAgentDiskFull makes every write of a running agent fail (its RLIMIT_FSIZE lowered to 0 from
// outside, so writes fail with EFBIG as they would with ENOSPC on a full disk) and pushes a policy
// downgrade (new env file) and a secret rotation (new wa-secret.json). The agent reports a clear error
// to the control plane, keeps every old file byte for byte, stays up, and applies both once the limit
// is lifted.
func TestAgentDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a warden-agent process")
	}
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	admin := env.AdminConn()
	policies := policyv1.NewPolicyServiceClient(admin)
	ag := enroll(t, env, "web-full")
	before := ag.files(t)
	envBefore, err := os.ReadFile(filepath.Join(ag.dataDir, materialize.EnvFileName))
	if err != nil {
		t.Fatal(err)
	}

	pid := ag.cmd.Process.Pid
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, nil, &old); err != nil {
		t.Fatal(err)
	}
	full := unix.Rlimit{Cur: 0, Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &full, nil); err != nil {
		t.Skipf("cannot lower the agent's RLIMIT_FSIZE: %v", err)
	}
	lift := func() { _ = unix.Prlimit(pid, unix.RLIMIT_FSIZE, &old, nil) }
	t.Cleanup(lift)

	cur, err := policies.GetPolicy(ctx, &policyv1.GetPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	doc := cur.GetPolicy().GetDocument()
	doc.Defaults.Tls = &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE}
	set, err := policies.SetPolicy(ctx, &policyv1.SetPolicyRequest{
		Document: doc, Message: "older clients", AllowDowngrade: true, DowngradeReason: "fault test",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := set.GetPolicy().GetNumber()
	rot, err := secretv1.NewSecretServiceClient(admin).RotateSecret(ctx, &secretv1.RotateSecretRequest{Name: node.WASecretName})
	if err != nil {
		t.Fatal(err)
	}

	var ackErr string
	etcdtest.Eventually(t, bound, func() bool {
		st, err := policies.ListPolicyStatus(ctx, &policyv1.ListPolicyStatusRequest{})
		if err != nil {
			return false
		}
		for _, n := range st.GetNodes() {
			if n.GetNodeId() == "web-full" && n.GetPolicyNumber() == want && n.GetError() != "" {
				ackErr = n.GetError()
				return true
			}
		}
		return false
	}, "the agent reports the failed policy apply")
	if !strings.Contains(ackErr, "file too large") || !strings.Contains(ackErr, materialize.EnvFileName) {
		t.Errorf("policy apply error %q names neither the cause nor the file", ackErr)
	}
	etcdtest.Eventually(t, bound, func() bool {
		return logged(ag.proc, func(rec map[string]any) bool {
			e, _ := rec["err"].(string)
			return rec["level"] == "ERROR" && rec["stream"] == agentstatus.StreamSecrets &&
				strings.Contains(e, node.FileWASecret) && strings.Contains(e, "file too large")
		})
	}, "the agent logs the failed secrets apply\n"+ag.tail())
	t.Logf("policy error seen by the control plane: %s", ackErr)

	if after := ag.files(t); !maps.Equal(before, after) {
		t.Fatalf("files changed on a full disk:\nbefore %v\nafter  %v", before, after)
	}
	if ag.exited() {
		t.Fatalf("agent exited on a full disk (%v):\n%s", ag.err, ag.tail())
	}
	if _, err := agentstatus.Read(ag.dataDir); err != nil {
		t.Errorf("status file unreadable after failed rewrites: %v", err)
	}

	lifted := time.Now()
	lift()
	rendered, err := policies.RenderPolicy(ctx, &policyv1.RenderPolicyRequest{NodeId: "web-full"})
	if err != nil {
		t.Fatal(err)
	}
	level := rendered.GetRendered().GetEnv()["WA_WEB_SECURITY_LEVEL"]
	etcdtest.Eventually(t, bound, func() bool {
		raw, err := os.ReadFile(filepath.Join(ag.dataDir, materialize.EnvFileName))
		if err != nil {
			return false
		}
		vars, err := materialize.ParseEnv(raw)
		return err == nil && string(raw) != string(envBefore) && (level == "" || vars["WA_WEB_SECURITY_LEVEL"] == level) &&
			holds(t, ag, rot.GetStagedNumber())
	}, "the agent applies both once the disk has room")
	etcdtest.Eventually(t, bound, func() bool {
		st, err := policies.ListPolicyStatus(ctx, &policyv1.ListPolicyStatusRequest{})
		if err != nil {
			return false
		}
		for _, n := range st.GetNodes() {
			if n.GetNodeId() == "web-full" {
				return n.GetPolicyNumber() == want && n.GetError() == ""
			}
		}
		return false
	}, "the control plane sees the policy applied")
	t.Logf("caught up %s after the limit was lifted", time.Since(lifted).Round(time.Millisecond))
}

// readOnly makes dir refuse new entries: immutable when running as root (permission bits do not stop
// root), mode 0500 otherwise. It returns how, and a function that undoes it.
func readOnly(t *testing.T, dir string) (string, func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		undo := func() { _ = os.Chmod(dir, 0o700) }
		t.Cleanup(undo)
		return "mode 0500", undo
	}
	setFlags := func(set bool) error {
		f, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer f.Close()
		flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
		if err != nil {
			return err
		}
		if set {
			flags |= fsImmutableFL
		} else {
			flags &^= fsImmutableFL
		}
		return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags))
	}
	if err := setFlags(true); err != nil {
		t.Skipf("running as root and %s cannot be made immutable (%v): permission bits would not stop the agent", dir, err)
	}
	undo := func() {
		if err := setFlags(false); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("clear the immutable flag of %s: %v", dir, err)
		}
	}
	// Registered before t.TempDir's removal runs (cleanups run last in, first out), which would fail
	// on an immutable directory.
	t.Cleanup(undo)
	return "immutable (FS_IMMUTABLE_FL, as chattr +i)", undo
}

// TestAgentReadOnlyCertsDir makes <data-dir>/certs of a running agent refuse writes and rotates
// WA_SECRET. The agent's status names the stream, the version, the file and the cause; every old file
// stays as it was; once the directory is writable again the new version is applied.
func TestAgentReadOnlyCertsDir(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a warden-agent process")
	}
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	ag := enroll(t, env, "web-ro")
	before := ag.files(t)
	how, undo := readOnly(t, ag.certsDir())
	t.Logf("certs dir made %s", how)

	rot, err := secretv1.NewSecretServiceClient(env.AdminConn()).RotateSecret(ctx, &secretv1.RotateSecretRequest{Name: node.WASecretName})
	if err != nil {
		t.Fatal(err)
	}
	var applyErr string
	etcdtest.Eventually(t, bound, func() bool {
		st, err := agentstatus.Read(ag.dataDir)
		if err != nil || st.Streams[agentstatus.StreamSecrets] == nil {
			return false
		}
		applyErr = st.Streams[agentstatus.StreamSecrets].Error
		return strings.HasPrefix(applyErr, "apply version")
	}, "the agent's status reports the failed apply")
	t.Logf("status of the secrets stream: %s", applyErr)
	if !strings.Contains(applyErr, filepath.Join(ag.certsDir(), node.FileWASecret)) ||
		!(strings.Contains(applyErr, "operation not permitted") || strings.Contains(applyErr, "permission denied")) {
		t.Errorf("apply error %q names neither the file nor the cause", applyErr)
	}
	if after := ag.files(t); !maps.Equal(before, after) {
		t.Fatalf("files changed in a read-only certs dir:\nbefore %v\nafter  %v", before, after)
	}
	if ag.exited() {
		t.Fatalf("agent exited (%v):\n%s", ag.err, ag.tail())
	}

	writable := time.Now()
	undo()
	etcdtest.Eventually(t, bound, func() bool {
		st, err := agentstatus.Read(ag.dataDir)
		return err == nil && st.Streams[agentstatus.StreamSecrets].Error == "" && holds(t, ag, rot.GetStagedNumber())
	}, "the agent applies the rotation once the directory is writable")
	t.Logf("caught up %s after the directory became writable", time.Since(writable).Round(time.Millisecond))
}
