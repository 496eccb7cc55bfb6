package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
)

func (a *App) caCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Show and rotate the certificate authority"}
	cmd.AddCommand(a.caShowCmd(), a.caStatusCmd(), a.caUploadCmd(), a.caRotateCmd())
	return cmd
}

func (a *App) caShowCmd() *cobra.Command {
	var pem bool
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show the trust bundle and its CAs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.certClient()
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, "get trust bundle", c.GetTrustBundle, &certv1.GetTrustBundleRequest{})
			if err != nil {
				return err
			}
			if pem && a.output == OutputTable {
				_, err := io.WriteString(a.Out, resp.GetTrustBundlePem())
				return err
			}
			return a.emit(resp, func(w io.Writer) error { return renderTrustBundle(w, resp, a.Now()) })
		},
	}
	cmd.Flags().BoolVar(&pem, "pem", false, "print the trust bundle PEM only")
	return cmd
}

func (a *App) caStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the rotation phase and the nodes that lag behind it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAndEmit(cmd.Context(), a, a.certClient, "get CA status", certv1.CertServiceClient.GetCAStatus, &certv1.GetCAStatusRequest{},
				func(w io.Writer, resp *certv1.GetCAStatusResponse) error { return renderCAStatus(w, resp, a.Now()) })
		},
	}
}

func (a *App) caUploadCmd() *cobra.Command {
	var certFile, keyFile, chainFile string
	var force bool
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   "upload --ca-cert FILE --ca-key FILE [--ca-chain FILE]",
		Short: "Rotate to an operator's CA (a root, or an intermediate with its chain)",
		Long: `Prepares the uploaded CA (it joins every node's trust bundle), waits until every node trusts it,
then makes it the issuer. Retire the previous CA later with 'wardenctl ca rotate --retire'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			certPEM, err := a.readFileArg("ca-cert", certFile)
			if err != nil {
				return err
			}
			keyPEM, err := a.readFileArg("ca-key", keyFile)
			if err != nil {
				return err
			}
			up := &certv1.UploadedCA{CertPem: string(certPEM), KeyPem: string(keyPEM)}
			if chainFile != "" {
				chain, err := a.readFileArg("ca-chain", chainFile)
				if err != nil {
					return err
				}
				up.ChainPem = string(chain)
			}
			return a.rotateCA(cmd.Context(), &certv1.PrepareCARequest{Upload: up}, force, wf)
		},
	}
	cmd.Flags().StringVar(&certFile, "ca-cert", "", "the CA certificate, PEM")
	cmd.Flags().StringVar(&keyFile, "ca-key", "", "its private key, PEM")
	cmd.Flags().StringVar(&chainFile, "ca-chain", "", "for an intermediate: the chain up to the offline root, PEM")
	cmd.Flags().BoolVar(&force, "force", false, "activate without waiting for lagging nodes (they fail to verify new certificates until they catch up)")
	wf.register(cmd, "every node trusts the new CA, then activate it")
	return cmd
}

func (a *App) caRotateCmd() *cobra.Command {
	var validity time.Duration
	var activate, retire, force bool
	var wf waitFlags
	cmd := &cobra.Command{
		Use:   "rotate [--activate | --retire] [--force]",
		Short: "Rotate the CA: prepare a new one, wait for every node to trust it, activate it",
		Long: `Without flags: generates a new CA, adds it to every node's trust bundle, waits (polling every second,
showing the nodes that lag) until every node acknowledged it, then makes it the issuer.
--no-wait stops after the prepare step; --activate resumes from there.
--retire removes the previous CA once no certificate it signed is in use (--force: now).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			switch {
			case activate && retire:
				return errors.New("--activate and --retire are exclusive")
			case retire:
				return a.retireCA(ctx, force)
			case activate:
				return a.activateCA(ctx, force, wf)
			}
			req := &certv1.PrepareCARequest{}
			if validity > 0 {
				req.Validity = durationpb.New(validity)
			}
			return a.rotateCA(ctx, req, force, wf)
		},
	}
	cmd.Flags().DurationVar(&validity, "validity", 0, "validity of the generated CA (default: the server's, 10 years)")
	cmd.Flags().BoolVar(&activate, "activate", false, "activate a prepared CA (after --no-wait)")
	cmd.Flags().BoolVar(&retire, "retire", false, "retire the previous CA")
	cmd.Flags().BoolVar(&force, "force", false, "with activation: do not wait for lagging nodes; with --retire: retire although certificates of the old CA are still held")
	wf.register(cmd, "every node trusts the new CA, then activate it")
	return cmd
}

