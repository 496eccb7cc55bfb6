package grpcurltest

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// grpcurlPath finds the binary `make tools` built: $WARDEN_BIN/grpcurl, else <repo>/.bin/grpcurl.
func grpcurlPath(t *testing.T) string {
	t.Helper()
	candidates := []string{filepath.Join(os.Getenv("WARDEN_BIN"), "grpcurl"), filepath.Join("..", "..", "..", ".bin", "grpcurl")}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			abs, _ := filepath.Abs(c)
			return abs
		}
	}
	t.Skip("grpcurl not built: run `make tools` (make test does)")
	return ""
}

type runner struct {
	t    *testing.T
	bin  string
	addr string
}

// run executes `grpcurl FLAGS ADDRESS VERB…` — the last element of args is the verb ("list",
// "describe SYMBOL" or a method), everything before it flags. It fails the test on a non-zero exit
// unless allowFail.
func (r runner) run(allowFail bool, stdin string, args ...string) (string, string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), 30*time.Second)
	defer cancel()
	flags, verb := args[:len(args)-1], strings.Fields(args[len(args)-1])
	cmd := exec.CommandContext(ctx, r.bin, append(append(append([]string{}, flags...), r.addr), verb...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil && !allowFail {
		r.t.Fatalf("grpcurl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

func TestReadmeRecipes(t *testing.T) {
	if testing.Short() {
		t.Skip("grpcurl recipes: skipped in -short mode")
	}
	bin := grpcurlPath(t)
	protoDir, err := filepath.Abs(filepath.Join("..", "..", "..", "proto"))
	if err != nil {
		t.Fatal(err)
	}
	env := wardentest.Start(t, wardentest.Options{})
	r := runner{t: t, bin: bin, addr: env.Addr}
	A := env.Admin
	admin := []string{"-cacert", A.CA, "-cert", A.Cert, "-key", A.Key}

	t.Run("list with the admin certificate", func(t *testing.T) {
		out, _ := r.run(false, "", append(admin, "list")...)
		for _, svc := range []string{"warden.cert.v1.CertService", "warden.secret.v1.SecretService", "warden.policy.v1.PolicyService", "warden.mesh.v1.MeshService", "warden.admin.v1.AdminService", "grpc.health.v1.Health"} {
			if !strings.Contains(out, svc) {
				t.Errorf("list lacks %s:\n%s", svc, out)
			}
		}
	})
	t.Run("describe shows the comments", func(t *testing.T) {
		out, _ := r.run(false, "", append(admin, "describe warden.cert.v1.CertService.Bootstrap")...)
		if !strings.Contains(out, "caller: anyone over server-authenticated TLS") {
			t.Errorf("describe lacks the comment:\n%s", out)
		}
	})
	t.Run("health without a certificate", func(t *testing.T) {
		out, _ := r.run(false, "", "-cacert", A.CA, "grpc.health.v1.Health/Check")
		if !strings.Contains(out, "SERVING") {
			t.Errorf("health: %s", out)
		}
	})
	t.Run("no certificate is refused", func(t *testing.T) {
		_, stderr := r.run(true, "", "-cacert", A.CA, "list")
		if !strings.Contains(stderr, "Unauthenticated") {
			t.Errorf("want Unauthenticated, got: %s", stderr)
		}
	})
	t.Run("create a node", func(t *testing.T) {
		out, _ := r.run(false, "", append(admin, "-d", `{"node_id":"web-1","role":"NODE_ROLE_WEBAPP","zone":"clients","addresses":["web-1.example","10.0.0.5"]}`, "warden.cert.v1.CertService/CreateNode")...)
		var resp struct {
			JoinToken     string `json:"joinToken"`
			CAFingerprint string `json:"caFingerprint"`
		}
		if err := json.Unmarshal([]byte(out), &resp); err != nil || !strings.HasPrefix(resp.JoinToken, "wjt_") || len(resp.CAFingerprint) != 64 {
			t.Fatalf("CreateNode output: %s (%v)", out, err)
		}
	})
	t.Run("read the policy", func(t *testing.T) {
		out, _ := r.run(false, "", append(admin, "warden.policy.v1.PolicyService/GetPolicy")...)
		if !strings.Contains(out, `"number"`) {
			t.Errorf("GetPolicy: %s", out)
		}
	})
	t.Run("bearer token", func(t *testing.T) {
		initial := env.InitialPassword()
		const newPW = "Correct-Horse-9-Battery"
		login := func(pw string) string {
			// Without credentials there is no reflection: the schema comes from the repository's protos.
			out, _ := r.run(false, "", "-cacert", A.CA, "-import-path", protoDir, "-proto", "warden/admin/v1/admin_service.proto",
				"-d", `{"username":"admin","password":"`+pw+`"}`, "warden.admin.v1.AdminService/Login")
			var resp struct{ Token string }
			if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Token == "" {
				t.Fatalf("Login output: %s (%v)", out, err)
			}
			return resp.Token
		}
		tok := login(initial)
		r.run(false, "", "-cacert", A.CA, "-H", "authorization: Bearer "+tok, "-d",
			`{"username":"admin","old_password":"`+initial+`","new_password":"`+newPW+`"}`, "warden.admin.v1.AdminService/ChangePassword")
		tok = login(newPW)
		out, _ := r.run(false, "", "-cacert", A.CA, "-H", "authorization: Bearer "+tok, "list")
		if !strings.Contains(out, "warden.cert.v1.CertService") {
			t.Errorf("list with a token: %s", out)
		}
		out, _ = r.run(false, "", "-cacert", A.CA, "-H", "authorization: Bearer "+tok, "warden.cert.v1.CertService/ListNodes")
		if !strings.Contains(out, "web-1") {
			t.Errorf("ListNodes with a token: %s", out)
		}
	})
	t.Run("watch the policy as a node", func(t *testing.T) {
		// A node's identity files, as an agent keeps them; the stream is cut by -max-time after the
		// first snapshot, which grpcurl prints as it arrives.
		dir := t.TempDir()
		tc := env.Mint(identity.NodeID(env.Config.TrustDomain, identity.RoleWebapp, "web-1"))
		keyPEM, err := pki.MarshalKeyPEM(tc.PrivateKey.(crypto.Signer))
		if err != nil {
			t.Fatal(err)
		}
		certPath, keyPath := filepath.Join(dir, "identity.crt"), filepath.Join(dir, "identity.key")
		if err := os.WriteFile(certPath, pki.EncodeCertsPEM(tc.Leaf), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		out, _ := r.run(true, "", "-cacert", A.CA, "-cert", certPath, "-key", keyPath, "-max-time", "3",
			"-d", `{"node_id":"web-1"}`, "warden.policy.v1.PolicyService/WatchPolicy")
		if !strings.Contains(out, `"WA_WEB_SECURITY_LEVEL": "MODERN"`) {
			t.Errorf("WatchPolicy printed no snapshot with the rendered env:\n%s", out)
		}
	})
}
