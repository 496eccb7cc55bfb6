package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
)

func (a *App) policyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "The versioned security policy: TLS profile, Web Admin headers, DB SSL, network segregation"}
	cmd.AddCommand(a.policyGetCmd(), a.policySetCmd(), a.policyEditCmd(), a.policyValidateCmd(), a.policyDiffCmd(),
		a.policyHistoryCmd(), a.policyRollbackCmd(), a.policyRenderCmd(), a.policyImportDBCmd(), a.policyStatusCmd())
	return cmd
}

// DocumentYAML renders a policy document as YAML with proto field names (the form `policy set` reads).
func DocumentYAML(doc *policyv1.PolicyDocument) ([]byte, error) {
	if doc == nil {
		doc = &policyv1.PolicyDocument{}
	}
	j, err := marshalJSON(doc)
	if err != nil {
		return nil, err
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("encode yaml: %w", err)
	}
	return y, nil
}

// ParseDocument reads a policy document written as YAML or JSON. It also accepts the output of
// `wardenctl policy get -o json|yaml` (a GetPolicyResponse) or a PolicyVersion, and takes the document
// out of it, so that get → edit → set works whatever the format.
func ParseDocument(data []byte) (*policyv1.PolicyDocument, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("policy document: %w", err)
	}
	if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
		return nil, errors.New("policy document is empty")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		return nil, fmt.Errorf("policy document must be a mapping: %w", err)
	}
	strict := protojson.UnmarshalOptions{}
	switch {
	case top["policy"] != nil && len(top) == 1:
		var resp policyv1.GetPolicyResponse
		if err := strict.Unmarshal(j, &resp); err != nil {
			return nil, fmt.Errorf("policy document: %w", err)
		}
		if resp.GetPolicy().GetDocument() == nil {
			return nil, errors.New("policy document: policy.document is missing")
		}
		return resp.GetPolicy().GetDocument(), nil
	case top["document"] != nil:
		var v policyv1.PolicyVersion
		if err := strict.Unmarshal(j, &v); err != nil {
			return nil, fmt.Errorf("policy document: %w", err)
		}
		if v.GetDocument() == nil {
			return nil, errors.New("policy document: document is missing")
		}
		return v.GetDocument(), nil
	}
	var doc policyv1.PolicyDocument
	if err := strict.Unmarshal(j, &doc); err != nil {
		return nil, fmt.Errorf("policy document: %w", err)
	}
	return &doc, nil
}

// changeFlags are the options of every write of the policy.
type changeFlags struct {
	allowDowngrade bool
	reason         string
	message        string
}

func (f *changeFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.allowDowngrade, "allow-downgrade", false, "accept a change that weakens security (needs --reason)")
	cmd.Flags().StringVar(&f.reason, "reason", "", "why the downgrade is acceptable (recorded in the audit log)")
	cmd.Flags().StringVarP(&f.message, "message", "m", "", "what the change is for (kept in the history)")
}

func (f *changeFlags) check() error {
	if f.allowDowngrade && strings.TrimSpace(f.reason) == "" {
		return errors.New("--allow-downgrade needs --reason")
	}
	return nil
}

func (a *App) currentPolicy(ctx context.Context, c policyv1.PolicyServiceClient) (*policyv1.PolicyVersion, error) {
	resp, err := call(ctx, a, "get policy", c.GetPolicy, &policyv1.GetPolicyRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetPolicy(), nil
}

func (a *App) policyGetCmd() *cobra.Command {
	var number uint64
	cmd := &cobra.Command{
		Use:   "get [--version N]",
		Short: "Print the policy document (YAML; -o json|yaml prints the whole version with its metadata)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAndEmit(cmd.Context(), a, a.policyClient, "get policy", policyv1.PolicyServiceClient.GetPolicy,
				&policyv1.GetPolicyRequest{Number: number},
				func(w io.Writer, resp *policyv1.GetPolicyResponse) error {
					return renderPolicyDocument(w, resp.GetPolicy(), a.Now())
				})
		},
	}
	cmd.Flags().Uint64Var(&number, "version", 0, "version number (default: the current one)")
	return cmd
}

