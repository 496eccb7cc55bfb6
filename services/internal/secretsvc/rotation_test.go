package secretsvc_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/envelope"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/secretsvc"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

// TestRotationUnderTraffic is the "done when": a Webapp and a Coreapp exchange sealed messages
// in both directions, each with keys from its own WatchSecrets stream, while wa-secret rotates three
// times through staged → active → retiring, driven only by their acknowledgements. No open may fail.
func TestRotationUnderTraffic(t *testing.T) {
	t.Parallel()
	env, admin := start(t)
	registerNode(t, env, identity.RoleWebapp, "web-1")
	registerNode(t, env, identity.RoleCoreapp, "core-1")
	web := startPeer(t, env, identity.RoleWebapp, "web-1", true)
	core := startPeer(t, env, identity.RoleCoreapp, "core-1", true)
	for _, p := range []*peer{web, core} {
		etcdtest.Eventually(t, wait, func() bool { v, ok := p.keys.Active(); return ok && v == 1 }, p.id+" holds version 1 active")
	}

	ctx, stop := context.WithCancel(t.Context())
	var (
		wg             sync.WaitGroup
		opened, failed atomic.Int64
		mu             sync.Mutex
		firstErr       error
		seen           = map[uint64]bool{}
	)
	send := func(from, to *peer) {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			msg, err := envelope.Seal(from.keys, fmt.Appendf(nil, "%s→%s #%d", from.id, to.id, i), time.Now())
			if err == nil {
				var hdr envelope.Header
				_, hdr, err = to.opener.Open(msg)
				if err == nil {
					opened.Add(1)
					mu.Lock()
					seen[hdr.KeyVersion] = true
					mu.Unlock()
				}
			}
			if err != nil {
				failed.Add(1)
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("%s→%s: %w", from.id, to.id, err)
				}
				mu.Unlock()
			}
			// Keeps the rate well inside the receivers' replay cache under -race.
			time.Sleep(200 * time.Microsecond)
		}
	}
	wg.Add(2)
	go send(web, core)
	go send(core, web)

	for want := uint64(2); want <= 4; want++ {
		resp, err := admin.RotateSecret(t.Context(), &secretv1.RotateSecretRequest{Name: secretsvc.BuiltinName})
		if err != nil {
			t.Fatalf("rotate to %d: %v", want, err)
		}
		if resp.GetStagedNumber() != want {
			t.Fatalf("staged %d, want %d", resp.GetStagedNumber(), want)
		}
		etcdtest.Eventually(t, wait, func() bool {
			got, err := admin.GetSecret(t.Context(), &secretv1.GetSecretRequest{Name: secretsvc.BuiltinName})
			return err == nil && versionState(got.GetSecret(), want) == secretv1.VersionState_VERSION_STATE_ACTIVE
		}, fmt.Sprintf("version %d active after both nodes acknowledged it", want))
		for _, p := range []*peer{web, core} {
			etcdtest.Eventually(t, wait, func() bool { v, ok := p.keys.Active(); return ok && v == want }, fmt.Sprintf("%s sends with %d", p.id, want))
		}
		st, err := admin.GetRotationStatus(t.Context(), &secretv1.GetRotationStatusRequest{Name: secretsvc.BuiltinName})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetActiveNumber() != want || st.GetStagedNumber() != 0 || len(st.GetPendingNodeIds()) != 0 || st.GetStuck() {
			t.Fatalf("status after rotation to %d: %v", want, st)
		}
		for _, n := range st.GetNodes() {
			if n.GetAckedNumber() < want {
				t.Fatalf("node %s acknowledged %d, want ≥ %d: %v", n.GetNodeId(), n.GetAckedNumber(), want, st)
			}
		}
		// Let traffic run on the new version before the next rotation.
		before := opened.Load()
		etcdtest.Eventually(t, wait, func() bool { return opened.Load() > before+50 }, "traffic flows")
	}
	stop()
	wg.Wait()

	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d opens failed during rotation; first: %v", n, n+opened.Load(), firstErr)
	}
	for v := uint64(1); v <= 4; v++ {
		if !seen[v] {
			t.Errorf("no message was sealed with version %d (seen %v)", v, seen)
		}
	}
	// The retired-to-be versions are still held as retiring (grace period 10 minutes).
	s, _ := web.secret(secretsvc.BuiltinName)
	var states []string
	for _, v := range s.GetVersions() {
		states = append(states, fmt.Sprintf("%d:%v", v.GetNumber(), v.GetState()))
	}
	want := []string{"4:VERSION_STATE_ACTIVE", "3:VERSION_STATE_RETIRING", "2:VERSION_STATE_RETIRING", "1:VERSION_STATE_RETIRING"}
	if !slices.Equal(states, want) {
		t.Fatalf("web-1 holds %v, want %v", states, want)
	}
	t.Logf("%d messages opened across three rotations", opened.Load())
}

