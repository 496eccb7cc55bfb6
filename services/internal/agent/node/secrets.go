package node

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/identity"
)

// WASecretName is the built-in secret rendered as WA_SECRET.
const WASecretName = "wa-secret"

// Env variables the agent sets itself (the rest come rendered from the policy).
const (
	EnvWASecret      = "WA_SECRET"
	EnvSecurityLevel = "WA_WEB_SECURITY_LEVEL"
)

// SecretsFile is the JSON written for every secret as <name>.json (wa-secret.json for WA_SECRET), mode
// 0600 (0640 with a group). It holds every version the node must accept, so that receivers can open
// messages sealed with a staged or retiring version while senders use the active one. Values are
// lowercase hex of the raw bytes — the same encoding as WA_SECRET in the env file.
type SecretsFile struct {
	Name string `json:"name"`
	// Encoding of every value: always "hex".
	Encoding string `json:"encoding"`
	// Active is the number of the version used to send; 0 if none.
	Active   uint64              `json:"active"`
	Versions []SecretFileVersion `json:"versions"`
}

// SecretFileVersion is one version in a SecretsFile.
type SecretFileVersion struct {
	Number uint64 `json:"number"`
	// State is "staged", "active" or "retiring".
	State string `json:"state"`
	Value string `json:"value"`
}

func stateName(s secretv1.VersionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "VERSION_STATE_"))
}

func (a *Agent) secretsSpec() streamSpec[*secretv1.WatchSecretsResponse] {
	return streamSpec[*secretv1.WatchSecretsResponse]{
		name: status.StreamSecrets,
		open: func(ctx context.Context, conn *grpc.ClientConn, last int64, opts ...grpc.CallOption) (receiver[*secretv1.WatchSecretsResponse], error) {
			return recvOf(secretv1.NewSecretServiceClient(conn).WatchSecrets(ctx, &secretv1.WatchSecretsRequest{NodeId: a.cfg.NodeID, LastVersion: last}, opts...))
		},
		apply: a.applySecrets,
		ack:   a.ackSecrets,
	}
}

// secretFiles renders every secret of snap as files: <name>.json with all versions, and for a generic
// secret also <name>.secret holding the raw active value, which is what most programs can read.
func secretFiles(snap *secretv1.WatchSecretsResponse) ([]materialize.File, error) {
	var files []materialize.File
	for _, s := range snap.GetSecrets() {
		if err := identity.ValidName(s.GetName()); err != nil {
			return nil, fmt.Errorf("secret name: %w", err)
		}
		f := SecretsFile{Name: s.GetName(), Encoding: "hex"}
		var active []byte
		versions := slices.Clone(s.GetVersions())
		slices.SortFunc(versions, func(x, y *secretv1.NodeSecretVersion) int { return cmp.Compare(x.GetNumber(), y.GetNumber()) })
		for _, v := range versions {
			if v.GetState() == secretv1.VersionState_VERSION_STATE_RETIRED {
				continue
			}
			if v.GetState() == secretv1.VersionState_VERSION_STATE_ACTIVE {
				f.Active, active = v.GetNumber(), v.GetValue()
			}
			f.Versions = append(f.Versions, SecretFileVersion{Number: v.GetNumber(), State: stateName(v.GetState()), Value: hex.EncodeToString(v.GetValue())})
		}
		raw, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			return nil, err
		}
		files = append(files, materialize.File{Name: s.GetName() + ".json", Data: append(raw, '\n'), Secret: true})
		if s.GetType() == secretv1.SecretType_SECRET_TYPE_GENERIC && f.Active != 0 {
			files = append(files, materialize.File{Name: s.GetName() + ".secret", Data: active, Secret: true})
		}
	}
	return files, nil
}

// waSecret returns the active WA_SECRET value, hex-encoded, or ok false when the snapshot has no
// WA_SECRET at all.
func waSecret(snap *secretv1.WatchSecretsResponse) (value string, ok bool, err error) {
	for _, s := range snap.GetSecrets() {
		if s.GetType() != secretv1.SecretType_SECRET_TYPE_WA_SECRET && s.GetName() != WASecretName {
			continue
		}
		for _, v := range s.GetVersions() {
			if v.GetState() == secretv1.VersionState_VERSION_STATE_ACTIVE {
				if len(v.GetValue()) == 0 {
					return "", true, fmt.Errorf("secret %s: active version %d is empty", s.GetName(), v.GetNumber())
				}
				return hex.EncodeToString(v.GetValue()), true, nil
			}
		}
		return "", true, fmt.Errorf("secret %s has no active version", s.GetName())
	}
	return "", false, nil
}

