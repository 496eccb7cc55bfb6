package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
)

// ExpiryWindow is how far ahead `status` looks for expiring certificates.
const ExpiryWindow = 7 * 24 * time.Hour

// StatusReport is everything `wardenctl status` shows. A section whose RPC failed (service not hosted
// by this replica, not implemented yet, not allowed to the caller) keeps its error and shows "n/a".
type StatusReport struct {
	Server    string
	LocalTime time.Time // this machine's clock when the server's was read, for the skew line

	Status    *adminv1.GetStatusResponse
	StatusErr error
	Nodes     []*certv1.Node
	NodesErr  error
	CA        *certv1.GetCAStatusResponse
	CAErr     error
	Expiring  []*certv1.Certificate
	ExpireErr error
	Policy    *policyv1.ListPolicyStatusResponse
	PolicyErr error
	Skew      *secretv1.ListClockSkewResponse
	SkewErr   error
	Secrets   []*secretv1.Secret
	SecretErr error
	Mesh      *meshv1.GetMeshStatusResponse
	MeshErr   error
}

func (a *App) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "One screen: services, etcd, nodes, policy, clock skew, CA, expiring certificates, mesh, warnings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.gatherStatus(cmd.Context())
			if err != nil {
				return err
			}
			if a.output != OutputTable {
				b, err := r.JSON()
				if err != nil {
					return err
				}
				return writeJSONAs(a.Out, a.output, b)
			}
			return renderStatus(a.Out, r, a.Now())
		},
	}
}

func (a *App) gatherStatus(ctx context.Context) (*StatusReport, error) {
	conn, err := a.dial()
	if err != nil {
		return nil, err
	}
	admin, cert, mesh := adminv1.NewAdminServiceClient(conn), certv1.NewCertServiceClient(conn), meshv1.NewMeshServiceClient(conn)
	secret := secretv1.NewSecretServiceClient(conn)
	r := &StatusReport{Server: a.creds.Server}
	r.Status, r.StatusErr = call(ctx, a, "get status", admin.GetStatus, &adminv1.GetStatusRequest{})
	r.LocalTime = a.Now()
	if r.StatusErr != nil {
		switch codeOf(r.StatusErr) {
		case codes.Unavailable, codes.Unauthenticated, codes.DeadlineExceeded, codes.Canceled:
			// Nothing else would answer either.
			return nil, r.StatusErr
		}
	}
	var wg sync.WaitGroup
	run := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	run(func() { r.Nodes, r.NodesErr = a.listNodes(ctx, certv1.NodeRole_NODE_ROLE_UNSPECIFIED) })
	run(func() { r.CA, r.CAErr = call(ctx, a, "get CA status", cert.GetCAStatus, &certv1.GetCAStatusRequest{}) })
	run(func() {
		r.Expiring, r.ExpireErr = a.listCertificates(ctx, &certv1.ListCertificatesRequest{ExpiringWithin: durationpb.New(ExpiryWindow)})
	})
	run(func() { r.Policy, r.PolicyErr = a.listPolicyStatus(ctx) })
	run(func() { r.Skew, r.SkewErr = a.listClockSkew(ctx) })
	run(func() {
		r.Secrets, r.SecretErr = pages(ctx, a, "list secrets", func(ctx context.Context, token string) ([]*secretv1.Secret, string, error) {
			resp, err := secret.ListSecrets(ctx, &secretv1.ListSecretsRequest{PageSize: 100, PageToken: token})
			return resp.GetSecrets(), resp.GetNextPageToken(), err
		})
	})
	run(func() {
		r.Mesh, r.MeshErr = call(ctx, a, "get mesh status", mesh.GetMeshStatus, &meshv1.GetMeshStatusRequest{})
	})
	wg.Wait()
	return r, nil
}

