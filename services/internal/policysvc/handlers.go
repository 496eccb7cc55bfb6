package policysvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/dbssl"
	"github.com/warden-sec/warden/services/internal/paging"
	"github.com/warden-sec/warden/services/internal/store"
)

// GetPolicy implements PolicyService.
func (s *Service) GetPolicy(ctx context.Context, req *policyv1.GetPolicyRequest) (*policyv1.GetPolicyResponse, error) {
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	n := req.GetNumber()
	if n == 0 {
		cur, _, err := s.readCurrent(ctx)
		if err != nil {
			return nil, err
		}
		n = cur
	}
	pv, err := s.version(ctx, n)
	if err != nil {
		return nil, err
	}
	return &policyv1.GetPolicyResponse{Policy: pv}, nil
}

// ValidatePolicy implements PolicyService.
func (s *Service) ValidatePolicy(ctx context.Context, req *policyv1.ValidatePolicyRequest) (*policyv1.ValidatePolicyResponse, error) {
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	n, _, err := s.readCurrent(ctx)
	if err != nil {
		return nil, err
	}
	cur, err := s.version(ctx, n)
	if err != nil {
		return nil, err
	}
	ev := evaluate(req.GetDocument(), cur.GetDocument(), s.roleOf)
	return &policyv1.ValidatePolicyResponse{Errors: issuesPB(ev.errs), Warnings: issuesPB(ev.allWarnings())}, nil
}

