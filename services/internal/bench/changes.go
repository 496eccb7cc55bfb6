package bench

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/pki"
)

// benchHeader is the Web Admin header whose value the policy changes carry. An extra header that
// changes value is neither a downgrade nor a change the Webapp would mind, and it is rendered for every
// Webapp, so each change reaches every simulated agent as a new rendered policy.
const benchHeader = "X-Warden-Bench"

// commitPolicy stores a new policy version that differs from the current one in the bench header's
// value and returns its number and when SetPolicy returned (the commit is then durable in etcd).
func (f *fleet) commitPolicy(ctx context.Context, tag string) (number uint64, callStart, committed time.Time, err error) {
	return f.changePolicy(ctx, "warden-bench "+tag, false, func(doc *policyv1.PolicyDocument) {
		if doc.Defaults.Headers == nil {
			doc.Defaults.Headers = &policyv1.WebAdminHeaders{}
		}
		if doc.Defaults.Headers.Extra == nil {
			doc.Defaults.Headers.Extra = map[string]string{}
		}
		doc.Defaults.Headers.Extra[benchHeader] = tag
	})
}

// changePolicy applies edit to the current policy document and stores the result.
func (f *fleet) changePolicy(ctx context.Context, msg string, downgrade bool, edit func(*policyv1.PolicyDocument)) (number uint64, callStart, committed time.Time, err error) {
	var cur *policyv1.GetPolicyResponse
	err = f.adminCall(ctx, func(ctx context.Context) (err error) {
		cur, err = f.policies().GetPolicy(ctx, &policyv1.GetPolicyRequest{})
		return err
	})
	doc := &policyv1.PolicyDocument{}
	var rev int64
	switch status.Code(err) {
	case codes.OK:
		doc = proto.Clone(cur.GetPolicy().GetDocument()).(*policyv1.PolicyDocument)
		rev = cur.GetPolicy().GetRevision()
		if doc == nil {
			doc = &policyv1.PolicyDocument{}
		}
	case codes.NotFound:
	default:
		return 0, time.Time{}, time.Time{}, fmt.Errorf("GetPolicy: %w", err)
	}
	if doc.Defaults == nil {
		doc.Defaults = &policyv1.PolicySettings{}
	}
	edit(doc)
	req := &policyv1.SetPolicyRequest{Document: doc, ExpectedRevision: rev, Message: msg}
	if downgrade {
		req.AllowDowngrade, req.DowngradeReason = true, "warden-bench: timing a TLS profile change on a test deployment"
	}
	var resp *policyv1.SetPolicyResponse
	err = f.adminCall(ctx, func(ctx context.Context) (err error) {
		callStart = time.Now()
		resp, err = f.policies().SetPolicy(ctx, req)
		committed = time.Now()
		return err
	})
	if err != nil {
		return 0, time.Time{}, time.Time{}, fmt.Errorf("SetPolicy: %w", err)
	}
	return resp.GetPolicy().GetNumber(), callStart, committed, nil
}

// settleSecret makes sure no rotation is in progress, so RotateSecret will be accepted: a staged
// version left by an earlier step (some in-scope node never acknowledged it) is promoted.
func (f *fleet) settleSecret(ctx context.Context) error {
	var st *secretv1.GetRotationStatusResponse
	err := f.adminCall(ctx, func(ctx context.Context) (err error) {
		st, err = f.secrets().GetRotationStatus(ctx, &secretv1.GetRotationStatusRequest{Name: secretName})
		return err
	})
	if err != nil {
		return fmt.Errorf("GetRotationStatus: %w", err)
	}
	if st.GetStagedNumber() == 0 {
		return nil
	}
	return f.adminCall(ctx, func(ctx context.Context) error {
		_, err := f.secrets().PromoteSecretVersion(ctx, &secretv1.PromoteSecretVersionRequest{Name: secretName, Number: st.GetStagedNumber(), Reason: "warden-bench: settle before the next rotation step"})
		if status.Code(err) == codes.FailedPrecondition {
			return nil // promoted by the acknowledgements in the meantime
		}
		return err
	})
}

// rotateSecret starts a rotation step and returns the staged number and when RotateSecret returned.
func (f *fleet) rotateSecret(ctx context.Context) (staged uint64, callStart, committed time.Time, err error) {
	if err := f.settleSecret(ctx); err != nil {
		return 0, time.Time{}, time.Time{}, err
	}
	var resp *secretv1.RotateSecretResponse
	err = f.adminCall(ctx, func(ctx context.Context) (err error) {
		callStart = time.Now()
		resp, err = f.secrets().RotateSecret(ctx, &secretv1.RotateSecretRequest{Name: secretName})
		committed = time.Now()
		return err
	})
	if err != nil {
		return 0, time.Time{}, time.Time{}, fmt.Errorf("RotateSecret: %w", err)
	}
	return resp.GetStagedNumber(), callStart, committed, nil
}

// setDatabaseCA pushes a fresh database CA bundle to every node (it is part of each credentials
// snapshot) and returns the generation agents will report.
func (f *fleet) setDatabaseCA(ctx context.Context, gen uint64) (time.Time, error) {
	ca, err := pki.NewRootCA(fmt.Sprintf("db%d.bench.local", gen), 24*time.Hour, time.Now())
	if err != nil {
		return time.Time{}, err
	}
	f.setDBCAGeneration(pki.Fingerprint(ca.Cert), gen)
	var committed time.Time
	err = f.adminCall(ctx, func(ctx context.Context) error {
		_, err := f.certs().SetDatabaseCA(ctx, &certv1.SetDatabaseCARequest{BundlePem: string(pki.EncodeCertsPEM(ca.Cert))})
		committed = time.Now()
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("SetDatabaseCA: %w", err)
	}
	return committed, nil
}
