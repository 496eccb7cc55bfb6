package secretsvc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/paging"
	"github.com/warden-sec/warden/services/internal/store"
)

// CreateSecret implements SecretService.CreateSecret.
func (s *Service) CreateSecret(ctx context.Context, req *secretv1.CreateSecretRequest) (*secretv1.CreateSecretResponse, error) {
	if err := validName(req.GetName()); err != nil {
		return nil, err
	}
	typ, err := typeFromProto(req.GetType())
	if err != nil {
		return nil, err
	}
	sc, err := scopeFromProto(req.GetScope())
	if err != nil {
		return nil, err
	}
	if err := validValue("value", typ, req.GetValue()); err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	rec := secretRecord{Name: req.GetName(), Type: typ, Scope: sc, CreatedAt: now}
	st := settings{rotation: req.GetRotationPeriod(), grace: req.GetGracePeriod(), timeout: req.GetRotationTimeout()}
	if err := st.apply(&rec, true, s.cfg.ReplayWindow); err != nil {
		return nil, err
	}
	value, supplied := req.GetValue(), len(req.GetValue()) > 0
	if !supplied {
		if value, err = generateValue(); err != nil {
			return nil, err
		}
	}
	ops, err := s.newSecretOps(&rec, value, supplied, now)
	if err != nil {
		return nil, err
	}
	ops = append(ops, s.cfg.Audit.Op(ctx, audit.Event{
		Target: target(rec.Name), Outcome: audit.Success, Reason: "secret created",
		Details: map[string]string{"type": typ, "scope": scopeString(sc), "supplied": strconv.FormatBool(supplied)},
	}))
	rev, err := s.cfg.Store.Txn(ctx, []store.Cond{store.MustNotExist(keyMeta(rec.Name))}, ops)
	if errors.Is(err, store.ErrConflict) {
		return nil, apierr.AlreadyExists("secret " + rec.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("create secret %s: %w", rec.Name, err)
	}
	if err := s.secrets.WaitRevision(ctx, rev); err != nil {
		return nil, err
	}
	return &secretv1.CreateSecretResponse{Secret: secretToProto(&rec, rev)}, nil
}

func scopeString(sc scope) string {
	if sc.all() {
		return "all"
	}
	return "roles=" + strings.Join(sc.Roles, ",") + " nodes=" + strings.Join(sc.NodeIDs, ",")
}

// fromMirror returns a secret's record from memory.
func (s *Service) fromMirror(ctx context.Context, name string) (secretRecord, int64, error) {
	if err := s.waitReady(ctx); err != nil {
		return secretRecord{}, 0, err
	}
	kv, ok := s.secrets.Get(keyMeta(name))
	if !ok {
		return secretRecord{}, 0, apierr.NotFound("secret " + name)
	}
	rec, err := decode[secretRecord](kv)
	return rec, kv.ModRevision, err
}

// fromStore reads a secret's record from etcd for a change, checking expected_version (0 skips it).
func (s *Service) fromStore(ctx context.Context, name string, expected int64) (secretRecord, store.KV, error) {
	kv, err := s.cfg.Store.Get(ctx, keyMeta(name))
	if errors.Is(err, store.ErrNotFound) {
		return secretRecord{}, kv, apierr.NotFound("secret " + name)
	}
	if err != nil {
		return secretRecord{}, kv, err
	}
	if expected != 0 && expected != kv.ModRevision {
		return secretRecord{}, kv, fmt.Errorf("secret %s is at version %d, not %d: %w", name, kv.ModRevision, expected, store.ErrConflict)
	}
	rec, err := decode[secretRecord](kv)
	return rec, kv, err
}

// GetSecret implements SecretService.GetSecret.
func (s *Service) GetSecret(ctx context.Context, req *secretv1.GetSecretRequest) (*secretv1.GetSecretResponse, error) {
	if err := validName(req.GetName()); err != nil {
		return nil, err
	}
	rec, rev, err := s.fromMirror(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &secretv1.GetSecretResponse{Secret: secretToProto(&rec, rev)}, nil
}

// ListSecrets implements SecretService.ListSecrets.
func (s *Service) ListSecrets(ctx context.Context, req *secretv1.ListSecretsRequest) (*secretv1.ListSecretsResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultPageSize, maxPageSize)
	if err != nil {
		return nil, err
	}
	after, err := paging.After(req.GetPageToken(), "")
	if err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	resp := &secretv1.ListSecretsResponse{}
	for _, kv := range s.metas() {
		name, _ := nameOfMeta(kv.Key)
		if after != "" && name <= after {
			continue
		}
		if len(resp.Secrets) == size {
			resp.NextPageToken = paging.Token(resp.Secrets[size-1].GetName())
			break
		}
		rec, err := decode[secretRecord](kv)
		if err != nil {
			return nil, err
		}
		resp.Secrets = append(resp.Secrets, secretToProto(&rec, kv.ModRevision))
	}
	return resp, nil
}

// UpdateSecret implements SecretService.UpdateSecret. Unset fields keep their value; a set but empty
// scope means every node.
func (s *Service) UpdateSecret(ctx context.Context, req *secretv1.UpdateSecretRequest) (*secretv1.UpdateSecretResponse, error) {
	if err := validName(req.GetName()); err != nil {
		return nil, err
	}
	var sc scope
	if req.GetScope() != nil {
		var err error
		if sc, err = scopeFromProto(req.GetScope()); err != nil {
			return nil, err
		}
	}
	rec, kv, err := s.fromStore(ctx, req.GetName(), req.GetExpectedVersion())
	if err != nil {
		return nil, err
	}
	if req.GetScope() != nil {
		rec.Scope = sc
	}
	st := settings{rotation: req.GetRotationPeriod(), grace: req.GetGracePeriod(), timeout: req.GetRotationTimeout()}
	if err := st.apply(&rec, false, s.cfg.ReplayWindow); err != nil {
		return nil, err
	}
	put, err := putOp(kv.Key, rec)
	if err != nil {
		return nil, err
	}
	ops := []store.Op{
		put,
		s.cfg.Audit.Op(ctx, audit.Event{
			Target: target(rec.Name), Outcome: audit.Success, Reason: "secret settings changed",
			Details: map[string]string{
				"scope": scopeString(rec.Scope), "rotation_period": rec.RotationPeriod.String(),
				"grace_period": rec.GracePeriod.String(), "rotation_timeout": rec.RotationTimeout.String(),
			},
		}),
	}
	rev, err := s.cfg.Store.Txn(ctx, []store.Cond{store.AtRevision(kv.Key, kv.ModRevision)}, ops)
	if err != nil {
		return nil, fmt.Errorf("update secret %s: %w", rec.Name, err)
	}
	// A narrower scope may leave only nodes that already hold the staged version.
	rec, rev, err = s.settle(ctx, rec.Name, rev)
	if err != nil {
		return nil, err
	}
	return &secretv1.UpdateSecretResponse{Secret: secretToProto(&rec, rev)}, nil
}

// settle waits for the mirror to hold rev, promotes the secret's staged version if nothing waits for
// it any more, and returns the record as it then is.
func (s *Service) settle(ctx context.Context, name string, rev int64) (secretRecord, int64, error) {
	if err := s.secrets.WaitRevision(ctx, rev); err != nil {
		return secretRecord{}, 0, err
	}
	if kv, ok := s.secrets.Get(keyMeta(name)); ok {
		prev, err := s.evaluate(ctx, kv, s.cfg.Now(), false)
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return secretRecord{}, 0, err
		}
		if prev != 0 {
			if err := s.secrets.WaitRevision(ctx, prev); err != nil {
				return secretRecord{}, 0, err
			}
		}
	}
	return s.fromMirror(ctx, name)
}