// JSON is the report as one object: each section is the protojson of its response, and "errors" maps
// the sections that failed to their error.
func (r *StatusReport) JSON() ([]byte, error) {
	out := map[string]any{"server": r.Server}
	errs := map[string]string{}
	add := func(key string, m proto.Message, err error) error {
		if err != nil {
			errs[key] = err.Error()
			return nil
		}
		b, merr := marshalJSON(m)
		if merr != nil {
			return merr
		}
		out[key] = json.RawMessage(b)
		return nil
	}
	sections := []struct {
		key string
		m   proto.Message
		err error
	}{
		{"status", r.Status, r.StatusErr},
		{"nodes", &certv1.ListNodesResponse{Nodes: r.Nodes}, r.NodesErr},
		{"ca_status", r.CA, r.CAErr},
		{"expiring_certificates", &certv1.ListCertificatesResponse{Certificates: r.Expiring}, r.ExpireErr},
		{"policy_status", r.Policy, r.PolicyErr},
		{"clock_skew", r.Skew, r.SkewErr},
		{"secrets", &secretv1.ListSecretsResponse{Secrets: r.Secrets}, r.SecretErr},
		{"mesh", r.Mesh, r.MeshErr},
	}
	for _, s := range sections {
		if err := add(s.key, s.m, s.err); err != nil {
			return nil, err
		}
	}
	if len(errs) > 0 {
		out["errors"] = errs
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode status: %w", err)
	}
	return indentJSON(b)
}

// na explains why a section is missing, briefly.
func na(err error) string {
	switch codeOf(err) {
	case codes.Unimplemented:
		return "n/a (not hosted by this replica or not implemented)"
	case codes.PermissionDenied:
		return "n/a (permission denied)"
	case codes.Unavailable:
		return "n/a (unavailable)"
	case codes.DeadlineExceeded:
		return "n/a (timed out)"
	}
	return "n/a (" + oneLine(errContext{}.FormatError(err)) + ")"
}

func shortService(full string) string {
	if i := strings.LastIndex(full, "."); i >= 0 {
		return full[i+1:]
	}
	return full
}

// renderStatus is the one-screen summary.
func renderStatus(w io.Writer, r *StatusReport, now time.Time) error {
	k := newKV(w)
	var warnings []string
	if st := r.Status; st != nil {
		k.add("Server", fmt.Sprintf("%s (replica %s, periodic jobs on %s)", r.Server, orDash(st.GetReplicaId()), orDash(st.GetLeaderReplicaId())))
		k.add("Trust domain", st.GetTrustDomain())
		etcd := "UNHEALTHY"
		if st.GetEtcdHealthy() {
			etcd = "healthy"
		}
		k.add("etcd", fmt.Sprintf("%s (%s)", etcd, joinOr(st.GetEtcdEndpoints(), "-")))
		var svcs []string
		for _, s := range st.GetServices() {
			svcs = append(svcs, shortService(s.GetName())+" "+s.GetHealth())
		}
		k.add("Services", strings.Join(svcs, ", "))
		if st.GetServerTime() != nil && !r.LocalTime.IsZero() {
			d := st.GetServerTime().AsTime().Sub(r.LocalTime)
			k.add("Server clock", fmt.Sprintf("%s (%s relative to this machine)", st.GetServerTime().AsTime().UTC().Format(time.RFC3339), fmtSkew(durationpb.New(d.Round(time.Millisecond)))))
		}
		warnings = append(warnings, st.GetWarnings()...)
	} else {
		k.add("Server", r.Server+" — "+na(r.StatusErr))
	}

	k.add("Nodes", nodesSummary(r))
	k.add("Policy", policySummary(r))
	k.add("Clock skew", skewSummary(r))
	k.add("CA", caSummary(r, now))
	k.add("Secrets", secretsSummary(r))
	k.add("Mesh", meshSummary(r))
	if r.ExpireErr != nil {
		k.add("Expiring (7d)", na(r.ExpireErr))
	} else {
		k.add("Expiring (7d)", fmt.Sprintf("%d certificate(s)", len(r.Expiring)))
	}
	if r.Mesh != nil {
		warnings = append(warnings, r.Mesh.GetWarnings()...)
	}
	if err := k.flush(); err != nil {
		return err
	}
	if len(r.Expiring) > 0 {
		fmt.Fprintln(w)
		if err := renderCertificates(w, r.Expiring, now); err != nil {
			return err
		}
	}
	if len(warnings) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, warn := range warnings {
			fmt.Fprintf(w, "  - %s\n", warn)
		}
	}
	return nil
}

