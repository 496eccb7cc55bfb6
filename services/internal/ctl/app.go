// Package ctl is wardenctl, the operator CLI of Warden: a cobra command tree over the generated gRPC
// clients, table/JSON/YAML output and credential resolution. Everything is reachable through App so
// that tests run the real command tree against an in-process wardend and capture its output.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
)

// App is one wardenctl invocation.
type App struct {
	In        io.Reader
	Out       io.Writer
	Err       io.Writer
	LookupEnv func(string) (string, bool)
	Now       func() time.Time
	// PollInterval paces the waits of rotations; default one second.
	PollInterval time.Duration

	opts    GlobalOptions
	output  string
	timeout time.Duration
	root    *cobra.Command
	creds   Credentials
	conn    *grpc.ClientConn
}

// Main runs wardenctl with args and returns the process exit code: 0 on success, 1 on any error
// (printed as one line on stderr).
func Main(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer, lookupEnv func(string) (string, bool)) int {
	a := &App{In: in, Out: out, Err: errOut, LookupEnv: lookupEnv}
	return a.Run(ctx, args)
}

// Run executes one command line.
func (a *App) Run(ctx context.Context, args []string) int {
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.PollInterval <= 0 {
		a.PollInterval = time.Second
	}
	if a.LookupEnv == nil {
		a.LookupEnv = os.LookupEnv
	}
	root := a.Root()
	root.SetArgs(args)
	root.SetIn(a.In)
	root.SetOut(a.Out)
	root.SetErr(a.Err)
	err := root.ExecuteContext(ctx)
	if a.conn != nil {
		_ = a.conn.Close()
		a.conn = nil
	}
	if err == nil {
		return 0
	}
	if !errors.Is(err, errExit) {
		fmt.Fprintln(a.Err, "wardenctl: "+a.errContext().FormatError(err))
	}
	return 1
}

func (a *App) errContext() errContext {
	server := a.creds.Server
	if server == "" {
		server = a.opts.Server
	}
	return errContext{server: server, creds: a.creds.Describe(), timeout: a.timeout}
}