// renderPolicyDocument writes the document as YAML under a comment header with its metadata; the
// result can be fed back to `policy set`.
func renderPolicyDocument(w io.Writer, p *policyv1.PolicyVersion, now time.Time) error {
	y, err := DocumentYAML(p.GetDocument())
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "# policy version %d (revision %d), %s by %s\n", p.GetNumber(), p.GetRevision(), fmtTime(p.GetCreatedAt(), now), orDash(p.GetAuthor()))
	if p.GetMessage() != "" {
		fmt.Fprintf(w, "# message: %s\n", oneLine(p.GetMessage()))
	}
	if p.GetDowngradeReason() != "" {
		fmt.Fprintf(w, "# downgrade reason: %s\n", oneLine(p.GetDowngradeReason()))
	}
	for _, iss := range p.GetWarnings() {
		fmt.Fprintf(w, "# warning: %s: %s\n", iss.GetFieldPath(), oneLine(iss.GetMessage()))
	}
	_, err = w.Write(y)
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (a *App) policySetCmd() *cobra.Command {
	var file string
	var cf changeFlags
	cmd := &cobra.Command{
		Use:   "set -f FILE",
		Short: "Store a new policy version from a YAML or JSON document",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cf.check(); err != nil {
				return err
			}
			doc, err := a.readDocument(file)
			if err != nil {
				return err
			}
			c, err := a.policyClient()
			if err != nil {
				return err
			}
			cur, err := a.currentPolicy(cmd.Context(), c)
			if err != nil {
				return err
			}
			return a.setPolicy(cmd.Context(), c, doc, cur.GetRevision(), cf)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the document, YAML or JSON (- for stdin) (required)")
	_ = cmd.MarkFlagRequired("file")
	cf.register(cmd)
	return cmd
}

func (a *App) setPolicy(ctx context.Context, c policyv1.PolicyServiceClient, doc *policyv1.PolicyDocument, rev int64, cf changeFlags) error {
	resp, err := call(ctx, a, "set policy", c.SetPolicy, &policyv1.SetPolicyRequest{
		Document: doc, ExpectedRevision: rev, Message: cf.message, AllowDowngrade: cf.allowDowngrade, DowngradeReason: cf.reason,
	})
	if err != nil {
		return err
	}
	return a.emit(resp, func(w io.Writer) error { return renderStored(w, resp.GetPolicy()) })
}

func renderStored(w io.Writer, p *policyv1.PolicyVersion) error {
	fmt.Fprintf(w, "Stored policy version %d (revision %d).\n", p.GetNumber(), p.GetRevision())
	if len(p.GetWarnings()) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	return renderIssues(w, p.GetWarnings())
}

func renderIssues(w io.Writer, issues []*policyv1.Issue) error {
	t := newTable(w, "FIELD", "DOWNGRADE", "MESSAGE")
	for _, i := range issues {
		d := "no"
		if i.GetDowngrade() {
			d = "yes"
		}
		t.row(i.GetFieldPath(), d, i.GetMessage())
	}
	return t.flush()
}

func (a *App) policyEditCmd() *cobra.Command {
	var cf changeFlags
	cmd := &cobra.Command{
		Use:   "edit",
		Short: "Edit the current policy in $EDITOR and store it as a new version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cf.check(); err != nil {
				return err
			}
			c, err := a.policyClient()
			if err != nil {
				return err
			}
			cur, err := a.currentPolicy(cmd.Context(), c)
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			buf.WriteString("# Edit the policy document and save; lines starting with # are ignored.\n# Leaving it unchanged or empty cancels the edit.\n")
			if err := renderPolicyDocument(&buf, cur, a.Now()); err != nil {
				return err
			}
			f, err := os.CreateTemp("", "wardenctl-policy-*.yaml")
			if err != nil {
				return fmt.Errorf("temp file: %w", err)
			}
			path := f.Name()
			_, werr := f.Write(buf.Bytes())
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				_ = os.Remove(path)
				return fmt.Errorf("temp file: %w", werr)
			}
			edited, err := a.runEditor(cmd.Context(), path)
			if err != nil {
				_ = os.Remove(path)
				return err
			}
			if bytes.Equal(edited, buf.Bytes()) || len(bytes.TrimSpace(stripComments(edited))) == 0 {
				_ = os.Remove(path)
				a.progress("edit cancelled, no changes made")
				return nil
			}
			doc, err := ParseDocument(edited)
			if err == nil {
				err = a.setPolicy(cmd.Context(), c, doc, cur.GetRevision(), cf)
			}
			if err != nil {
				a.progress("your edits are kept in %s (fix and run 'wardenctl policy set -f %s')", path, path)
				return err
			}
			_ = os.Remove(path)
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

// runEditor opens path in $VISUAL or $EDITOR (default vi) through the shell, so that editors with
// arguments ("code --wait") work, and returns the saved contents.
func (a *App) runEditor(ctx context.Context, path string) ([]byte, error) {
	editor := "vi"
	for _, name := range []string{"VISUAL", "EDITOR"} {
		if v, ok := a.LookupEnv(name); ok && strings.TrimSpace(v) != "" {
			editor = v
			break
		}
	}
	ed := exec.CommandContext(ctx, "sh", "-c", editor+` "$1"`, "sh", path)
	ed.Stdin, ed.Stdout, ed.Stderr = os.Stdin, os.Stdout, os.Stderr
	if f, ok := a.In.(*os.File); ok {
		ed.Stdin = f
	}
	if err := ed.Run(); err != nil {
		return nil, fmt.Errorf("editor %q: %w", editor, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read edited file: %w", err)
	}
	return b, nil
}

func stripComments(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			continue
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

func (a *App) policyValidateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check a document without storing it (exit 1 when SetPolicy would refuse it)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := a.readDocument(file)
			if err != nil {
				return err
			}
			c, err := a.policyClient()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, "validate policy", c.ValidatePolicy, &policyv1.ValidatePolicyRequest{Document: doc})
			if err != nil {
				return err
			}
			if err := a.emit(resp, func(w io.Writer) error { return renderValidation(w, resp) }); err != nil {
				return err
			}
			if len(resp.GetErrors()) > 0 {
				fmt.Fprintf(a.Err, "wardenctl: the policy has %d error(s)\n", len(resp.GetErrors()))
				return errExit
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the document, YAML or JSON (- for stdin) (required)")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func renderValidation(w io.Writer, resp *policyv1.ValidatePolicyResponse) error {
	if len(resp.GetErrors()) == 0 && len(resp.GetWarnings()) == 0 {
		fmt.Fprintln(w, "The policy is valid.")
		return nil
	}
	if len(resp.GetErrors()) > 0 {
		fmt.Fprintf(w, "Errors (%d):\n", len(resp.GetErrors()))
		if err := renderIssues(w, resp.GetErrors()); err != nil {
			return err
		}
	}
	if len(resp.GetWarnings()) > 0 {
		if len(resp.GetErrors()) > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "Warnings (%d):\n", len(resp.GetWarnings()))
		return renderIssues(w, resp.GetWarnings())
	}
	return nil
}

func (a *App) policyDiffCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "diff [FROM [TO]]",
		Short: "List the fields that differ between two versions (default: the current one and the one before)",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &policyv1.DiffPolicyRequest{}
			nums := []*uint64{&req.FromNumber, &req.ToNumber}
			for i, s := range args {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					return fmt.Errorf("version %q: want a number", s)
				}
				*nums[i] = n
			}
			return callAndEmit(cmd.Context(), a, a.policyClient, "diff policy", policyv1.PolicyServiceClient.DiffPolicy, req,
				func(w io.Writer, resp *policyv1.DiffPolicyResponse) error { return renderDiff(w, resp) })
		},
	}
}