// DeleteSecret implements SecretService.DeleteSecret.
func (s *Service) DeleteSecret(ctx context.Context, req *secretv1.DeleteSecretRequest) (*secretv1.DeleteSecretResponse, error) {
	if err := validName(req.GetName()); err != nil {
		return nil, err
	}
	if req.GetName() == BuiltinName {
		return nil, apierr.FailedPrecondition("%s is built in and cannot be deleted; rotate it instead", BuiltinName)
	}
	_, kv, err := s.fromStore(ctx, req.GetName(), req.GetExpectedVersion())
	if err != nil {
		return nil, err
	}
	ops := []store.Op{
		store.DeletePrefixOp(keySecret(req.GetName())),
		s.cfg.Audit.Op(ctx, audit.Event{Target: target(req.GetName()), Outcome: audit.Success, Reason: "secret deleted with all its versions"}),
	}
	rev, err := s.cfg.Store.Txn(ctx, []store.Cond{store.AtRevision(kv.Key, kv.ModRevision)}, ops)
	if err != nil {
		return nil, fmt.Errorf("delete secret %s: %w", req.GetName(), err)
	}
	if err := s.secrets.WaitRevision(ctx, rev); err != nil {
		return nil, err
	}
	return &secretv1.DeleteSecretResponse{}, nil
}

