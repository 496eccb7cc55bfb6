package ctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
)

func (a *App) certCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cert", Aliases: []string{"certs"}, Short: "List, issue and revoke certificates; the CRL; uploaded HTTPS certificates"}
	cmd.AddCommand(a.certListCmd(), a.certIssueCmd(), a.certRevokeCmd(), a.certCRLCmd(), a.certExternalCmd())
	return cmd
}

func parseKind(s string) (certv1.CertKind, error) {
	v, err := parseEnum(s, "CERT_KIND_", "certificate kind", certv1.CertKind_value)
	return certv1.CertKind(v), err
}

func (a *App) certListCmd() *cobra.Command {
	var node, kind string
	var expiring time.Duration
	var revoked, all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List issued certificates",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &certv1.ListCertificatesRequest{NodeId: node, IncludeRevoked: all, RevokedOnly: revoked}
			if kind != "" {
				k, err := parseKind(kind)
				if err != nil {
					return fmt.Errorf("--kind: %w", err)
				}
				req.Kind = k
			}
			if expiring > 0 {
				req.ExpiringWithin = durationpb.New(expiring)
			}
			certs, err := a.listCertificates(cmd.Context(), req)
			if err != nil {
				return err
			}
			resp := &certv1.ListCertificatesResponse{Certificates: certs}
			return a.emit(resp, func(w io.Writer) error { return renderCertificates(w, certs, a.Now()) })
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "only this node's certificates")
	cmd.Flags().StringVar(&kind, "kind", "", "only this kind: identity, webapp-https, coreapp-communication, coreapp-control, db-client")
	cmd.Flags().DurationVar(&expiring, "expiring", 0, "only certificates that expire within this window (e.g. 168h)")
	cmd.Flags().BoolVar(&revoked, "revoked", false, "only revoked certificates")
	cmd.Flags().BoolVar(&all, "all", false, "include revoked certificates")
	return cmd
}

func (a *App) listCertificates(ctx context.Context, req *certv1.ListCertificatesRequest) ([]*certv1.Certificate, error) {
	c, err := a.certClient()
	if err != nil {
		return nil, err
	}
	return pages(ctx, a, "list certificates", func(ctx context.Context, token string) ([]*certv1.Certificate, string, error) {
		req.PageSize, req.PageToken = 1000, token
		resp, err := c.ListCertificates(ctx, req)
		return resp.GetCertificates(), resp.GetNextPageToken(), err
	})
}

func certStatus(c *certv1.Certificate, now time.Time) string {
	switch {
	case c.GetRevokedAt() != nil:
		return "revoked (" + enumName(c.GetRevocationReason().String(), "REVOCATION_REASON_") + ")"
	case c.GetNotAfter() != nil && !c.GetNotAfter().AsTime().After(now):
		return "expired"
	default:
		return "valid"
	}
}

func renderCertificates(w io.Writer, certs []*certv1.Certificate, now time.Time) error {
	t := newTable(w, "SERIAL", "NODE", "KIND", "STATUS", "NOT AFTER", "ISSUER")
	for _, c := range certs {
		t.row(c.GetSerial(), c.GetNodeId(), enumName(c.GetKind().String(), "CERT_KIND_"), certStatus(c, now), fmtTime(c.GetNotAfter(), now), shortID(c.GetIssuerId()))
	}
	return t.flush()
}

func renderCertificate(w io.Writer, c *certv1.Certificate, now time.Time) error {
	k := newKV(w)
	k.add("Serial", c.GetSerial())
	k.add("Node", c.GetNodeId())
	k.add("Kind", enumName(c.GetKind().String(), "CERT_KIND_"))
	k.add("SPIFFE ID", c.GetSpiffeId())
	k.add("DNS names", joinOr(c.GetDnsNames(), "-"))
	k.add("IP addresses", joinOr(c.GetIpAddresses(), "-"))
	k.add("Key type", enumName(c.GetKeyType().String(), "KEY_TYPE_"))
	k.add("Not before", fmtTime(c.GetNotBefore(), now))
	k.add("Not after", fmtTime(c.GetNotAfter(), now))
	k.add("Issuer", c.GetIssuerId())
	k.add("Status", certStatus(c, now))
	return k.flush()
}

