package scaleout

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/agent/node"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/testutil/etcdcluster"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// TestScaleOut is issue 8's scale-out scenario, one step after the other on the same cluster:
//
//  1. three replicas on a three-member etcd cluster share the CA the first created, and the admin
//     files of each replica's data dir work on every replica;
//  2. every replica campaigns in every periodic-job election and exactly one leads each;
//  3. any replica serves any agent: CreateNode on A, Bootstrap on B, WatchPolicy on C, SetPolicy on A
//     reaches the stream on C; a real agent with all three endpoints materialises its files and fronts;
//  4. C (the leader of the CRL job) stops: leadership moves, the stream client fails over and resumes
//     with last_version, the agent keeps receiving;
//  5. one etcd member (the raft leader) stops: writes and pushes continue;
//  6. a second member stops, quorum is lost: writes fail with Unavailable, the agent keeps its files,
//     its status and its front, and no stream receives a destructive snapshot;
//  7. the members restart: writes and pushes work again.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-member etcd cluster and three wardend replicas")
	}
	began := time.Now()
	ctx := t.Context()
	// Steps share the cluster, the replicas, the stream client and the agent, so they are not subtests
	// (whose cleanups would end those at the end of each step); a failure names its step in the log.
	step := func(name string, fn func()) {
		t.Logf("step %q", name)
		start := time.Now()
		fn()
		t.Logf("step %q done in %s (total %s)", name, time.Since(start).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	}

	cl := etcdcluster.Start(t, 3)
	sealKey := filepath.Join(t.TempDir(), "seal.key")
	if _, err := seal.GenerateKeyringFile(sealKey); err != nil {
		t.Fatal(err)
	}
	ids := []string{"replica-0", "replica-1", "replica-2"}
	reps := make([]*wardentest.Env, len(ids))
	admins := make([]*grpc.ClientConn, len(ids))
	step("start replicas", func() {
		for i, id := range ids {
			reps[i] = startReplica(t, cl, sealKey, id)
			admins[i] = reps[i].AdminConn()
		}
	})
	pool := reps[0].Pool()

	step("shared CA and admin files", func() {
		var bundle string
		for i, ri := range reps {
			tb, err := certv1.NewCertServiceClient(admins[i]).GetTrustBundle(ctx, &certv1.GetTrustBundleRequest{})
			if err != nil {
				t.Fatalf("GetTrustBundle on %s: %v", ids[i], err)
			}
			if len(tb.GetCas()) != 1 {
				t.Fatalf("%s trusts %d CAs, want the one the first replica created", ids[i], len(tb.GetCas()))
			}
			if i == 0 {
				bundle = tb.GetTrustBundlePem()
			} else if tb.GetTrustBundlePem() != bundle {
				t.Fatalf("%s serves another trust bundle than %s", ids[i], ids[0])
			}
			pair, err := tls.LoadX509KeyPair(ri.Admin.Cert, ri.Admin.Key)
			if err != nil {
				t.Fatal(err)
			}
			for j, rj := range reps {
				who, err := adminv1.NewAdminServiceClient(dial(t, rj.Addr, ri.Pool(), &pair)).WhoAmI(ctx, &adminv1.WhoAmIRequest{})
				if err != nil || who.GetRole() != "admin" {
					t.Fatalf("admin files of %s on %s: %v (role %q)", ids[i], ids[j], err, who.GetRole())
				}
			}
		}
	})

	var victim int // the replica stopped in step 4: the leader of the CRL job
	step("one leader per periodic job", func() {
		c := reps[0].Platform.Client
		etcdtest.Eventually(t, bound, func() bool {
			for _, name := range elections {
				if cands, err := candidates(ctx, c, name); err != nil || len(cands) != len(ids) {
					return false
				}
			}
			return true
		}, "every replica campaigns in every election")
		for _, name := range elections {
			cands, err := candidates(ctx, c, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.Sorted(slices.Values(cands)); !slices.Equal(got, ids) {
				t.Fatalf("election %s candidates %v, want one per replica %v", name, got, ids)
			}
			l := leader(ctx, c, name)
			if l != cands[0] {
				t.Fatalf("election %s: leader %q is not the oldest candidate %q", name, l, cands[0])
			}
			t.Logf("election %-16s leader %s, waiting %v", name, l, cands[1:])
		}
		// Every replica reports the same leader to operators.
		want := leader(ctx, c, "audit-retention")
		for i := range reps {
			st, err := adminv1.NewAdminServiceClient(admins[i]).GetStatus(ctx, &adminv1.GetStatusRequest{})
			if err != nil || st.GetLeaderReplicaId() != want || st.GetReplicaId() != ids[i] {
				t.Fatalf("GetStatus on %s: %v, leader %q replica %q, want leader %q", ids[i], err, st.GetLeaderReplicaId(), st.GetReplicaId(), want)
			}
		}
		victim = slices.Index(ids, leader(ctx, c, "cert-crl"))
	})
	// A and B survive; C is the replica that will stop.
	others := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == victim })
	a, b, c := others[0], others[1], victim
	certsA := certv1.NewCertServiceClient(admins[a])
	policyA := policyv1.NewPolicyServiceClient(admins[a])
	policyB := policyv1.NewPolicyServiceClient(admins[b])
	secretsB := secretv1.NewSecretServiceClient(admins[b])

	var w *watcher
	var pv *policyv1.PolicyVersion
	var web *certv1.CreateNodeResponse
	step("any replica serves any agent", func() {
		edge, err := certsA.CreateNode(ctx, &certv1.CreateNodeRequest{
			NodeId: "edge-1", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp", Addresses: []string{"localhost", "127.0.0.1"},
		})
		if err != nil {
			t.Fatalf("CreateNode on %s: %v", ids[a], err)
		}
		if web, err = certsA.CreateNode(ctx, &certv1.CreateNodeRequest{
			NodeId: "web-1", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp", Addresses: []string{"localhost", "127.0.0.1"},
		}); err != nil {
			t.Fatal(err)
		}
		// The secret rotated while quorum is lost: in the agent's scope only, so no other node holds up
		// its rotation.
		if _, err := secretsB.CreateSecret(ctx, &secretv1.CreateSecretRequest{
			Name: "scale-db", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, Scope: &secretv1.Scope{NodeIds: []string{"web-1"}},
		}); err != nil {
			t.Fatal(err)
		}
		cert := bootstrap(ctx, t, reps[b].AnonConn(), edge.GetJoinToken(), identity.NodeID(trustDomain, identity.RoleWebapp, "edge-1"))
		w = newWatcher(t, "edge-1", []string{reps[c].Addr, reps[a].Addr, reps[b].Addr}, pool, cert)
		wctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); w.run(wctx) }()
		t.Cleanup(func() { cancel(); <-done })
		etcdtest.Eventually(t, bound, func() bool { return w.deliveries() > 0 }, "first policy snapshot on "+ids[c])
		if got := w.last().addr; got != reps[c].Addr {
			t.Fatalf("first snapshot from %s, want %s", got, reps[c].Addr)
		}
		pv, err = setPolicy(ctx, policyA, "open the API to loopback clients", "the test clients are on loopback", openLoopback)
		if err != nil {
			t.Fatalf("SetPolicy on %s: %v", ids[a], err)
		}
		etcdtest.Eventually(t, bound, func() bool {
			l := w.last()
			return l.number == pv.GetNumber() && l.addr == reps[c].Addr
		}, "policy set on A reaches the stream on C")
	})

	var ag *runningAgent
	step("agent with three endpoints", func() {
		// A and B are reached through forwarders that start only once the agent runs on C, so that all
		// of its streams are on the replica that stops next and its failover is certain to be exercised.
		fa, fb := newForwarder(t, reps[a].Addr), newForwarder(t, reps[b].Addr)
		ag = startAgent(t, "web-1", []string{reps[c].Addr, fa.addr, fb.addr}, web.GetJoinToken(), web.GetCaFingerprint())
		etcdtest.Eventually(t, bound, func() bool {
			st := ag.status()
			_, err := os.Stat(filepath.Join(ag.dataDir, "certs", "scale-db.json"))
			return st != nil && st.PolicyNumber == pv.GetNumber() && err == nil
		}, "agent applied the policy and the secrets")
		etcdtest.Eventually(t, bound, func() bool {
			body, _, err := ag.frontGet(pool)
			return err == nil && body == "upstream ok"
		}, "agent front serves")
		fa.start(t)
		fb.start(t)
		etcdtest.Eventually(t, bound, func() bool { return fa.accepted.Load() > 0 && fb.accepted.Load() > 0 }, "agent connects to A and B")
	})

	step("replica C stops", func() {
		survivors := []string{ids[a], ids[b]}
		c0 := reps[a].Platform.Client
		led := map[string]string{}
		for _, name := range elections {
			led[name] = leader(ctx, c0, name)
		}
		// Stop in the background: the poll below measures the handover from the moment of the stop,
		// not from the end of the replica's graceful shutdown.
		ag.tap.take()
		stopped := time.Now()
		shutdown := make(chan time.Duration, 1)
		go func() {
			reps[c].Stop()
			shutdown <- time.Since(stopped)
		}()
		etcdtest.Eventually(t, bound, func() bool {
			for _, name := range elections {
				if !slices.Contains(survivors, leader(ctx, c0, name)) {
					return false
				}
			}
			return true
		}, "every periodic job led by a surviving replica")
		for _, name := range elections {
			if led[name] == ids[c] {
				t.Logf("election %-16s moved %s → %s within %s", name, ids[c], leader(ctx, c0, name), time.Since(stopped).Round(time.Millisecond))
			}
		}
		etcdtest.Eventually(t, bound, func() bool {
			on := w.on()
			return on != "" && on != reps[c].Addr
		}, "stream client resubscribed on another replica")
		t.Logf("stream client resubscribed on %s %s after the stop", w.on(), time.Since(stopped).Round(time.Millisecond))
		select {
		case d := <-shutdown:
			t.Logf("%s shut down in %s", ids[c], d.Round(time.Millisecond))
		case <-time.After(bound):
			t.Fatalf("%s did not shut down", ids[c])
		}
		pv2, err := setPolicy(ctx, policyB, "after replica loss", "", markHeader("replica-lost"))
		if err != nil {
			t.Fatal(err)
		}
		etcdtest.Eventually(t, bound, func() bool {
			l := w.last()
			return l.number == pv2.GetNumber() && l.addr != reps[c].Addr
		}, "push after failover")
		etcdtest.Eventually(t, bound, func() bool {
			st := ag.status()
			if st == nil || st.PolicyNumber != pv2.GetNumber() {
				return false
			}
			for _, s := range st.Streams {
				if !s.Connected {
					return false
				}
			}
			return true
		}, "agent reconnected every stream and receives after the replica loss")
		moved := slices.Compact(slices.Sorted(slices.Values(ag.tap.take())))
		if want := []string{"credentials", "policy", "secrets"}; !slices.Equal(moved, want) {
			t.Fatalf("agent streams that resubscribed after the stop: %v, want %v", moved, want)
		}
		t.Logf("agent streams that failed over from %s: %v", ids[c], moved)
	})

	lost := -1 // the etcd member stopped in step 5
	step("etcd member lost", func() {
		c0 := reps[a].Platform.Client
		lost = etcdLeader(ctx, c0, cl.Endpoints())
		if lost < 0 {
			t.Fatal("no etcd member reports itself raft leader")
		}
		cl.Stop(lost)
		t.Logf("stopped etcd member %d, the raft leader", lost)
		var pv3 *policyv1.PolicyVersion
		n := retryUnavailable(t, "SetPolicy with one member down", func(ctx context.Context) error {
			var err error
			pv3, err = setPolicy(ctx, policyA, "after member loss", "", markHeader("member-lost"))
			return err
		})
		staged := rotate(t, secretsB, node.WASecretName)
		t.Logf("writes with one member down: SetPolicy after %d attempt(s), RotateSecret staged v%d", n, staged)
		etcdtest.Eventually(t, bound, func() bool { return w.last().number == pv3.GetNumber() }, "stream push with one member down")
		etcdtest.Eventually(t, bound, func() bool {
			st := ag.status()
			return st != nil && st.PolicyNumber == pv3.GetNumber() && holds(t, ag, node.FileWASecret, staged)
		}, "agent push with one member down")
	})

	step("quorum lost", func() {
		before := ag.files(t)
		stBefore := ag.status()
		_, certBefore, err := ag.frontGet(pool)
		if err != nil {
			t.Fatal(err)
		}
		seen := w.deliveries()
		cur, err := policyA.GetPolicy(ctx, &policyv1.GetPolicyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		doc := cur.GetPolicy().GetDocument()
		markHeader("no-quorum")(doc)
		second := (lost + 1) % 3
		cl.Stop(second)
		t.Logf("stopped etcd member %d: one of three left", second)

		writes := []struct {
			name string
			call func(ctx context.Context) error
		}{
			{"SetPolicy", func(ctx context.Context) error {
				_, err := policyA.SetPolicy(ctx, &policyv1.SetPolicyRequest{Document: doc, Message: "without quorum"})
				return err
			}},
			{"RotateSecret", func(ctx context.Context) error {
				_, err := secretsB.RotateSecret(ctx, &secretv1.RotateSecretRequest{Name: "scale-db"})
				return err
			}},
			{"CreateNode", func(ctx context.Context) error {
				_, err := certsA.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "late-1", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp"})
				return err
			}},
		}
		for _, wr := range writes {
			// The call's own deadline keeps the check bounded: a write that hung past it would end with
			// DeadlineExceeded, not the Unavailable the replica must answer within its etcd timeout.
			cctx, cancel := context.WithTimeout(ctx, 4*etcdTimeout+10*time.Second)
			start := time.Now()
			err := wr.call(cctx)
			cancel()
			took := time.Since(start)
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("%s without quorum: %v, want Unavailable", wr.name, err)
			}
			t.Logf("%-12s without quorum: %s after %s", wr.name, status.Code(err), took.Round(time.Millisecond))
		}
		// The replicas notice (their health follows etcd) while the agent keeps serving what it has.
		etcdtest.Eventually(t, bound, func() bool {
			return health(ctx, admins[a]) == healthpb.HealthCheckResponse_NOT_SERVING &&
				health(ctx, admins[b]) == healthpb.HealthCheckResponse_NOT_SERVING
		}, "replicas report NOT_SERVING without quorum")
		if after := ag.files(t); !maps.Equal(before, after) {
			t.Fatalf("agent files changed without quorum:\nbefore %v\nafter  %v", before, after)
		}
		st := ag.status()
		if st == nil || st.PolicyNumber != stBefore.PolicyNumber || ag.policyVersion() < stBefore.Streams["policy"].Version {
			t.Fatalf("agent status without quorum: %+v, before %+v", st, stBefore)
		}
		body, certNow, err := ag.frontGet(pool)
		if err != nil || body != "upstream ok" || !certNow.Equal(certBefore) {
			t.Fatalf("front without quorum: %q %v (same certificate: %v)", body, err, err == nil && certNow.Equal(certBefore))
		}
		if _, _, v := w.report(); len(v) > 0 {
			t.Fatalf("stream client: %v", v)
		}
		if n := w.deliveries(); n != seen {
			t.Logf("stream client got %d snapshot(s) without quorum (none destructive)", n-seen)
		}
	})

	step("quorum restored", func() {
		cl.Restart(lost)
		cl.Restart((lost + 1) % 3)
		var pv4 *policyv1.PolicyVersion
		n := retryUnavailable(t, "SetPolicy after restart", func(ctx context.Context) error {
			var err error
			pv4, err = setPolicy(ctx, policyA, "quorum restored", "", markHeader("restored"))
			return err
		})
		staged := rotate(t, secretsB, "scale-db")
		retryUnavailable(t, "CreateNode after restart", func(ctx context.Context) error {
			_, err := certsA.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: "late-1", Role: certv1.NodeRole_NODE_ROLE_WEBAPP, Zone: "webapp"})
			if status.Code(err) == codes.AlreadyExists {
				return nil
			}
			return err
		})
		t.Logf("writes after restart: SetPolicy after %d attempt(s), RotateSecret staged v%d", n, staged)
		etcdtest.Eventually(t, bound, func() bool { return w.last().number == pv4.GetNumber() }, "stream push after restart")
		etcdtest.Eventually(t, bound, func() bool {
			st := ag.status()
			return st != nil && st.PolicyNumber == pv4.GetNumber() && holds(t, ag, "scale-db.json", staged)
		}, "agent push after restart")
	})

	got, subs, violations := w.report()
	if len(violations) > 0 {
		t.Fatalf("stream client saw %v", violations)
	}
	if len(subs) < 2 {
		t.Fatalf("stream client subscriptions %v: no failover", subs)
	}
	t.Logf("stream client: %d snapshots, strictly increasing versions; subscriptions (addr@last_version): %v", len(got), subs)
	t.Logf("scale-out scenario took %s", time.Since(began).Round(time.Millisecond))
}