func renderDiff(w io.Writer, resp *policyv1.DiffPolicyResponse) error {
	fmt.Fprintf(w, "Version %d → %d: %d change(s)\n", resp.GetFromNumber(), resp.GetToNumber(), len(resp.GetChanges()))
	if len(resp.GetChanges()) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := newTable(w, "FIELD", "OLD", "NEW")
	for _, ch := range resp.GetChanges() {
		t.row(ch.GetFieldPath(), ch.GetOldValue(), ch.GetNewValue())
	}
	return t.flush()
}

func (a *App) policyHistoryCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List policy versions, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.policyClient()
			if err != nil {
				return err
			}
			var versions []*policyv1.PolicyVersion
			token := ""
			for {
				resp, err := call(cmd.Context(), a, "list policy history", c.ListPolicyHistory, &policyv1.ListPolicyHistoryRequest{PageSize: int32(min(limit, 1000)), PageToken: token})
				if err != nil {
					return err
				}
				versions = append(versions, resp.GetVersions()...)
				token = resp.GetNextPageToken()
				if token == "" || len(versions) >= limit {
					break
				}
			}
			if len(versions) > limit {
				versions = versions[:limit]
			}
			out := &policyv1.ListPolicyHistoryResponse{Versions: versions}
			return a.emit(out, func(w io.Writer) error { return renderHistory(w, versions, a.Now()) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "at most this many versions")
	return cmd
}