func (a *App) certIssueCmd() *cobra.Command {
	var node, kind, csr string
	cmd := &cobra.Command{
		Use:   "issue --node ID --kind KIND --csr FILE",
		Short: "Sign a CSR for one certificate kind of a node; prints the certificate PEM",
		Long:  "SANs come from the node registry, never from the CSR: only its public key is used. The PEM (leaf and chain, excluding the root) goes to stdout, a summary to stderr.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := parseKind(kind)
			if err != nil {
				return fmt.Errorf("--kind: %w", err)
			}
			csrPEM, err := a.readFileArg("csr", csr)
			if err != nil {
				return err
			}
			return callAndEmit(cmd.Context(), a, a.certClient, "issue certificate", certv1.CertServiceClient.IssueCertificate,
				&certv1.IssueCertificateRequest{NodeId: node, Kind: k, CsrPem: string(csrPEM)},
				func(w io.Writer, resp *certv1.IssueCertificateResponse) error {
					cert := resp.GetCertificate()
					a.progress("issued %s certificate %s for %s, valid until %s; renew after %s",
						enumName(cert.GetKind().String(), "CERT_KIND_"), cert.GetSerial(), cert.GetNodeId(), fmtTime(cert.GetNotAfter(), a.Now()), fmtTime(resp.GetRenewAfter(), a.Now()))
					_, err := io.WriteString(w, cert.GetCertificatePem())
					return err
				})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node (required)")
	cmd.Flags().StringVar(&kind, "kind", "", "identity, webapp-https, coreapp-communication, coreapp-control or db-client (required)")
	cmd.Flags().StringVar(&csr, "csr", "", "PKCS#10 CSR, PEM file (- for stdin) (required)")
	_ = cmd.MarkFlagRequired("node")
	_ = cmd.MarkFlagRequired("kind")
	_ = cmd.MarkFlagRequired("csr")
	return cmd
}

func (a *App) certRevokeCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke SERIAL",
		Short: "Revoke a certificate; the CRL is re-signed and pushed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &certv1.RevokeCertificateRequest{Serial: args[0]}
			if reason != "" {
				r, err := parseEnum(reason, "REVOCATION_REASON_", "revocation reason", certv1.RevocationReason_value)
				if err != nil {
					return fmt.Errorf("--reason: %w", err)
				}
				req.Reason = certv1.RevocationReason(r)
			}
			return callAndEmit(cmd.Context(), a, a.certClient, "revoke certificate", certv1.CertServiceClient.RevokeCertificate, req,
				func(w io.Writer, resp *certv1.RevokeCertificateResponse) error {
					if err := renderCertificate(w, resp.GetCertificate(), a.Now()); err != nil {
						return err
					}
					fmt.Fprintf(w, "Listed in CRL number %d.\n", resp.GetCrlNumber())
					return nil
				})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "key-compromise, ca-compromise, affiliation-changed, superseded or cessation-of-operation")
	return cmd
}

func (a *App) certCRLCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "crl",
		Short: "Print the current CRL (PEM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAndEmit(cmd.Context(), a, a.certClient, "get CRL", certv1.CertServiceClient.GetCRL, &certv1.GetCRLRequest{},
				func(w io.Writer, resp *certv1.GetCRLResponse) error {
					a.progress("CRL number %d, signed %s, next update %s", resp.GetNumber(), fmtTime(resp.GetThisUpdate(), a.Now()), fmtTime(resp.GetNextUpdate(), a.Now()))
					_, err := io.WriteString(w, resp.GetCrlPem())
					return err
				})
		},
	}
}

