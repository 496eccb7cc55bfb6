package secretsvc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/envelope"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/secretsvc"
	"github.com/warden-sec/warden/services/internal/store"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 20 * time.Second

func start(t *testing.T) (*wardentest.Env, secretv1.SecretServiceClient) {
	t.Helper()
	env := wardentest.Start(t, wardentest.Options{})
	admin := secretv1.NewSecretServiceClient(env.AdminConn())
	// The built-in secret is created by Run; wait for it so every test starts from the same state.
	etcdtest.Eventually(t, wait, func() bool {
		_, err := admin.GetSecret(t.Context(), &secretv1.GetSecretRequest{Name: secretsvc.BuiltinName})
		return err == nil
	}, "wa-secret exists")
	return env, admin
}

// registerNode writes a registry entry the way CertService stores it. The registry is CertService's;
// writing it directly keeps these tests independent of CertService's RPCs.
func registerNode(t *testing.T, env *wardentest.Env, role identity.Role, id string) {
	t.Helper()
	rec, err := json.Marshal(map[string]any{"id": id, "role": string(role), "zone": "", "addresses": []string{}, "created_at": time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Platform.Client.Namespace(certsvc.Prefix).Put(t.Context(), "nodes/"+id, rec, store.Any()); err != nil {
		t.Fatalf("register node %s: %v", id, err)
	}
	etcdtest.Eventually(t, wait, func() bool { _, ok := env.Platform.Certs.Node(id); return ok }, "node "+id+" in the registry view")
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
}

// stateToKey maps the API's version states to the envelope's.
func stateToKey(s secretv1.VersionState) (envelope.KeyState, bool) {
	switch s {
	case secretv1.VersionState_VERSION_STATE_STAGED:
		return envelope.Staged, true
	case secretv1.VersionState_VERSION_STATE_ACTIVE:
		return envelope.Active, true
	case secretv1.VersionState_VERSION_STATE_RETIRING:
		return envelope.Retiring, true
	default:
		return 0, false
	}
}

// peer is an in-process agent: it follows its WatchSecrets stream as a node, keeps an envelope.KeySet
// of wa-secret from it, and acknowledges every snapshot it applied.
type peer struct {
	id     string
	client secretv1.SecretServiceClient
	keys   *envelope.KeySet
	opener *envelope.Opener
	ack    bool

	mu      sync.Mutex
	last    *secretv1.WatchSecretsResponse
	applied int
	err     error
}

func startPeer(t *testing.T, env *wardentest.Env, role identity.Role, id string, ack bool) *peer {
	t.Helper()
	keys, err := envelope.NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	opener, err := envelope.NewOpener(keys)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{id: id, client: secretv1.NewSecretServiceClient(env.NodeConn(role, id)), keys: keys, opener: opener, ack: ack}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := p.client.WatchSecrets(ctx, &secretv1.WatchSecretsRequest{NodeId: id})
	if err != nil {
		cancel()
		t.Fatalf("%s: watch: %v", id, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				if ctx.Err() == nil {
					p.fail(fmt.Errorf("recv: %w", err))
				}
				return
			}
			if resp.GetHeartbeat() {
				continue
			}
			if err := p.apply(ctx, resp); err != nil && ctx.Err() == nil {
				p.fail(err)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := p.error(); err != nil {
			t.Errorf("peer %s: %v", id, err)
		}
	})
	return p
}

func (p *peer) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

func (p *peer) error() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *peer) apply(ctx context.Context, resp *secretv1.WatchSecretsResponse) error {
	var keys []envelope.Key
	var held []*secretv1.HeldSecret
	for _, s := range resp.GetSecrets() {
		h := &secretv1.HeldSecret{Name: s.GetName()}
		for _, v := range s.GetVersions() {
			h.Numbers = append(h.Numbers, v.GetNumber())
			if s.GetName() != secretsvc.BuiltinName {
				continue
			}
			st, ok := stateToKey(v.GetState())
			if !ok {
				return fmt.Errorf("version %d pushed in state %v", v.GetNumber(), v.GetState())
			}
			keys = append(keys, envelope.Key{Version: v.GetNumber(), Secret: v.GetValue(), State: st})
		}
		held = append(held, h)
	}
	if err := p.keys.Set(keys); err != nil {
		return fmt.Errorf("apply snapshot %d: %w", resp.GetVersion(), err)
	}
	p.mu.Lock()
	p.last, p.applied = resp, p.applied+1
	p.mu.Unlock()
	if !p.ack {
		return nil
	}
	_, err := p.client.AckSecrets(ctx, &secretv1.AckSecretsRequest{
		NodeId: p.id, Version: resp.GetVersion(), Held: held, AgentTime: timestamppb.Now(),
	})
	if err != nil {
		return fmt.Errorf("ack snapshot %d: %w", resp.GetVersion(), err)
	}
	return nil
}

func (p *peer) snapshot() *secretv1.WatchSecretsResponse {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// secret returns what the peer's last snapshot holds of name.
func (p *peer) secret(name string) (*secretv1.NodeSecret, bool) {
	for _, s := range p.snapshot().GetSecrets() {
		if s.GetName() == name {
			return s, true
		}
	}
	return nil, false
}

func versionState(s *secretv1.Secret, n uint64) secretv1.VersionState {
	for _, v := range s.GetVersions() {
		if v.GetNumber() == n {
			return v.GetState()
		}
	}
	return secretv1.VersionState_VERSION_STATE_RETIRED
}

// auditEvents lists the audit log's events for target.
func auditEvents(t *testing.T, env *wardentest.Env, target string) []*adminv1.AuditEvent {
	t.Helper()
	kvs, _, _, err := env.Platform.Audit.Store().List(t.Context(), "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []*adminv1.AuditEvent
	for _, kv := range kvs {
		ev := &adminv1.AuditEvent{}
		if err := proto.Unmarshal(kv.Value, ev); err != nil {
			t.Fatalf("audit %s: %v", kv.Key, err)
		}
		if ev.GetTarget() == target {
			out = append(out, ev)
		}
	}
	return out
}

func findEvent(evs []*adminv1.AuditEvent, method string, match func(*adminv1.AuditEvent) bool) (*adminv1.AuditEvent, bool) {
	for _, ev := range evs {
		if ev.GetMethod() == method && ev.GetOutcome() == audit.Success && match(ev) {
			return ev, true
		}
	}
	return nil, false
}

// dumpSecretNS returns every key and value of the secret namespace.
func dumpSecretNS(t *testing.T, env *wardentest.Env) map[string]string {
	t.Helper()
	kvs, _, _, err := env.Platform.Client.Namespace(secretsvc.Prefix).List(t.Context(), "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range kvs {
		out[kv.Key] = string(kv.Value)
	}
	return out
}