// Root builds the command tree.
func (a *App) Root() *cobra.Command {
	root := &cobra.Command{
		Use:   "wardenctl",
		Short: "Operate a Warden control plane",
		Long: `wardenctl operates a Warden control plane over its gRPC API.

Credentials: by default the admin files wardend writes to <data-dir>/admin (ca.crt, admin.crt,
admin.key). --cacert/--cert/--key override them; --token (or WARDEN_TOKEN, from 'wardenctl login')
authenticates with a bearer token instead of the admin certificate. Every global flag can also be set
as WARDEN_<FLAG> (WARDEN_SERVER, WARDEN_DATA_DIR, …); the command line wins.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return validOutput(a.output)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.opts.Server, "server", DefaultServer, "wardend address host:port (env WARDEN_SERVER)")
	pf.StringVar(&a.opts.DataDir, "data-dir", DefaultDataDir, "wardend data directory; credentials are read from <data-dir>/admin (env WARDEN_DATA_DIR)")
	pf.StringVar(&a.opts.CACert, "cacert", "", "CA bundle that verifies wardend (default <data-dir>/admin/ca.crt)")
	pf.StringVar(&a.opts.Cert, "cert", "", "client certificate (default <data-dir>/admin/admin.crt)")
	pf.StringVar(&a.opts.Key, "key", "", "client key (default <data-dir>/admin/admin.key)")
	pf.StringVar(&a.opts.Token, "token", "", "bearer token from 'wardenctl login', used instead of the admin certificate (env WARDEN_TOKEN)")
	pf.StringVarP(&a.output, "output", "o", OutputTable, "output format: table, json or yaml")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "deadline of each request")

	root.AddCommand(
		a.caCmd(), a.nodeCmd(), a.certCmd(), a.webhookCACmd(), a.dbCACmd(), a.secretCmd(), a.policyCmd(),
		a.meshCmd(), a.auditCmd(), a.loginCmd(), a.logoutCmd(), a.userCmd(), a.whoamiCmd(), a.statusCmd(),
	)
	a.root = root
	return root
}

// dial resolves the credentials and connects, once per invocation.
func (a *App) dial() (*grpc.ClientConn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	pf := a.root.PersistentFlags()
	creds, err := Resolve(a.opts, func(name string) bool { return pf.Changed(name) }, a.LookupEnv)
	if err != nil {
		return nil, err
	}
	a.creds = creds
	conn, err := creds.Dial()
	if err != nil {
		return nil, err
	}
	a.conn = conn
	return conn, nil
}

// rpcCtx bounds one request by --timeout.
func (a *App) rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, a.timeout)
}

func (a *App) certClient() (certv1.CertServiceClient, error) {
	return client(a, certv1.NewCertServiceClient)
}

func (a *App) secretClient() (secretv1.SecretServiceClient, error) {
	return client(a, secretv1.NewSecretServiceClient)
}

func (a *App) policyClient() (policyv1.PolicyServiceClient, error) {
	return client(a, policyv1.NewPolicyServiceClient)
}

func (a *App) meshClient() (meshv1.MeshServiceClient, error) {
	return client(a, meshv1.NewMeshServiceClient)
}

func (a *App) adminClient() (adminv1.AdminServiceClient, error) {
	return client(a, adminv1.NewAdminServiceClient)
}

// client builds a generated client over the invocation's connection.
func client[C any](a *App, newClient func(grpc.ClientConnInterface) C) (C, error) {
	conn, err := a.dial()
	if err != nil {
		var zero C
		return zero, err
	}
	return newClient(conn), nil
}

// method is a unary method of a generated client, taken as a method expression
// (certv1.CertServiceClient.GetNode), so that the client is made only when the command runs.
type method[C, Req, Resp any] func(C, context.Context, Req, ...grpc.CallOption) (Resp, error)

// callAndEmit is the whole of most commands: one call, then its answer printed (render for a table,
// the message itself for JSON and YAML).
func callAndEmit[C, Req any, Resp proto.Message](ctx context.Context, a *App, client func() (C, error),
	what string, m method[C, Req, Resp], req Req, render func(io.Writer, Resp) error,
) error {
	c, err := client()
	if err != nil {
		return err
	}
	resp, err := call(ctx, a, what, func(ctx context.Context, req Req, opts ...grpc.CallOption) (Resp, error) {
		return m(c, ctx, req, opts...)
	}, req)
	if err != nil {
		return err
	}
	return a.emit(resp, func(w io.Writer) error { return render(w, resp) })
}

// call runs one unary RPC under --timeout and names it in the error.
func call[Req, Resp any](ctx context.Context, a *App, what string, fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	rctx, cancel := a.rpcCtx(ctx)
	defer cancel()
	resp, err := fn(rctx, req)
	if err != nil {
		var zero Resp
		return zero, fmt.Errorf("%s: %w", what, err)
	}
	return resp, nil
}

// pages collects every page of a list RPC.
func pages[T any](ctx context.Context, a *App, what string, fetch func(ctx context.Context, token string) ([]T, string, error)) ([]T, error) {
	var all []T
	token := ""
	seen := map[string]bool{}
	for {
		rctx, cancel := a.rpcCtx(ctx)
		items, next, err := fetch(rctx, token)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		if seen[next] {
			return nil, fmt.Errorf("%s: the server repeated page token %q", what, next)
		}
		seen[next] = true
		token = next
	}
}

// emit prints m as JSON/YAML, or runs the table renderer.
func (a *App) emit(m proto.Message, render func(io.Writer) error) error {
	if a.output == OutputTable {
		return render(a.Out)
	}
	return writeMessage(a.Out, a.output, m)
}

// progress prints to stderr, so that stdout stays the command's result.
func (a *App) progress(format string, args ...any) {
	fmt.Fprintf(a.Err, format+"\n", args...)
}

// sleep waits one poll interval or until ctx is done.
func (a *App) sleep(ctx context.Context) error {
	t := time.NewTimer(a.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// readFileArg reads a file named by a flag; "-" reads stdin.
func (a *App) readFileArg(flag, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("--%s is required", flag)
	}
	if path == "-" {
		b, err := io.ReadAll(a.In)
		if err != nil {
			return nil, fmt.Errorf("--%s: read stdin: %w", flag, err)
		}
		return b, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	return b, nil
}

// waitFlags are the --wait/--no-wait/--wait-timeout trio of long operations.
type waitFlags struct {
	wait    bool
	noWait  bool
	timeout time.Duration
}

func (w *waitFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().BoolVar(&w.wait, "wait", true, "wait until "+what+", showing the nodes still pending")
	cmd.Flags().BoolVar(&w.noWait, "no-wait", false, "return at once (same as --wait=false)")
	cmd.Flags().DurationVar(&w.timeout, "wait-timeout", 0, "give up waiting after this long (0: until interrupted)")
}

func (w *waitFlags) enabled() bool { return w.wait && !w.noWait }

// waitCtx bounds a wait by --wait-timeout.
func (w *waitFlags) waitCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if w.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, w.timeout)
}