// SetPolicy implements PolicyService.
func (s *Service) SetPolicy(ctx context.Context, req *policyv1.SetPolicyRequest) (*policyv1.SetPolicyResponse, error) {
	if req.GetDocument() == nil {
		return nil, apierr.InvalidArg("document", "required")
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	pv, err := s.commit(ctx, change{
		doc: req.GetDocument(), expected: req.GetExpectedRevision(), message: req.GetMessage(),
		allow: req.GetAllowDowngrade(), reason: req.GetDowngradeReason(),
	})
	if err != nil {
		return nil, err
	}
	return &policyv1.SetPolicyResponse{Policy: pv}, nil
}

// RollbackPolicy implements PolicyService.
func (s *Service) RollbackPolicy(ctx context.Context, req *policyv1.RollbackPolicyRequest) (*policyv1.RollbackPolicyResponse, error) {
	if req.GetToNumber() == 0 {
		return nil, apierr.InvalidArg("to_number", "required")
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	old, err := s.version(ctx, req.GetToNumber())
	if err != nil {
		return nil, err
	}
	msg := req.GetMessage()
	if msg == "" {
		msg = fmt.Sprintf("rollback to version %d", req.GetToNumber())
	}
	pv, err := s.commit(ctx, change{
		doc: old.GetDocument(), expected: req.GetExpectedRevision(), message: msg,
		allow: req.GetAllowDowngrade(), reason: req.GetDowngradeReason(), rollbackOf: req.GetToNumber(),
	})
	if err != nil {
		return nil, err
	}
	return &policyv1.RollbackPolicyResponse{Policy: pv}, nil
}

// change is a new version to store.
type change struct {
	doc        *policyv1.PolicyDocument
	expected   int64
	message    string
	allow      bool
	reason     string
	rollbackOf uint64
}

// maxCommitAttempts bounds retries when another writer moves the current pointer between our read and
// our write (only without expected_revision; with it, that is the caller's conflict).
const maxCommitAttempts = 5

// commit validates c against the current version and stores it as the next version, with the pointer
// and the audit record, in one transaction conditioned on the pointer not having moved.
func (s *Service) commit(ctx context.Context, c change) (*policyv1.PolicyVersion, error) {
	for attempt := 1; ; attempt++ {
		n, modRev, err := s.readCurrent(ctx)
		if err != nil {
			return nil, err
		}
		if c.expected != 0 && c.expected != modRev {
			return nil, fmt.Errorf("policy: expected revision %d, current is %d: %w", c.expected, modRev, store.ErrConflict)
		}
		cur, err := s.version(ctx, n)
		if err != nil {
			return nil, err
		}
		ev := evaluate(c.doc, cur.GetDocument(), s.roleOf)
		if len(ev.errs) > 0 {
			first := ev.errs[0]
			reason := first.Message
			if len(ev.errs) > 1 {
				reason += "; " + formatIssues(ev.errs[1:])
			}
			return nil, apierr.InvalidArg(first.Field, "%s", reason)
		}
		approved := c.allow && strings.TrimSpace(c.reason) != ""
		if ev.needsApproval() && !approved {
			listed := formatIssues(ev.downgrades)
			s.cfg.Audit.Record(ctx, audit.Event{Target: "policy", Outcome: audit.Denied,
				Reason: "unapproved downgrade", Details: map[string]string{"downgrades": listed}})
			return nil, apierr.FailedPrecondition("the policy weakens security (set allow_downgrade and downgrade_reason to accept): %s", listed)
		}
		pv := &policyv1.PolicyVersion{
			Number: n + 1, Document: c.doc, Author: authn.FromContext(ctx).String(), Message: c.message,
			CreatedAt: timestamppb.New(s.cfg.Now()), Warnings: issuesPB(ev.allWarnings()), RollbackOf: c.rollbackOf,
		}
		details := map[string]string{"number": strconv.FormatUint(n+1, 10), "previous": strconv.FormatUint(n, 10), "message": c.message}
		auditReason := c.message
		if ev.needsApproval() {
			pv.DowngradeReason = c.reason
			auditReason = "downgrade: " + c.reason
			details["downgrades"] = formatIssues(ev.downgrades)
		}
		if c.rollbackOf != 0 {
			details["rollback_of"] = strconv.FormatUint(c.rollbackOf, 10)
		}
		val, err := marshalVersion(pv)
		if err != nil {
			return nil, err
		}
		ptr, _ := json.Marshal(currentRecord{Number: n + 1})
		rev, err := s.cfg.Store.Txn(ctx,
			[]store.Cond{store.AtRevision(keyCurrent, modRev), store.MustNotExist(keyVersion(n + 1))},
			[]store.Op{
				store.PutOp(keyVersion(n+1), val), store.PutOp(keyCurrent, ptr),
				s.cfg.Audit.Op(ctx, audit.Event{Target: fmt.Sprintf("policy/versions/%d", n+1), Outcome: audit.Success,
					Reason: auditReason, Details: details}),
			})
		if errors.Is(err, store.ErrConflict) && c.expected == 0 && attempt < maxCommitAttempts {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("store policy version %d: %w", n+1, err)
		}
		pv.Revision = rev
		s.remember(pv)
		if ev.needsApproval() {
			s.cfg.Log.WarnContext(ctx, "policy downgrade accepted", "number", n+1, "reason", c.reason, "downgrades", details["downgrades"])
		}
		return pv, nil
	}
}

// DiffPolicy implements PolicyService.
func (s *Service) DiffPolicy(ctx context.Context, req *policyv1.DiffPolicyRequest) (*policyv1.DiffPolicyResponse, error) {
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	to := req.GetToNumber()
	if to == 0 {
		n, _, err := s.readCurrent(ctx)
		if err != nil {
			return nil, err
		}
		to = n
	}
	from := req.GetFromNumber()
	if from == 0 {
		if to <= 1 {
			return nil, apierr.InvalidArg("from_number", "version %d has no predecessor", to)
		}
		from = to - 1
	}
	a, err := s.version(ctx, from)
	if err != nil {
		return nil, err
	}
	b, err := s.version(ctx, to)
	if err != nil {
		return nil, err
	}
	return &policyv1.DiffPolicyResponse{FromNumber: from, ToNumber: to, Changes: diff(a.GetDocument(), b.GetDocument())}, nil
}

const (
	defaultHistoryPage = 50
	maxHistoryPage     = 500
)

// ListPolicyHistory implements PolicyService. Versions are numbered densely from 1 and never deleted,
// so a page newest-first is the key range just below the previous page, read in ascending order.
func (s *Service) ListPolicyHistory(ctx context.Context, req *policyv1.ListPolicyHistoryRequest) (*policyv1.ListPolicyHistoryResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultHistoryPage, maxHistoryPage)
	if err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	top, _, err := s.readCurrent(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetPageToken() != "" {
		last, err := paging.After(req.GetPageToken(), prefVersions)
		if err != nil {
			return nil, err
		}
		n, perr := strconv.ParseUint(strings.TrimPrefix(last, prefVersions), 10, 64)
		if perr != nil || n == 0 {
			return nil, apierr.InvalidArg("page_token", "not a token of this list")
		}
		top = min(top, n-1)
	}
	resp := &policyv1.ListPolicyHistoryResponse{}
	if top == 0 {
		return resp, nil
	}
	lo := uint64(1)
	if top > uint64(size) {
		lo = top - uint64(size) + 1
	}
	after := ""
	if lo > 1 {
		after = keyVersion(lo - 1)
	}
	kvs, _, _, err := s.cfg.Store.List(ctx, prefVersions, after, int(top-lo+1))
	if err != nil {
		return nil, fmt.Errorf("list policy versions: %w", err)
	}
	for i := len(kvs) - 1; i >= 0; i-- {
		pv, err := decodeVersion(kvs[i])
		if err != nil {
			return nil, err
		}
		resp.Versions = append(resp.Versions, pv)
	}
	if lo > 1 && len(resp.Versions) > 0 {
		resp.NextPageToken = paging.Token(keyVersion(lo))
	}
	return resp, nil
}

// RenderPolicy implements PolicyService.
func (s *Service) RenderPolicy(ctx context.Context, req *policyv1.RenderPolicyRequest) (*policyv1.RenderPolicyResponse, error) {
	caller := authn.FromContext(ctx)
	node := req.GetNodeId()
	if caller.IsNode() && (node == "" || node != caller.Name) {
		// Role previews and other nodes' policies are for operators.
		return nil, fmt.Errorf("%w: a node may only render its own policy", apierr.ErrPermission)
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	role, zone := req.GetRole(), ""
	if node != "" {
		if n, ok := s.cfg.Certs.Node(node); ok {
			role, zone = n.Role, n.Zone
		} else if caller.IsNode() {
			role = string(caller.Role)
		} else if role == "" {
			return nil, apierr.NotFound(fmt.Sprintf("node %q (not registered; name a role to preview it)", node))
		}
	}
	if role != roleWebapp && role != roleCoreapp {
		return nil, apierr.InvalidArg("role", "%q is not %q or %q", role, roleWebapp, roleCoreapp)
	}
	n := req.GetNumber()
	if n == 0 {
		cur, _, err := s.readCurrent(ctx)
		if err != nil {
			return nil, err
		}
		n = cur
	}
	r, err := s.rendering(ctx, n, role, zone, node)
	if err != nil {
		return nil, err
	}
	return &policyv1.RenderPolicyResponse{Rendered: forNode(r, node)}, nil
}

// ImportDBConnectionOption implements PolicyService.
func (s *Service) ImportDBConnectionOption(_ context.Context, req *policyv1.ImportDBConnectionOptionRequest) (*policyv1.ImportDBConnectionOptionResponse, error) {
	set, notes, err := dbssl.ImportConnectionOption(req.GetValue())
	if err != nil {
		return nil, apierr.InvalidArg("value", "%v", err)
	}
	var warns []Issue
	for _, n := range notes {
		warns = append(warns, Issue{Field: "value", Message: n})
	}
	errs, ws := dbssl.Validate(set)
	for _, i := range append(errs, ws...) {
		i.Field = "db_ssl." + i.Field
		warns = append(warns, i)
	}
	return &policyv1.ImportDBConnectionOptionResponse{DbSsl: dbSSLPB(set), Warnings: issuesPB(sortIssues(warns))}, nil
}