// rotateCA prepares, then activates.
func (a *App) rotateCA(ctx context.Context, req *certv1.PrepareCARequest, force bool, wf waitFlags) error {
	c, err := a.certClient()
	if err != nil {
		return err
	}
	st, err := call(ctx, a, "get CA status", c.GetCAStatus, &certv1.GetCAStatusRequest{})
	if err != nil {
		return err
	}
	req.ExpectedVersion = st.GetVersion()
	prep, err := call(ctx, a, "prepare CA", c.PrepareCA, req)
	if err != nil {
		return err
	}
	if prep.GetPhase() != certv1.CAPhase_CA_PHASE_PREPARED {
		// No node registered: the server activated it at once.
		a.progress("CA %s is active (no node had to acknowledge it)", shortID(prep.GetCa().GetId()))
		return a.emit(prep, func(w io.Writer) error { return renderCA(w, prep.GetCa(), a.Now()) })
	}
	a.progress("prepared CA %s (%s); it is now in every node's trust bundle", shortID(prep.GetCa().GetId()), prep.GetCa().GetSubject())
	if !wf.enabled() && !force {
		a.progress("not waiting; activate it with 'wardenctl ca rotate --activate' once 'wardenctl ca status' shows no lagging node")
		return a.emit(prep, func(w io.Writer) error { return renderCA(w, prep.GetCa(), a.Now()) })
	}
	return a.activateCA(ctx, force, wf)
}

// activateCA waits until no node lags (unless force), then activates.
func (a *App) activateCA(ctx context.Context, force bool, wf waitFlags) error {
	c, err := a.certClient()
	if err != nil {
		return err
	}
	st, err := call(ctx, a, "get CA status", c.GetCAStatus, &certv1.GetCAStatusRequest{})
	if err != nil {
		return err
	}
	if st.GetPhase() != certv1.CAPhase_CA_PHASE_PREPARED {
		return fmt.Errorf("no prepared CA to activate (phase %s); start a rotation with 'wardenctl ca rotate'", enumName(st.GetPhase().String(), "CA_PHASE_"))
	}
	if !force && len(st.GetLagging()) > 0 {
		if !wf.enabled() {
			return fmt.Errorf("%d node(s) do not trust the new CA yet: %s (wait, or pass --force)", len(st.GetLagging()), lagList(st.GetLagging()))
		}
		wctx, cancel := wf.waitCtx(ctx)
		defer cancel()
		st, err = a.waitCALagging(wctx, c, st)
		if err != nil {
			return err
		}
	}
	act, err := call(ctx, a, "activate CA", c.ActivateCA, &certv1.ActivateCARequest{Force: force, ExpectedVersion: st.GetVersion()})
	if err != nil {
		return err
	}
	a.progress("CA %s now issues; node certificates are being re-issued. Retire the previous CA with 'wardenctl ca rotate --retire' (see 'wardenctl ca status' for when).", shortID(act.GetCa().GetId()))
	return a.emit(act, func(w io.Writer) error { return renderCA(w, act.GetCa(), a.Now()) })
}