func renderHistory(w io.Writer, versions []*policyv1.PolicyVersion, now time.Time) error {
	t := newTable(w, "VERSION", "CREATED", "AUTHOR", "DOWNGRADE", "ROLLBACK OF", "MESSAGE")
	for _, v := range versions {
		down := "-"
		if v.GetDowngradeReason() != "" {
			down = "yes: " + oneLine(v.GetDowngradeReason())
		}
		t.row(fmt.Sprint(v.GetNumber()), fmtTime(v.GetCreatedAt(), now), v.GetAuthor(), down, numOrDash(v.GetRollbackOf()), oneLine(v.GetMessage()))
	}
	return t.flush()
}

func (a *App) policyRollbackCmd() *cobra.Command {
	var cf changeFlags
	cmd := &cobra.Command{
		Use:   "rollback VERSION",
		Short: "Store an older version's document as a new version",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.check(); err != nil {
				return err
			}
			n, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || n == 0 {
				return fmt.Errorf("version %q: want a positive number", args[0])
			}
			c, err := a.policyClient()
			if err != nil {
				return err
			}
			cur, err := a.currentPolicy(cmd.Context(), c)
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, "roll back policy", c.RollbackPolicy, &policyv1.RollbackPolicyRequest{
				ToNumber: n, ExpectedRevision: cur.GetRevision(), Message: cf.message, AllowDowngrade: cf.allowDowngrade, DowngradeReason: cf.reason,
			})
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) error { return renderStored(w, resp.GetPolicy()) })
		},
	}
	cf.register(cmd)
	return cmd
}