// rotate stages a new version of the secret and returns its number. A retried call whose first attempt
// was applied although it reported Unavailable finds the version staged and takes it.
func rotate(t *testing.T, c secretv1.SecretServiceClient, name string) uint64 {
	t.Helper()
	var staged uint64
	retryUnavailable(t, "RotateSecret "+name, func(ctx context.Context) error {
		r, err := c.RotateSecret(ctx, &secretv1.RotateSecretRequest{Name: name})
		if status.Code(err) == codes.FailedPrecondition && staged == 0 {
			st, serr := c.GetRotationStatus(ctx, &secretv1.GetRotationStatusRequest{Name: name})
			if serr == nil && st.GetStagedNumber() > 0 {
				staged = st.GetStagedNumber()
				return nil
			}
		}
		if err != nil {
			return err
		}
		staged = r.GetStagedNumber()
		return nil
	})
	return staged
}

// holds reports whether the agent's <name> secrets file lists version number.
func holds(t *testing.T, a *runningAgent, file string, number uint64) bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(a.dataDir, "certs", file))
	if err != nil {
		return false
	}
	var f node.SecretsFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return slices.ContainsFunc(f.Versions, func(v node.SecretFileVersion) bool { return v.Number == number })
}

func health(ctx context.Context, conn *grpc.ClientConn) healthpb.HealthCheckResponse_ServingStatus {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return r.GetStatus()
}