// waitCALagging polls GetCAStatus until the prepared CA has no lagging node.
func (a *App) waitCALagging(ctx context.Context, c certv1.CertServiceClient, st *certv1.GetCAStatusResponse) (*certv1.GetCAStatusResponse, error) {
	last := ""
	start := a.Now()
	for {
		if st.GetPhase() != certv1.CAPhase_CA_PHASE_PREPARED {
			return nil, fmt.Errorf("the rotation left the prepared phase while waiting (now %s); see 'wardenctl ca status'", enumName(st.GetPhase().String(), "CA_PHASE_"))
		}
		if len(st.GetLagging()) == 0 {
			return st, nil
		}
		if cur := lagList(st.GetLagging()); cur != last {
			a.progress("waiting for %d node(s) to trust the new CA (%s elapsed): %s", len(st.GetLagging()), approxDuration(a.Now().Sub(start)), cur)
			last = cur
		}
		if err := a.sleep(ctx); err != nil {
			return nil, fmt.Errorf("stopped waiting; still lagging: %s (resume with 'wardenctl ca rotate --activate', or add --force)", last)
		}
		next, err := call(ctx, a, "get CA status", c.GetCAStatus, &certv1.GetCAStatusRequest{})
		if err != nil {
			return nil, err
		}
		st = next
	}
}

func (a *App) retireCA(ctx context.Context, force bool) error {
	c, err := a.certClient()
	if err != nil {
		return err
	}
	st, err := call(ctx, a, "get CA status", c.GetCAStatus, &certv1.GetCAStatusRequest{})
	if err != nil {
		return err
	}
	resp, err := call(ctx, a, "retire CA", c.RetireCA, &certv1.RetireCARequest{Force: force, ExpectedVersion: st.GetVersion()})
	if err != nil {
		return err
	}
	a.progress("retired CA %s; it is no longer in the trust bundle", shortID(resp.GetRetired().GetId()))
	return a.emit(resp, func(w io.Writer) error { return renderCA(w, resp.GetRetired(), a.Now()) })
}

func lagList(lags []*certv1.NodeLag) string {
	parts := make([]string, 0, len(lags))
	for _, l := range lags {
		if l.GetReason() != "" {
			parts = append(parts, fmt.Sprintf("%s (%s)", l.GetNodeId(), l.GetReason()))
		} else {
			parts = append(parts, l.GetNodeId())
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func renderCAs(w io.Writer, cas []*certv1.CA, now time.Time) error {
	t := newTable(w, "ID", "STATE", "SOURCE", "SUBJECT", "NOT AFTER")
	for _, ca := range cas {
		t.row(shortID(ca.GetId()), enumName(ca.GetState().String(), "CA_STATE_"), enumName(ca.GetSource().String(), "CA_SOURCE_"), ca.GetSubject(), fmtTime(ca.GetNotAfter(), now))
	}
	return t.flush()
}

func renderCA(w io.Writer, ca *certv1.CA, now time.Time) error {
	k := newKV(w)
	k.add("ID", ca.GetId())
	k.add("Subject", ca.GetSubject())
	k.add("State", enumName(ca.GetState().String(), "CA_STATE_"))
	k.add("Source", enumName(ca.GetSource().String(), "CA_SOURCE_"))
	k.add("Not before", fmtTime(ca.GetNotBefore(), now))
	k.add("Not after", fmtTime(ca.GetNotAfter(), now))
	return k.flush()
}

func renderTrustBundle(w io.Writer, resp *certv1.GetTrustBundleResponse, now time.Time) error {
	k := newKV(w)
	k.add("Trust domain", resp.GetTrustDomain())
	k.add("Version", fmt.Sprint(resp.GetVersion()))
	if err := k.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return renderCAs(w, resp.GetCas(), now)
}

func renderCAStatus(w io.Writer, resp *certv1.GetCAStatusResponse, now time.Time) error {
	k := newKV(w)
	k.add("Phase", enumName(resp.GetPhase().String(), "CA_PHASE_"))
	if resp.GetRetireAfter() != nil {
		k.add("Retire after", fmtTime(resp.GetRetireAfter(), now))
	}
	k.add("Lagging nodes", fmt.Sprint(len(resp.GetLagging())))
	k.add("Version", fmt.Sprint(resp.GetVersion()))
	if err := k.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := renderCAs(w, resp.GetCas(), now); err != nil {
		return err
	}
	if len(resp.GetLagging()) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := newTable(w, "LAGGING NODE", "REASON")
	for _, l := range resp.GetLagging() {
		t.row(l.GetNodeId(), l.GetReason())
	}
	return t.flush()
}
