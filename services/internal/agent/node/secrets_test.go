package node

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
)

func rotatingSecrets() *secretv1.WatchSecretsResponse {
	return &secretv1.WatchSecretsResponse{Version: 7, Secrets: []*secretv1.NodeSecret{
		{Name: WASecretName, Type: secretv1.SecretType_SECRET_TYPE_WA_SECRET, Versions: []*secretv1.NodeSecretVersion{
			{Number: 3, State: secretv1.VersionState_VERSION_STATE_STAGED, Value: []byte{0xaa, 0xbb}},
			{Number: 2, State: secretv1.VersionState_VERSION_STATE_ACTIVE, Value: []byte{0x01, 0x02, 0xff}},
			{Number: 1, State: secretv1.VersionState_VERSION_STATE_RETIRING, Value: []byte{0x10}},
		}},
		{Name: "db-password", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, Versions: []*secretv1.NodeSecretVersion{
			{Number: 1, State: secretv1.VersionState_VERSION_STATE_ACTIVE, Value: []byte("s3cret")},
		}},
	}}
}

func TestRenderEnv(t *testing.T) {
	pol := &policyv1.RenderedPolicy{
		Env: map[string]string{"WA_DB_SSL_VERIFY": "true", "WA_DB_SSL_CA": "/usr/local/waent/data/certs/db-ca.crt"},
		Tls: &policyv1.RenderedTLS{Profile: policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE},
	}
	for _, tc := range []struct {
		name    string
		secrets *secretv1.WatchSecretsResponse
		policy  *policyv1.RenderedPolicy
		want    map[string]string
	}{
		{"both", rotatingSecrets(), pol, map[string]string{
			"WA_SECRET": "0102ff", "WA_WEB_SECURITY_LEVEL": "INTERMEDIATE",
			"WA_DB_SSL_VERIFY": "true", "WA_DB_SSL_CA": "/usr/local/waent/data/certs/db-ca.crt",
		}},
		{"secrets only", rotatingSecrets(), nil, map[string]string{"WA_SECRET": "0102ff"}},
		{"policy only", nil, pol, map[string]string{
			"WA_WEB_SECURITY_LEVEL": "INTERMEDIATE", "WA_DB_SSL_VERIFY": "true", "WA_DB_SSL_CA": "/usr/local/waent/data/certs/db-ca.crt",
		}},
		{"policy level wins", nil, &policyv1.RenderedPolicy{Env: map[string]string{"WA_WEB_SECURITY_LEVEL": "OLD"}}, map[string]string{"WA_WEB_SECURITY_LEVEL": "OLD"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := renderEnv(tc.secrets, tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			got, err := materialize.ParseEnv(data)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("env = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRenderEnvRefusesWASecretWithoutActive(t *testing.T) {
	s := &secretv1.WatchSecretsResponse{Secrets: []*secretv1.NodeSecret{{Name: WASecretName, Type: secretv1.SecretType_SECRET_TYPE_WA_SECRET,
		Versions: []*secretv1.NodeSecretVersion{{Number: 2, State: secretv1.VersionState_VERSION_STATE_STAGED, Value: []byte{1}}}}}}
	if _, err := renderEnv(s, nil); err == nil || !strings.Contains(err.Error(), "no active version") {
		t.Fatalf("renderEnv = %v, want a no-active-version error", err)
	}
}

func TestSecretFiles(t *testing.T) {
	files, err := secretFiles(rotatingSecrets())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]materialize.File{}
	for _, f := range files {
		byName[f.Name] = f
		if !f.Secret {
			t.Errorf("%s is not written as a secret file", f.Name)
		}
	}
	if len(byName) != 3 {
		t.Fatalf("files %v, want wa-secret.json, db-password.json, db-password.secret", keys(byName))
	}
	var sf SecretsFile
	if err := json.Unmarshal(byName[FileWASecret].Data, &sf); err != nil {
		t.Fatal(err)
	}
	if sf.Active != 2 || sf.Encoding != "hex" || len(sf.Versions) != 3 {
		t.Fatalf("wa-secret.json = %+v", sf)
	}
	want := []SecretFileVersion{{1, "retiring", "10"}, {2, "active", "0102ff"}, {3, "staged", "aabb"}}
	for i, v := range sf.Versions {
		if v != want[i] {
			t.Errorf("version %d = %+v, want %+v", i, v, want[i])
		}
	}
	if got := string(byName["db-password.secret"].Data); got != "s3cret" {
		t.Errorf("db-password.secret = %q", got)
	}
	if _, ok := byName["wa-secret.secret"]; ok {
		t.Error("WA_SECRET written as a raw file too; it belongs in the env file")
	}
}

func keys(m map[string]materialize.File) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestHeldSecrets(t *testing.T) {
	h := heldSecrets(rotatingSecrets())
	if len(h) != 2 || h[0].GetName() != WASecretName || len(h[0].GetNumbers()) != 3 {
		t.Fatalf("held = %v", h)
	}
}