func nodesSummary(r *StatusReport) string {
	if r.NodesErr != nil {
		return na(r.NodesErr)
	}
	byRole := map[string]int{}
	var pending []string
	for _, n := range r.Nodes {
		byRole[enumName(n.GetRole().String(), "NODE_ROLE_")]++
		if n.GetBootstrappedAt() == nil {
			pending = append(pending, n.GetNodeId())
		}
	}
	s := fmt.Sprintf("%d registered (%d webapp, %d coreapp)", len(r.Nodes), byRole["webapp"], byRole["coreapp"])
	if len(pending) > 0 {
		s += fmt.Sprintf("; %d not bootstrapped: %s", len(pending), strings.Join(pending, ", "))
	}
	return s
}

func policySummary(r *StatusReport) string {
	if r.PolicyErr != nil {
		return na(r.PolicyErr)
	}
	var behind []string
	for _, n := range r.Policy.GetNodes() {
		if n.GetPolicyNumber() != r.Policy.GetCurrentNumber() || n.GetError() != "" {
			d := fmt.Sprintf("%s (v%d)", n.GetNodeId(), n.GetPolicyNumber())
			switch {
			case n.GetError() != "":
				d = fmt.Sprintf("%s (error: %s)", n.GetNodeId(), oneLine(n.GetError()))
			case n.GetPolicyNumber() == 0:
				d = n.GetNodeId() + " (none acknowledged)"
			}
			behind = append(behind, d)
		}
	}
	s := fmt.Sprintf("version %d", r.Policy.GetCurrentNumber())
	if len(behind) == 0 {
		return s + "; every node up to date"
	}
	return fmt.Sprintf("%s; %d node(s) lagging: %s", s, len(behind), strings.Join(behind, ", "))
}

func skewSummary(r *StatusReport) string {
	if r.SkewErr != nil {
		return na(r.SkewErr)
	}
	var risky []string
	var worst time.Duration
	for _, n := range r.Skew.GetNodes() {
		d := n.GetSkew().AsDuration()
		if d < 0 {
			d = -d
		}
		worst = max(worst, d)
		if n.GetExceeds() {
			risky = append(risky, fmt.Sprintf("%s (%s)", n.GetNodeId(), fmtSkew(n.GetSkew())))
		}
	}
	if len(r.Skew.GetNodes()) == 0 {
		return "no measurement yet"
	}
	if len(risky) == 0 {
		return fmt.Sprintf("%d node(s) measured, worst ±%s", len(r.Skew.GetNodes()), fmtDuration(worst))
	}
	return fmt.Sprintf("%d node(s) beyond half the replay window: %s", len(risky), strings.Join(risky, ", "))
}

func caSummary(r *StatusReport, now time.Time) string {
	if r.CAErr != nil {
		return na(r.CAErr)
	}
	s := enumName(r.CA.GetPhase().String(), "CA_PHASE_")
	for _, ca := range r.CA.GetCas() {
		if ca.GetState() == certv1.CAState_CA_STATE_ACTIVE {
			s += fmt.Sprintf("; issuer %s %q expires %s", shortID(ca.GetId()), ca.GetSubject(), fmtTime(ca.GetNotAfter(), now))
		}
	}
	if lag := r.CA.GetLagging(); len(lag) > 0 {
		s += fmt.Sprintf("; %d lagging: %s", len(lag), lagList(lag))
	}
	return s
}

func secretsSummary(r *StatusReport) string {
	if r.SecretErr != nil {
		return na(r.SecretErr)
	}
	var rotating []string
	for _, sec := range r.Secrets {
		if n := versionIn(sec, secretv1.VersionState_VERSION_STATE_STAGED); n != 0 {
			rotating = append(rotating, fmt.Sprintf("%s v%d staged", sec.GetName(), n))
		}
	}
	slices.Sort(rotating)
	s := fmt.Sprintf("%d secret(s)", len(r.Secrets))
	if len(rotating) > 0 {
		s += "; rotating: " + strings.Join(rotating, ", ")
	}
	return s
}

func meshSummary(r *StatusReport) string {
	if r.MeshErr != nil {
		return na(r.MeshErr)
	}
	s := fmt.Sprintf("%d member(s), master %s", len(r.Mesh.GetMembers()), orDash(r.Mesh.GetMasterNodeId()))
	if n := len(r.Mesh.GetPartitions()); n > 1 {
		s += fmt.Sprintf(", PARTITIONED into %d groups", n)
	}
	return s
}