// RotateSecret implements SecretService.RotateSecret.
func (s *Service) RotateSecret(ctx context.Context, req *secretv1.RotateSecretRequest) (*secretv1.RotateSecretResponse, error) {
	if err := validName(req.GetName()); err != nil {
		return nil, err
	}
	rec, kv, err := s.fromStore(ctx, req.GetName(), req.GetExpectedVersion())
	if err != nil {
		return nil, err
	}
	if err := validValue("value", rec.Type, req.GetValue()); err != nil {
		return nil, err
	}
	if st, ok := rec.byState(stateStaged); ok {
		return nil, apierr.FailedPrecondition("secret %s already has version %d staged; wait for it to become active or promote it", rec.Name, st.Number)
	}
	value, supplied := req.GetValue(), len(req.GetValue()) > 0
	if !supplied {
		if value, err = generateValue(); err != nil {
			return nil, err
		}
	}
	v := rec.stage(s.cfg.Now(), supplied)
	op, err := s.sealOp(rec.Name, v.Number, value)
	if err != nil {
		return nil, err
	}
	put, err := putOp(kv.Key, rec)
	if err != nil {
		return nil, err
	}
	ops := []store.Op{
		put, op,
		s.cfg.Audit.Op(ctx, audit.Event{
			Target: target(rec.Name), Outcome: audit.Success, Reason: "rotation started",
			Details: map[string]string{"action": "rotate", "version": strconv.FormatUint(v.Number, 10), "supplied": strconv.FormatBool(supplied)},
		}),
	}
	rev, err := s.cfg.Store.Txn(ctx, []store.Cond{store.AtRevision(kv.Key, kv.ModRevision)}, ops)
	if err != nil {
		return nil, fmt.Errorf("rotate secret %s: %w", rec.Name, err)
	}
	// With no node in scope nothing waits for the staged version: settle promotes it at once.
	rec, rev, err = s.settle(ctx, rec.Name, rev)
	if err != nil {
		return nil, err
	}
	return &secretv1.RotateSecretResponse{Secret: secretToProto(&rec, rev), StagedNumber: v.Number}, nil
}