// TestRotationWithDownNode: a node in scope that never acknowledges holds the staged version back; the
// status reports it stuck after the timeout, and only the audited operator override promotes it.
func TestRotationWithDownNode(t *testing.T) {
	t.Parallel()
	env, admin := start(t)
	registerNode(t, env, identity.RoleWebapp, "web-1")
	registerNode(t, env, identity.RoleCoreapp, "core-down")
	startPeer(t, env, identity.RoleWebapp, "web-1", true)

	created, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{
		Name: "db-password", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, RotationTimeout: durationpb.New(time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RotateSecret(t.Context(), &secretv1.RotateSecretRequest{Name: "db-password", ExpectedVersion: created.GetSecret().GetVersion()}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.RotateSecret(t.Context(), &secretv1.RotateSecretRequest{Name: "db-password"})
	wantCode(t, err, codes.FailedPrecondition)

	var st *secretv1.GetRotationStatusResponse
	etcdtest.Eventually(t, wait, func() bool {
		st, err = admin.GetRotationStatus(t.Context(), &secretv1.GetRotationStatusRequest{Name: "db-password"})
		return err == nil && st.GetStuck() && slices.Equal(st.GetPendingNodeIds(), []string{"core-down"})
	}, "rotation reported stuck after the timeout, waiting for core-down only")
	if st.GetStagedNumber() != 2 || st.GetActiveNumber() != 1 || !slices.Equal(st.GetPendingNodeIds(), []string{"core-down"}) {
		t.Fatalf("status: %v", st)
	}
	acked := map[string]uint64{}
	for _, n := range st.GetNodes() {
		acked[n.GetNodeId()] = n.GetAckedNumber()
	}
	if acked["web-1"] != 2 || acked["core-down"] != 0 || len(acked) != 2 {
		t.Fatalf("acknowledged numbers %v, want web-1:2 core-down:0", acked)
	}
	// Several loop intervals later it is still staged: a stuck rotation is never promoted silently.
	time.Sleep(2 * secretsvc.DefaultInterval)
	got, err := admin.GetSecret(t.Context(), &secretv1.GetSecretRequest{Name: "db-password"})
	if err != nil {
		t.Fatal(err)
	}
	if s := versionState(got.GetSecret(), 2); s != secretv1.VersionState_VERSION_STATE_STAGED {
		t.Fatalf("version 2 is %v while core-down never acknowledged it", s)
	}

	_, err = admin.PromoteSecretVersion(t.Context(), &secretv1.PromoteSecretVersionRequest{Name: "db-password", Number: 3, Reason: "core-down is gone"})
	wantCode(t, err, codes.FailedPrecondition)
	pr, err := admin.PromoteSecretVersion(t.Context(), &secretv1.PromoteSecretVersionRequest{Name: "db-password", Number: 2, Reason: "core-down is being rebuilt"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pr.GetLaggingNodeIds(), []string{"core-down"}) {
		t.Fatalf("lagging %v, want [core-down]", pr.GetLaggingNodeIds())
	}
	if versionState(pr.GetSecret(), 2) != secretv1.VersionState_VERSION_STATE_ACTIVE || versionState(pr.GetSecret(), 1) != secretv1.VersionState_VERSION_STATE_RETIRING {
		t.Fatalf("after promote: %v", pr.GetSecret())
	}
	ev, ok := findEvent(auditEvents(t, env, "secret/db-password"), secretv1.SecretService_PromoteSecretVersion_FullMethodName,
		func(ev *adminv1.AuditEvent) bool { return ev.GetReason() == "core-down is being rebuilt" })
	if !ok {
		t.Fatal("no audit event for the promotion")
	}
	if ev.GetDetails()["lagging_nodes"] != "core-down" || ev.GetDetails()["version"] != "2" {
		t.Fatalf("audit details %v", ev.GetDetails())
	}
	st, err = admin.GetRotationStatus(t.Context(), &secretv1.GetRotationStatusRequest{Name: "db-password"})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetStuck() || st.GetStagedNumber() != 0 || st.GetActiveNumber() != 2 {
		t.Fatalf("status after promote: %v", st)
	}
}

// TestRetirementAndScheduledRotation drives time with a second service instance whose clock the test
// sets, on the same etcd as wardend's; transitions are Txns on the record's revision, so two instances
// may evaluate the same secret.
func TestRetirementAndScheduledRotation(t *testing.T) {
	t.Parallel()
	env, admin := start(t)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	svc, err := secretsvc.New(secretsvc.Config{
		Store: env.Platform.Client.Namespace(secretsvc.Prefix), Client: env.Platform.Client, Certs: env.Platform.Certs,
		Audit: env.Platform.Audit, Seal: env.Platform.Seal, Log: etcdtest.Logger(t), Now: now, ReplicaID: "test-clock",
		Interval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("second instance: %v", err)
		}
	})

	// Scoped to a node that does not exist: nothing waits for acknowledgements.
	created, err := admin.CreateSecret(t.Context(), &secretv1.CreateSecretRequest{
		Name: "api-key", Type: secretv1.SecretType_SECRET_TYPE_GENERIC, Scope: &secretv1.Scope{NodeIds: []string{"nobody"}},
		RotationPeriod: durationpb.New(time.Hour), GracePeriod: durationpb.New(secretsvc.DefaultReplayWindow),
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.GetSecret().GetVersions()[0].GetState() != secretv1.VersionState_VERSION_STATE_ACTIVE {
		t.Fatalf("first version: %v", created.GetSecret())
	}
	getSecret := func() *secretv1.Secret {
		t.Helper()
		got, err := admin.GetSecret(t.Context(), &secretv1.GetSecretRequest{Name: "api-key"})
		if err != nil {
			t.Fatal(err)
		}
		return got.GetSecret()
	}
	tick := func(d time.Duration) {
		t.Helper()
		offset.Store(int64(d))
		// The second instance's mirror must hold the last change before it evaluates, or its Txn on a
		// stale revision would rightly fail.
		want := getSecret().GetVersion()
		etcdtest.Eventually(t, wait, func() bool {
			got, err := svc.GetSecret(t.Context(), &secretv1.GetSecretRequest{Name: "api-key"})
			return err == nil && got.GetSecret().GetVersion() == want
		}, "second instance is current")
		svc.Tick(t.Context())
	}

	tick(59 * time.Minute)
	if n := len(getSecret().GetVersions()); n != 1 {
		t.Fatalf("rotated before the period: %v", getSecret())
	}
	tick(61 * time.Minute)
	etcdtest.Eventually(t, wait, func() bool {
		s := getSecret()
		return versionState(s, 2) == secretv1.VersionState_VERSION_STATE_ACTIVE && versionState(s, 1) == secretv1.VersionState_VERSION_STATE_RETIRING
	}, "scheduled rotation staged version 2 and, with no node in scope, promoted it")

	valueKey := fmt.Sprintf("secrets/api-key/v/%020d", 1)
	if _, ok := dumpSecretNS(t, env)[valueKey]; !ok {
		t.Fatalf("value of version 1 missing while retiring")
	}
	tick(61*time.Minute + secretsvc.DefaultReplayWindow + time.Second)
	etcdtest.Eventually(t, wait, func() bool { return len(getSecret().GetVersions()) == 1 }, "version 1 retired after the grace period")
	if _, ok := dumpSecretNS(t, env)[valueKey]; ok {
		t.Fatalf("sealed value of retired version 1 still stored")
	}
	evs := auditEvents(t, env, "secret/api-key")
	for _, action := range []string{"rotate", "promote", "retire"} {
		if _, ok := findEvent(evs, "", func(ev *adminv1.AuditEvent) bool { return ev.GetDetails()["action"] == action }); !ok {
			t.Errorf("no audit event for the automatic %s", action)
		}
	}

	// An operator rotation with nobody in scope is promoted at once too.
	rot, err := admin.RotateSecret(t.Context(), &secretv1.RotateSecretRequest{Name: "api-key"})
	if err != nil {
		t.Fatal(err)
	}
	if versionState(rot.GetSecret(), rot.GetStagedNumber()) != secretv1.VersionState_VERSION_STATE_ACTIVE {
		t.Fatalf("rotation with no node in scope not promoted at once: %v", rot.GetSecret())
	}
}