// renderEnv builds the app's env file from the policy's rendered variables and the active WA_SECRET
// (hex). Either input may be missing before its stream delivered anything.
func renderEnv(secrets *secretv1.WatchSecretsResponse, policy *policyv1.RenderedPolicy) ([]byte, error) {
	env := map[string]string{}
	for k, v := range policy.GetEnv() {
		env[k] = v
	}
	if _, ok := env[EnvSecurityLevel]; !ok && policy != nil {
		env[EnvSecurityLevel] = string(live.ProfileName(policy.GetTls().GetProfile()))
	}
	if secrets != nil {
		v, ok, err := waSecret(secrets)
		if err != nil {
			return nil, err
		}
		if ok {
			env[EnvWASecret] = v
		}
	}
	return materialize.RenderEnv(env)
}

// writeEnv rewrites the env file; it reports whether it changed. Callers hold applyMu.
func (a *Agent) writeEnv(secrets *secretv1.WatchSecretsResponse, policy *policyv1.RenderedPolicy) (bool, error) {
	data, err := renderEnv(secrets, policy)
	if err != nil {
		return false, err
	}
	changed, err := a.env.Apply([]materialize.File{{Name: materialize.EnvFileName, Data: data, Secret: true}})
	return len(changed) > 0, err
}

func (a *Agent) applySecrets(_ context.Context, snap *secretv1.WatchSecretsResponse) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	files, err := secretFiles(snap)
	if err != nil {
		return err
	}
	// Check the env renders before any file is touched, so a bad snapshot changes nothing.
	if _, err := renderEnv(snap, a.policy.GetRendered()); err != nil {
		return err
	}
	changed, err := a.certs.Apply(files)
	if err != nil {
		if len(changed) > 0 {
			a.cfg.Reload()
		}
		return err
	}
	envChanged, err := a.writeEnv(snap, a.policy.GetRendered())
	if err != nil {
		return err
	}
	a.secrets = snap
	a.setVersion(status.StreamSecrets, snap.GetVersion(), a.cfg.Now())
	a.saveCached(status.StreamSecrets, snap)
	a.secretsStatus(snap)
	if len(changed) > 0 || envChanged {
		a.log.Info("secrets applied", "version", snap.GetVersion(), "changed", append(changed, envFileIf(envChanged)...))
		a.cfg.Reload()
	}
	return nil
}

func envFileIf(changed bool) []string {
	if changed {
		return []string{materialize.EnvFileName}
	}
	return nil
}

func (a *Agent) secretsStatus(snap *secretv1.WatchSecretsResponse) {
	var out []status.Secret
	for _, s := range snap.GetSecrets() {
		st := status.Secret{Name: s.GetName()}
		for _, v := range s.GetVersions() {
			st.Versions = append(st.Versions, status.SecretVersion{Number: v.GetNumber(), State: stateName(v.GetState())})
		}
		out = append(out, st)
	}
	a.cfg.Status.Update(func(s *status.Status) { s.Secrets = out })
}

func heldSecrets(snap *secretv1.WatchSecretsResponse) []*secretv1.HeldSecret {
	var out []*secretv1.HeldSecret
	for _, s := range snap.GetSecrets() {
		h := &secretv1.HeldSecret{Name: s.GetName()}
		for _, v := range s.GetVersions() {
			if v.GetState() != secretv1.VersionState_VERSION_STATE_RETIRED {
				h.Numbers = append(h.Numbers, v.GetNumber())
			}
		}
		out = append(out, h)
	}
	return out
}

func (a *Agent) ackSecrets(ctx context.Context, snap *secretv1.WatchSecretsResponse, applyErr error) error {
	req := &secretv1.AckSecretsRequest{NodeId: a.cfg.NodeID, Version: snap.GetVersion()}
	if applyErr == nil {
		req.Held = heldSecrets(snap)
	} else {
		req.Error = applyErr.Error()
		a.applyMu.Lock()
		if a.secrets != nil {
			req.Held = heldSecrets(a.secrets)
		}
		a.applyMu.Unlock()
	}
	return a.unary(ctx, func(ctx context.Context, conn *grpc.ClientConn, sent time.Time) (*timestamppb.Timestamp, error) {
		req.AgentTime = timestamppb.New(sent)
		req.Rtt = durationpb.New(a.clock.lastRTT())
		resp, err := secretv1.NewSecretServiceClient(conn).AckSecrets(ctx, req, grpc.WaitForReady(true))
		return resp.GetServerTime(), err
	})
}
