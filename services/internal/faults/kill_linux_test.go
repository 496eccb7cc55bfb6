//go:build linux

package faults

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"

	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

// ledger records the writes of a burst: those wardend acknowledged, and those whose outcome is unknown
// because wardend died while they were in flight.
type ledger struct {
	mu       sync.Mutex
	nodes    map[string]certv1.NodeRole
	secrets  map[string]bool
	policies map[uint64]string // number → message
	inDoubt  []write
	refused  int
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.nodes) + len(l.secrets) + len(l.policies)
}

func (l *ledger) each() (nodes, secrets, policies int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.nodes), len(l.secrets), len(l.policies)
}

// write names one write: its kind ("node", "secret", "policy") and the node id, secret name or policy
// message.
type write struct{ kind, name string }

// TestKill9DuringWriteBurst kills wardend with SIGKILL while five clients write nodes, secrets and
// policy versions as fast as it answers, restarts it on the same data dir, and checks that every write
// it acknowledged is there. Writes in flight at the kill may or may not have landed; they are counted,
// not asserted.
func TestKill9DuringWriteBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("runs wardend as a process")
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	addr := etcdtest.FreeAddr(t)
	wd := startWardend(t, dataDir, addr)
	conn, err := adminConn(dataDir, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	certs := certv1.NewCertServiceClient(conn)
	secrets := secretv1.NewSecretServiceClient(conn)
	policies := policyv1.NewPolicyServiceClient(conn)

	l := &ledger{nodes: map[string]certv1.NodeRole{}, secrets: map[string]bool{}, policies: map[uint64]string{}}
	var killed atomic.Int64 // UnixNano of the kill; 0 before
	var inFlight atomic.Int64
	ctx, stopWriters := context.WithCancel(t.Context())
	defer stopWriters()
	var wg sync.WaitGroup
	// writer runs one client: call returns what it wrote and the ledger update to make on success.
	writer := func(call func(ctx context.Context, i int) (write, func(), error)) {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				started := time.Now().UnixNano()
				inFlight.Add(1)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				what, commit, err := call(cctx, i)
				cancel()
				inFlight.Add(-1)
				l.mu.Lock()
				switch k := killed.Load(); {
				case err == nil:
					commit()
				case k != 0 && started < k:
					l.inDoubt = append(l.inDoubt, what)
				default:
					l.refused++
				}
				l.mu.Unlock()
				if err != nil {
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		})
	}
	for w := range 2 {
		writer(func(ctx context.Context, i int) (write, func(), error) {
			id := fmt.Sprintf("burst-%d-%d", w, i)
			role := []certv1.NodeRole{certv1.NodeRole_NODE_ROLE_WEBAPP, certv1.NodeRole_NODE_ROLE_COREAPP}[i%2]
			_, err := certs.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: id, Role: role, Zone: "webapp"})
			return write{"node", id}, func() { l.nodes[id] = role }, err
		})
		writer(func(ctx context.Context, i int) (write, func(), error) {
			name := fmt.Sprintf("burst-%d-%d", w, i)
			_, err := secrets.CreateSecret(ctx, &secretv1.CreateSecretRequest{Name: name, Type: secretv1.SecretType_SECRET_TYPE_GENERIC})
			return write{"secret", name}, func() { l.secrets[name] = true }, err
		})
	}
	writer(func(ctx context.Context, i int) (write, func(), error) {
		msg := fmt.Sprintf("burst %d", i)
		cur, err := policies.GetPolicy(ctx, &policyv1.GetPolicyRequest{})
		if err != nil {
			return write{"policy", msg}, nil, err
		}
		doc := cur.GetPolicy().GetDocument()
		if doc.GetDefaults().GetHeaders().Extra == nil {
			doc.Defaults.Headers.Extra = map[string]string{}
		}
		doc.Defaults.Headers.Extra["X-Burst"] = fmt.Sprint(i)
		resp, err := policies.SetPolicy(ctx, &policyv1.SetPolicyRequest{Document: doc, Message: msg})
		return write{"policy", msg}, func() { l.policies[resp.GetPolicy().GetNumber()] = msg }, err
	})

	// Kill once every kind has acknowledged writes, while the writers keep going.
	deadline := time.Now().Add(bound)
	for {
		n, s, p := l.each()
		if n >= 20 && s >= 20 && p >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("burst too slow: %d nodes, %d secrets, %d policy versions acknowledged in %s", n, s, p, bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
	flying := inFlight.Load()
	killed.Store(time.Now().UnixNano())
	wd.kill(t)
	t.Logf("SIGKILL with %d write(s) in flight: %v", flying, wd.err)
	// Let the writers see the dead server, then stop them.
	time.Sleep(200 * time.Millisecond)
	stopWriters()
	wg.Wait()

	restarted := time.Now()
	startWardend(t, dataDir, addr)
	t.Logf("restarted on the same data dir in %s", time.Since(restarted).Round(time.Millisecond))
	conn2, err := adminConn(dataDir, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	certs = certv1.NewCertServiceClient(conn2)
	secrets = secretv1.NewSecretServiceClient(conn2)
	policies = policyv1.NewPolicyServiceClient(conn2)
	ctx = t.Context()

	lost := 0
	for id, role := range l.nodes {
		n, err := certs.GetNode(ctx, &certv1.GetNodeRequest{NodeId: id})
		if err != nil || n.GetNode().GetRole() != role {
			t.Errorf("acknowledged node %s: %v (role %v, want %v)", id, err, n.GetNode().GetRole(), role)
			lost++
		}
	}
	for name := range l.secrets {
		s, err := secrets.GetSecret(ctx, &secretv1.GetSecretRequest{Name: name})
		if err != nil || len(s.GetSecret().GetVersions()) == 0 {
			t.Errorf("acknowledged secret %s: %v", name, err)
			lost++
		}
	}
	history := map[uint64]string{}
	var newest uint64
	for token := ""; ; {
		page, err := policies.ListPolicyHistory(ctx, &policyv1.ListPolicyHistoryRequest{PageSize: 100, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.GetVersions() {
			history[v.GetNumber()] = v.GetMessage()
			newest = max(newest, v.GetNumber())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	for number, msg := range l.policies {
		if history[number] != msg {
			t.Errorf("acknowledged policy version %d %q: history has %q", number, msg, history[number])
			lost++
		}
	}
	for n := uint64(1); n <= newest; n++ {
		if _, ok := history[n]; !ok {
			t.Errorf("policy history has a hole at version %d (newest %d)", n, newest)
		}
	}
	// The restarted wardend takes writes again.
	if _, err := certs.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "after-restart", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp"}); err != nil {
		t.Errorf("write after restart: %v", err)
	}
	landed := 0
	for _, w := range l.inDoubt {
		var err error
		switch w.kind {
		case "node":
			_, err = certs.GetNode(ctx, &certv1.GetNodeRequest{NodeId: w.name})
		case "secret":
			_, err = secrets.GetSecret(ctx, &secretv1.GetSecretRequest{Name: w.name})
		default:
			err = fmt.Errorf("not in history")
			for _, msg := range history {
				if msg == w.name {
					err = nil
				}
			}
		}
		if err == nil {
			landed++
		}
	}
	n, s, p := l.each()
	t.Logf("acknowledged before the kill: %d nodes, %d secrets, %d policy versions (%d writes), lost: %d; in flight at the kill: %d, of which %d landed; refused after it: %d",
		n, s, p, l.total(), lost, len(l.inDoubt), landed, l.refused)
}