func (a *App) policyRenderCmd() *cobra.Command {
	var node, role string
	var number uint64
	var nft bool
	cmd := &cobra.Command{
		Use:   "render --node ID | --role webapp|coreapp",
		Short: "Preview the effective policy of a node (or of a role) as the app consumes it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (node == "") == (role == "") {
				return errors.New("pass --node ID or --role webapp|coreapp")
			}
			c, err := a.policyClient()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, "render policy", c.RenderPolicy, &policyv1.RenderPolicyRequest{NodeId: node, Role: role, Number: number})
			if err != nil {
				return err
			}
			if nft && a.output == OutputTable {
				_, err := io.WriteString(a.Out, resp.GetRendered().GetNftables())
				return err
			}
			return a.emit(resp, func(w io.Writer) error { return renderRendered(w, resp.GetRendered()) })
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "a registered node")
	cmd.Flags().StringVar(&role, "role", "", "a role, for a node not yet registered")
	cmd.Flags().Uint64Var(&number, "version", 0, "policy version (default: the current one)")
	cmd.Flags().BoolVar(&nft, "nftables", false, "print only the node's nftables ruleset")
	return cmd
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func renderRendered(w io.Writer, r *policyv1.RenderedPolicy) error {
	k := newKV(w)
	k.add("Policy version", fmt.Sprint(r.GetPolicyNumber()))
	k.add("Node", r.GetNodeId())
	k.add("Role", r.GetRole())
	if r.GetApiPathPrefix() != "" {
		k.add("API path prefix", r.GetApiPathPrefix())
	}
	if tls := r.GetTls(); tls != nil {
		k.add("TLS profile", fmt.Sprintf("%s (Mozilla guideline %s)", enumName(tls.GetProfile().String(), "TLS_PROFILE_"), tls.GetGuideline()))
		k.add("TLS versions", tls.GetMinVersion()+" – "+tls.GetMaxVersion())
		k.add("Cipher suites", joinOr(tls.GetCipherSuites(), "(TLS 1.3 suites only)"))
		k.add("Groups", joinOr(tls.GetGroups(), "-"))
		k.add("Certificate types", joinOr(tls.GetCertificateTypes(), "-"))
		k.add("HSTS max-age", fmtDuration(time.Duration(tls.GetHstsMaxAge())*time.Second))
		if len(tls.GetUnsupported()) > 0 {
			k.add("Unsupported", strings.Join(tls.GetUnsupported(), "; "))
		}
	}
	if err := k.flush(); err != nil {
		return err
	}
	if len(r.GetEnv()) > 0 {
		fmt.Fprintln(w, "\nEnvironment:")
		for _, key := range sortedKeys(r.GetEnv()) {
			fmt.Fprintf(w, "  %s=%s\n", key, r.GetEnv()[key])
		}
	}
	if len(r.GetAdminHeaders()) > 0 {
		fmt.Fprintln(w, "\nWeb Admin headers:")
		t := newTable(w)
		for _, key := range sortedKeys(r.GetAdminHeaders()) {
			t.row("  "+key+":", r.GetAdminHeaders()[key])
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(r.GetAllowlists()) > 0 {
		fmt.Fprintln(w)
		t := newTable(w, "ENDPOINT", "ALLOWED FROM")
		for _, al := range r.GetAllowlists() {
			t.row(enumName(al.GetEndpoint().String(), "ENDPOINT_"), joinOr(al.GetCidrs(), "-"))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(r.GetWarnings()) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		return renderIssues(w, r.GetWarnings())
	}
	return nil
}

func (a *App) policyImportDBCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "import-db-option VALUE",
		Short: "Convert a WA_DB_CONNECTION_OPTION value into DB SSL settings (prints YAML for the policy)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAndEmit(cmd.Context(), a, a.policyClient, "import DB connection option", policyv1.PolicyServiceClient.ImportDBConnectionOption,
				&policyv1.ImportDBConnectionOptionRequest{Value: args[0]},
				func(w io.Writer, resp *policyv1.ImportDBConnectionOptionResponse) error {
					j, err := marshalJSON(&policyv1.PolicySettings{DbSsl: resp.GetDbSsl()})
					if err != nil {
						return err
					}
					fmt.Fprintln(w, "# DB SSL settings, to merge into the policy's defaults (or a role or node):")
					if err := writeJSONAs(w, OutputYAML, j); err != nil {
						return err
					}
					if len(resp.GetWarnings()) > 0 {
						fmt.Fprintln(w)
						return renderIssues(w, resp.GetWarnings())
					}
					return nil
				})
		},
	}
}

func (a *App) policyStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show which policy version each node runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := a.listPolicyStatus(cmd.Context())
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) error { return renderPolicyStatus(w, resp, a.Now()) })
		},
	}
}

func (a *App) listPolicyStatus(ctx context.Context) (*policyv1.ListPolicyStatusResponse, error) {
	c, err := a.policyClient()
	if err != nil {
		return nil, err
	}
	var current uint64
	nodes, err := pages(ctx, a, "list policy status", func(ctx context.Context, token string) ([]*policyv1.NodePolicyStatus, string, error) {
		resp, err := c.ListPolicyStatus(ctx, &policyv1.ListPolicyStatusRequest{PageSize: 100, PageToken: token})
		if resp.GetCurrentNumber() > current {
			current = resp.GetCurrentNumber()
		}
		return resp.GetNodes(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return nil, err
	}
	return &policyv1.ListPolicyStatusResponse{CurrentNumber: current, Nodes: nodes}, nil
}

func renderPolicyStatus(w io.Writer, resp *policyv1.ListPolicyStatusResponse, now time.Time) error {
	fmt.Fprintf(w, "Current policy version: %d\n\n", resp.GetCurrentNumber())
	t := newTable(w, "NODE", "VERSION", "ACKED", "UP TO DATE", "ERROR")
	for _, n := range resp.GetNodes() {
		ok := "yes"
		if n.GetPolicyNumber() != resp.GetCurrentNumber() {
			ok = "no"
		}
		t.row(n.GetNodeId(), numOrDash(n.GetPolicyNumber()), fmtTimeShort(n.GetAckedAt(), now), ok, oneLine(n.GetError()))
	}
	return t.flush()
}

// readDocument reads and parses the policy document named by -f (a path, or - for stdin).
func (a *App) readDocument(file string) (*policyv1.PolicyDocument, error) {
	raw, err := a.readFileArg("file", file)
	if err != nil {
		return nil, err
	}
	return ParseDocument(raw)
}