// PromoteSecretVersion implements SecretService.PromoteSecretVersion.
func (s *Service) PromoteSecretVersion(ctx context.Context, req *secretv1.PromoteSecretVersionRequest) (*secretv1.PromoteSecretVersionResponse, error) {
	if err := validName(req.GetName()); err != nil {
		return nil, err
	}
	if len(req.GetReason()) > maxReasonLen {
		return nil, apierr.InvalidArg("reason", "at most %d characters", maxReasonLen)
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	rec, kv, err := s.fromStore(ctx, req.GetName(), 0)
	if err != nil {
		return nil, err
	}
	st, ok := rec.byState(stateStaged)
	if !ok {
		return nil, apierr.FailedPrecondition("secret %s has no staged version", rec.Name)
	}
	if req.GetNumber() != st.Number {
		return nil, apierr.FailedPrecondition("version %d of secret %s is not the staged one (%d)", req.GetNumber(), rec.Name, st.Number)
	}
	lagging := s.pending(&rec, st.Number)
	rec.promote(st.Number, s.cfg.Now())
	put, err := putOp(kv.Key, rec)
	if err != nil {
		return nil, err
	}
	ops := []store.Op{
		put,
		s.cfg.Audit.Op(ctx, audit.Event{
			Target: target(rec.Name), Outcome: audit.Success, Reason: req.GetReason(),
			Details: map[string]string{
				"action": "promote-override", "version": strconv.FormatUint(st.Number, 10),
				"lagging_nodes": strings.Join(lagging, ","),
			},
		}),
	}
	rev, err := s.cfg.Store.Txn(ctx, []store.Cond{store.AtRevision(kv.Key, kv.ModRevision)}, ops)
	if err != nil {
		return nil, fmt.Errorf("promote secret %s version %d: %w", rec.Name, st.Number, err)
	}
	if err := s.secrets.WaitRevision(ctx, rev); err != nil {
		return nil, err
	}
	s.log.Warn("staged secret version promoted by an operator", "secret", rec.Name, "version", st.Number, "lagging_nodes", lagging)
	return &secretv1.PromoteSecretVersionResponse{Secret: secretToProto(&rec, rev), LaggingNodeIds: lagging}, nil
}

// rotationStatus is a secret's rotation as GetRotationStatus and the metrics show it.
type rotationStatus struct {
	staged, active uint64
	nodes          []*secretv1.NodeSecretStatus
	pending        []string
	deadline       *timestamppb.Timestamp
	stuck          bool
}

func (s *Service) rotationStatus(rec *secretRecord) rotationStatus {
	var st rotationStatus
	if v, ok := rec.byState(stateActive); ok {
		st.active = v.Number
	}
	staged, hasStaged := rec.byState(stateStaged)
	for n := range s.nodesInScope(rec.Scope) {
		ns := &secretv1.NodeSecretStatus{NodeId: n.ID}
		a, ok := s.ackOf(n.ID)
		if ok {
			ns.AckedNumber, ns.AckedAt = a.highest(rec.Name), ts(a.ReceivedAt)
		}
		st.nodes = append(st.nodes, ns)
		if hasStaged && (!ok || !a.holds(rec.Name, staged.Number)) {
			st.pending = append(st.pending, n.ID)
		}
	}
	if hasStaged {
		st.staged = staged.Number
		deadline := staged.CreatedAt.Add(rec.RotationTimeout)
		st.deadline = timestamppb.New(deadline)
		st.stuck = len(st.pending) > 0 && s.cfg.Now().After(deadline)
	}
	return st
}

// GetRotationStatus implements SecretService.GetRotationStatus.
func (s *Service) GetRotationStatus(ctx context.Context, req *secretv1.GetRotationStatusRequest) (*secretv1.GetRotationStatusResponse, error) {
	if err := validName(req.GetName()); err != nil {
		return nil, err
	}
	rec, rev, err := s.fromMirror(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	st := s.rotationStatus(&rec)
	return &secretv1.GetRotationStatusResponse{
		Secret: secretToProto(&rec, rev), StagedNumber: st.staged, ActiveNumber: st.active,
		Nodes: st.nodes, PendingNodeIds: st.pending, Deadline: st.deadline, Stuck: st.stuck,
	}, nil
}

// RevealSecret implements SecretService.RevealSecret. The reveal is audited in its own Txn before the
// value is returned, so no value leaves without its record.
func (s *Service) RevealSecret(ctx context.Context, req *secretv1.RevealSecretRequest) (*secretv1.RevealSecretResponse, error) {
	if err := validName(req.GetName()); err != nil {
		return nil, err
	}
	reason := strings.TrimSpace(req.GetReason())
	if reason == "" {
		return nil, apierr.InvalidArg("reason", "required: say why the value is revealed")
	}
	if len(reason) > maxReasonLen {
		return nil, apierr.InvalidArg("reason", "at most %d characters", maxReasonLen)
	}
	rec, _, err := s.fromStore(ctx, req.GetName(), 0)
	if err != nil {
		return nil, err
	}
	n := req.GetNumber()
	if n == 0 {
		v, ok := rec.byState(stateActive)
		if !ok {
			return nil, apierr.FailedPrecondition("secret %s has no active version", rec.Name)
		}
		n = v.Number
	}
	if _, ok := rec.version(n); !ok {
		return nil, apierr.NotFound(fmt.Sprintf("version %d of secret %s", n, rec.Name))
	}
	kv, err := s.cfg.Store.Get(ctx, keyValue(rec.Name, n))
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.NotFound(fmt.Sprintf("version %d of secret %s", n, rec.Name))
	}
	if err != nil {
		return nil, err
	}
	value, err := s.cfg.Seal.Open(kv.Value, aad(kv.Key))
	if err != nil {
		return nil, fmt.Errorf("open secret %s version %d: %w", rec.Name, n, err)
	}
	ev := audit.Event{
		Target: target(rec.Name), Outcome: audit.Success, Reason: reason,
		Details: map[string]string{"action": "reveal", "version": strconv.FormatUint(n, 10)},
	}
	if _, err := s.cfg.Store.Txn(ctx, nil, []store.Op{s.cfg.Audit.Op(ctx, ev)}); err != nil {
		return nil, fmt.Errorf("audit reveal of secret %s: %w", rec.Name, err)
	}
	return &secretv1.RevealSecretResponse{Number: n, Value: value}, nil
}