func (a *App) certExternalCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "external", Short: "Operator-uploaded HTTPS certificates of Webapps"}
	var node, bundle string
	var all bool
	upload := &cobra.Command{
		Use:   "upload --node ID --bundle FILE",
		Short: "Upload a Webapp's HTTPS certificate: one PEM with the key, the leaf and its intermediates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (node == "") == !all {
				return fmt.Errorf("pass --node ID, or --all-webapps for the deployment-wide certificate")
			}
			pem, err := a.readFileArg("bundle", bundle)
			if err != nil {
				return err
			}
			c, err := a.certClient()
			if err != nil {
				return err
			}
			current, err := a.findExternal(cmd.Context(), c, node)
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, "upload external certificate", c.UploadExternalCertificate,
				&certv1.UploadExternalCertificateRequest{NodeId: node, BundlePem: string(pem), ExpectedVersion: current.GetVersion()})
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) error {
				return renderExternalCerts(w, []*certv1.ExternalCertificate{resp.GetCertificate()}, a.Now())
			})
		},
	}
	upload.Flags().StringVar(&node, "node", "", "the Webapp node id")
	upload.Flags().BoolVar(&all, "all-webapps", false, "apply to every Webapp without a certificate of its own")
	upload.Flags().StringVar(&bundle, "bundle", "", "PEM file with the private key, the leaf and its intermediates (- for stdin)")
	_ = upload.MarkFlagRequired("bundle")

	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List uploaded certificates (never their keys)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.certClient()
			if err != nil {
				return err
			}
			certs, err := a.listExternal(cmd.Context(), c)
			if err != nil {
				return err
			}
			resp := &certv1.ListExternalCertificatesResponse{Certificates: certs}
			return a.emit(resp, func(w io.Writer) error { return renderExternalCerts(w, certs, a.Now()) })
		},
	}
	var rmAll bool
	remove := &cobra.Command{
		Use:     "remove [NODE_ID | --all-webapps]",
		Aliases: []string{"rm"},
		Short:   "Remove an uploaded certificate; the node falls back to an issued one",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 0) == !rmAll {
				return fmt.Errorf("name a node, or pass --all-webapps for the deployment-wide certificate")
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			c, err := a.certClient()
			if err != nil {
				return err
			}
			current, err := a.findExternal(cmd.Context(), c, id)
			if err != nil {
				return err
			}
			if current == nil {
				return fmt.Errorf("no uploaded certificate for %s", externalTarget(id))
			}
			resp, err := call(cmd.Context(), a, "delete external certificate", c.DeleteExternalCertificate,
				&certv1.DeleteExternalCertificateRequest{NodeId: id, ExpectedVersion: current.GetVersion()})
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) error {
				fmt.Fprintf(w, "Removed the uploaded certificate of %s.\n", externalTarget(id))
				return nil
			})
		},
	}
	remove.Flags().BoolVar(&rmAll, "all-webapps", false, "remove the deployment-wide certificate")
	cmd.AddCommand(upload, list, remove)
	return cmd
}

func externalTarget(node string) string {
	if node == "" {
		return "every Webapp"
	}
	return node
}

func (a *App) listExternal(ctx context.Context, c certv1.CertServiceClient) ([]*certv1.ExternalCertificate, error) {
	return pages(ctx, a, "list external certificates", func(ctx context.Context, token string) ([]*certv1.ExternalCertificate, string, error) {
		resp, err := c.ListExternalCertificates(ctx, &certv1.ListExternalCertificatesRequest{PageSize: 100, PageToken: token})
		return resp.GetCertificates(), resp.GetNextPageToken(), err
	})
}

// findExternal returns the uploaded certificate of node ("" = deployment-wide), or nil, so that a
// replacement names the version it replaces.
func (a *App) findExternal(ctx context.Context, c certv1.CertServiceClient, node string) (*certv1.ExternalCertificate, error) {
	certs, err := a.listExternal(ctx, c)
	return firstMatch(certs, err, func(e *certv1.ExternalCertificate) bool { return e.GetNodeId() == node })
}

func renderExternalCerts(w io.Writer, certs []*certv1.ExternalCertificate, now time.Time) error {
	t := newTable(w, "NODE", "NAMES", "NOT AFTER", "FINGERPRINT")
	for _, c := range certs {
		node := c.GetNodeId()
		if node == "" {
			node = "(every webapp)"
		}
		t.row(node, joinOr(c.GetNames(), "-"), fmtTime(c.GetNotAfter(), now), shortID(c.GetFingerprint()))
	}
	return t.flush()
}

func (a *App) webhookCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "webhook-ca", Short: "The CA bundle Coreapps trust when they call the webhook"}
	var bundle string
	var replace bool
	add := &cobra.Command{
		Use:   "add NAME --bundle FILE",
		Short: "Add (or with --replace, replace) an entry of the webhook CA bundle",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pem, err := a.readFileArg("bundle", bundle)
			if err != nil {
				return err
			}
			c, err := a.certClient()
			if err != nil {
				return err
			}
			var version int64
			if replace {
				cur, err := a.findWebhookCA(cmd.Context(), c, args[0])
				if err != nil {
					return err
				}
				if cur == nil {
					return fmt.Errorf("--replace: no webhook CA named %q", args[0])
				}
				version = cur.GetVersion()
			}
			resp, err := call(cmd.Context(), a, "add webhook CA", c.AddWebhookCA, &certv1.AddWebhookCARequest{Name: args[0], BundlePem: string(pem), ExpectedVersion: version})
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) error {
				return renderWebhookCAs(w, []*certv1.WebhookCA{resp.GetWebhookCa()}, a.Now())
			})
		},
	}
	add.Flags().StringVar(&bundle, "bundle", "", "CA certificates, PEM file (- for stdin) (required)")
	add.Flags().BoolVar(&replace, "replace", false, "replace the existing entry of that name")
	_ = add.MarkFlagRequired("bundle")

	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the webhook CA bundle",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.certClient()
			if err != nil {
				return err
			}
			cas, err := a.listWebhookCAs(cmd.Context(), c)
			if err != nil {
				return err
			}
			resp := &certv1.ListWebhookCAsResponse{WebhookCas: cas}
			return a.emit(resp, func(w io.Writer) error { return renderWebhookCAs(w, cas, a.Now()) })
		},
	}
	remove := &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Remove an entry of the webhook CA bundle",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAndEmit(cmd.Context(), a, a.certClient, "delete webhook CA", certv1.CertServiceClient.DeleteWebhookCA,
				&certv1.DeleteWebhookCARequest{Name: args[0]},
				func(w io.Writer, resp *certv1.DeleteWebhookCAResponse) error {
					fmt.Fprintf(w, "Removed webhook CA %s.\n", args[0])
					return nil
				})
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}

func (a *App) listWebhookCAs(ctx context.Context, c certv1.CertServiceClient) ([]*certv1.WebhookCA, error) {
	return pages(ctx, a, "list webhook CAs", func(ctx context.Context, token string) ([]*certv1.WebhookCA, string, error) {
		resp, err := c.ListWebhookCAs(ctx, &certv1.ListWebhookCAsRequest{PageSize: 100, PageToken: token})
		return resp.GetWebhookCas(), resp.GetNextPageToken(), err
	})
}

func (a *App) findWebhookCA(ctx context.Context, c certv1.CertServiceClient, name string) (*certv1.WebhookCA, error) {
	cas, err := a.listWebhookCAs(ctx, c)
	return firstMatch(cas, err, func(ca *certv1.WebhookCA) bool { return ca.GetName() == name })
}

// firstMatch returns the first of items that match accepts, or the zero value (nil) when none does;
// a listing error passes through.
func firstMatch[T any](items []T, err error, match func(T) bool) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	if i := slices.IndexFunc(items, match); i >= 0 {
		return items[i], nil
	}
	return zero, nil
}

func renderWebhookCAs(w io.Writer, cas []*certv1.WebhookCA, now time.Time) error {
	t := newTable(w, "NAME", "CERTIFICATES", "EARLIEST NOT AFTER", "SUBJECTS")
	for _, ca := range cas {
		t.row(ca.GetName(), fmt.Sprint(len(ca.GetSubjects())), fmtTime(ca.GetNotAfter(), now), joinOr(ca.GetSubjects(), "-"))
	}
	return t.flush()
}

func (a *App) dbCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "db-ca", Short: "The CA bundle nodes use to verify the database server (WA_DB_SSL_CA)"}
	var bundle string
	var clearBundle bool
	set := &cobra.Command{
		Use:   "set --bundle FILE | --clear",
		Short: "Set (or remove) the database CA bundle",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (bundle == "") == !clearBundle {
				return fmt.Errorf("pass --bundle FILE, or --clear to remove the bundle")
			}
			var pem []byte
			if !clearBundle {
				var err error
				if pem, err = a.readFileArg("bundle", bundle); err != nil {
					return err
				}
			}
			c, err := a.certClient()
			if err != nil {
				return err
			}
			cur, err := call(cmd.Context(), a, "get database CA", c.GetDatabaseCA, &certv1.GetDatabaseCARequest{})
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, "set database CA", c.SetDatabaseCA, &certv1.SetDatabaseCARequest{BundlePem: string(pem), ExpectedVersion: cur.GetVersion()})
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) error {
				if clearBundle {
					fmt.Fprintf(w, "Database CA bundle removed (version %d).\n", resp.GetVersion())
				} else {
					fmt.Fprintf(w, "Database CA bundle stored (version %d).\n", resp.GetVersion())
				}
				return nil
			})
		},
	}
	set.Flags().StringVar(&bundle, "bundle", "", "CA certificates, PEM file (- for stdin)")
	set.Flags().BoolVar(&clearBundle, "clear", false, "remove the bundle")
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the database CA bundle (PEM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAndEmit(cmd.Context(), a, a.certClient, "get database CA", certv1.CertServiceClient.GetDatabaseCA,
				&certv1.GetDatabaseCARequest{},
				func(w io.Writer, resp *certv1.GetDatabaseCAResponse) error {
					if resp.GetBundlePem() == "" {
						a.progress("no database CA bundle is set")
						return nil
					}
					_, err := io.WriteString(w, resp.GetBundlePem())
					return err
				})
		},
	}
	cmd.AddCommand(set, show)
	return cmd
}
