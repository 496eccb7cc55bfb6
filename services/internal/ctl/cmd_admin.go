package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
)

// readLineUnbuffered reads up to a newline one byte at a time, so nothing after the line is consumed.
func readLineUnbuffered(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				return strings.TrimSuffix(b.String(), "\r"), nil
			}
			b.WriteByte(buf[0])
		}
		if errors.Is(err, io.EOF) {
			if b.Len() == 0 {
				return "", io.ErrUnexpectedEOF
			}
			return strings.TrimSuffix(b.String(), "\r"), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// passwordReader reads passwords from stdin (--password-stdin, one per line) or from the terminal
// with echo off.
type passwordReader struct {
	a     *App
	stdin bool
}

func (p passwordReader) read(prompt string) (string, error) {
	if p.stdin {
		line, err := readLineUnbuffered(p.a.In)
		if err != nil {
			return "", fmt.Errorf("read password from stdin: %w", err)
		}
		return line, nil
	}
	f, isFile := p.a.In.(*os.File)
	if !isFile {
		return "", errors.New("no terminal to ask for the password: use --password-stdin")
	}
	fmt.Fprint(p.a.Err, prompt)
	line, ok, err := readPasswordTTY(f)
	fmt.Fprintln(p.a.Err)
	switch {
	case !ok:
		return "", errors.New("stdin is not a terminal: use --password-stdin")
	case err != nil:
		return "", fmt.Errorf("read password: %w", err)
	}
	return line, nil
}

// readNew asks for a new password twice on a terminal.
func (p passwordReader) readNew(prompt string) (string, error) {
	pw, err := p.read(prompt)
	if err != nil || p.stdin {
		return pw, err
	}
	again, err := p.read("Repeat: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", errors.New("the passwords do not match")
	}
	return pw, nil
}

func parseUserRole(s string) (adminv1.UserRole, error) {
	v, err := parseEnum(s, "USER_ROLE_", "role", adminv1.UserRole_value)
	return adminv1.UserRole(v), err
}

func (a *App) loginCmd() *cobra.Command {
	var pwStdin bool
	cmd := &cobra.Command{
		Use:   "login USERNAME [--password-stdin]",
		Short: "Exchange a user name and password for a bearer token (printed on stdout)",
		Long: `Prints the token on stdout, so that it can be captured:

  export WARDEN_TOKEN=$(wardenctl login alice --password-stdin < pw.txt)

Later commands send it as "authorization: Bearer <token>".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := passwordReader{a: a, stdin: pwStdin}.read("Password for " + args[0] + ": ")
			if err != nil {
				return err
			}
			return callAndEmit(cmd.Context(), a, a.adminClient, "login", adminv1.AdminServiceClient.Login,
				&adminv1.LoginRequest{Username: args[0], Password: pw},
				func(w io.Writer, resp *adminv1.LoginResponse) error {
					a.progress("logged in as %s (%s); the token expires %s", args[0], enumName(resp.GetRole().String(), "USER_ROLE_"), fmtTime(resp.GetExpiresAt(), a.Now()))
					if resp.GetMustChangePassword() {
						a.progress("the password must be changed first: WARDEN_TOKEN=<token> wardenctl user passwd %s", args[0])
					}
					_, err := fmt.Fprintln(w, resp.GetToken())
					return err
				})
		},
	}
	cmd.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of stdin")
	return cmd
}

func (a *App) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the bearer token given with --token or WARDEN_TOKEN",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			if a.creds.Token == "" {
				return errors.New("no token to revoke: pass --token or set WARDEN_TOKEN")
			}
			resp, err := call(cmd.Context(), a, "logout", c.Logout, &adminv1.LogoutRequest{})
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, "Token revoked.")
				return err
			})
		},
	}
}

func (a *App) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the identity and role wardend sees",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAndEmit(cmd.Context(), a, a.adminClient, "whoami", adminv1.AdminServiceClient.WhoAmI, &adminv1.WhoAmIRequest{},
				func(w io.Writer, resp *adminv1.WhoAmIResponse) error { return renderWhoAmI(w, resp) })
		},
	}
}

func renderWhoAmI(w io.Writer, resp *adminv1.WhoAmIResponse) error {
	k := newKV(w)
	k.add("Identity", resp.GetIdentity())
	k.add("Role", resp.GetRole())
	k.add("Authenticated by", resp.GetMethod())
	return k.flush()
}

func (a *App) userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Aliases: []string{"users"}, Short: "Operators who log in with a password"}
	var role string
	var addStdin bool
	add := &cobra.Command{
		Use:   "add USERNAME --role admin|auditor",
		Short: "Add an operator; the initial password must be changed at first login",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseUserRole(role)
			if err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			pw, err := passwordReader{a: a, stdin: addStdin}.readNew("Initial password for " + args[0] + ": ")
			if err != nil {
				return err
			}
			return callAndEmit(cmd.Context(), a, a.adminClient, "create user", adminv1.AdminServiceClient.CreateUser,
				&adminv1.CreateUserRequest{Username: args[0], Role: r, InitialPassword: pw},
				func(w io.Writer, resp *adminv1.CreateUserResponse) error {
					return renderUsers(w, []*adminv1.User{resp.GetUser()}, a.Now())
				})
		},
	}
	add.Flags().StringVar(&role, "role", "", "admin or auditor (required)")
	add.Flags().BoolVar(&addStdin, "password-stdin", false, "read the initial password from the first line of stdin")
	_ = add.MarkFlagRequired("role")

	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List operators",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			users, err := pages(cmd.Context(), a, "list users", func(ctx context.Context, token string) ([]*adminv1.User, string, error) {
				resp, err := c.ListUsers(ctx, &adminv1.ListUsersRequest{PageSize: 100, PageToken: token})
				return resp.GetUsers(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			resp := &adminv1.ListUsersResponse{Users: users}
			return a.emit(resp, func(w io.Writer) error { return renderUsers(w, users, a.Now()) })
		},
	}

	remove := &cobra.Command{
		Use:     "remove USERNAME",
		Aliases: []string{"rm"},
		Short:   "Remove an operator and revoke its tokens",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAndEmit(cmd.Context(), a, a.adminClient, "delete user", adminv1.AdminServiceClient.DeleteUser,
				&adminv1.DeleteUserRequest{Username: args[0]},
				func(w io.Writer, resp *adminv1.DeleteUserResponse) error {
					_, err := fmt.Fprintf(w, "User %s removed.\n", args[0])
					return err
				})
		},
	}

	var pwStdin, reset bool
	passwd := &cobra.Command{
		Use:   "passwd USERNAME [--reset] [--password-stdin]",
		Short: "Change a password (yours, or with --reset as admin, another user's); revokes the user's other tokens",
		Long: `Without --reset the current password is asked first. With --password-stdin the passwords are read
from stdin, one per line: current then new (just the new one with --reset).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pr := passwordReader{a: a, stdin: pwStdin}
			req := &adminv1.ChangePasswordRequest{Username: args[0]}
			if !reset {
				old, err := pr.read("Current password: ")
				if err != nil {
					return err
				}
				req.OldPassword = old
			}
			pw, err := pr.readNew("New password: ")
			if err != nil {
				return err
			}
			req.NewPassword = pw
			return callAndEmit(cmd.Context(), a, a.adminClient, "change password", adminv1.AdminServiceClient.ChangePassword, req,
				func(w io.Writer, resp *adminv1.ChangePasswordResponse) error {
					_, err := fmt.Fprintf(w, "Password of %s changed; its other tokens are revoked.\n", args[0])
					return err
				})
		},
	}
	passwd.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the passwords from stdin, one per line")
	passwd.Flags().BoolVar(&reset, "reset", false, "set another user's password as admin (no current password)")

	revoke := &cobra.Command{
		Use:   "revoke-tokens USERNAME",
		Short: "Revoke every token of a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAndEmit(cmd.Context(), a, a.adminClient, "revoke tokens", adminv1.AdminServiceClient.RevokeTokens,
				&adminv1.RevokeTokensRequest{Username: args[0]},
				func(w io.Writer, resp *adminv1.RevokeTokensResponse) error {
					_, err := fmt.Fprintf(w, "%d token(s) of %s revoked.\n", resp.GetRevoked(), args[0])
					return err
				})
		},
	}
	cmd.AddCommand(add, list, remove, passwd, revoke)
	return cmd
}

func renderUsers(w io.Writer, users []*adminv1.User, now time.Time) error {
	t := newTable(w, "USER", "ROLE", "MUST CHANGE PASSWORD", "CREATED")
	for _, u := range users {
		t.row(u.GetUsername(), enumName(u.GetRole().String(), "USER_ROLE_"), yesNo(u.GetMustChangePassword()), fmtTime(u.GetCreatedAt(), now))
	}
	return t.flush()
}

func (a *App) auditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The audit log"}
	var f auditFilter
	var limit int
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List audit events, newest first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := f.request(a.Now())
			if err != nil {
				return err
			}
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			var events []*adminv1.AuditEvent
			for {
				req.PageSize = int32(min(limit-len(events), 1000))
				resp, err := call(cmd.Context(), a, "list audit events", c.ListAuditEvents, req)
				if err != nil {
					return err
				}
				events = append(events, resp.GetEvents()...)
				req.PageToken = resp.GetNextPageToken()
				if req.PageToken == "" || len(events) >= limit {
					break
				}
			}
			if len(events) > limit {
				events = events[:limit]
			}
			out := &adminv1.ListAuditEventsResponse{Events: events}
			return a.emit(out, func(w io.Writer) error { return renderAudit(w, events, a.Now()) })
		},
	}
	f.register(list)
	list.Flags().IntVar(&limit, "limit", 100, "at most this many events")

	var after int64
	tail := &cobra.Command{
		Use:   "tail",
		Short: "Follow the audit log (Ctrl-C to stop); -o json prints one JSON object per line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			stream, err := c.WatchAuditEvents(cmd.Context(), &adminv1.WatchAuditEventsRequest{AfterRevision: after})
			if err != nil {
				return fmt.Errorf("watch audit events: %w", err)
			}
			for {
				ev, err := stream.Recv()
				if err != nil {
					if cmd.Context().Err() != nil || errors.Is(err, io.EOF) {
						return nil
					}
					return fmt.Errorf("watch audit events: %w", err)
				}
				if err := a.writeAuditStreamEvent(ev); err != nil {
					return err
				}
			}
		},
	}
	tail.Flags().Int64Var(&after, "after-revision", 0, "replay events after this etcd revision (default: new events only)")
	cmd.AddCommand(list, tail)
	return cmd
}

// auditFilter are the filters of audit list.
type auditFilter struct {
	actor, method, target, outcome, since string
}

func (f *auditFilter) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.actor, "actor", "", "only events of this actor (SPIFFE ID or user:<name>)")
	cmd.Flags().StringVar(&f.method, "method", "", "only events whose method contains this text")
	cmd.Flags().StringVar(&f.target, "target", "", "only events whose target starts with this text")
	cmd.Flags().StringVar(&f.outcome, "outcome", "", "success, denied or failed")
	cmd.Flags().StringVar(&f.since, "since", "", "only events since a time (RFC 3339) or for a duration back (e.g. 1h)")
}

func (f *auditFilter) request(now time.Time) (*adminv1.ListAuditEventsRequest, error) {
	req := &adminv1.ListAuditEventsRequest{Actor: f.actor, Method: f.method, TargetPrefix: f.target}
	if f.outcome != "" {
		o, err := parseEnum(f.outcome, "OUTCOME_", "outcome", adminv1.Outcome_value)
		if err != nil {
			return nil, fmt.Errorf("--outcome: %w", err)
		}
		req.Outcome = adminv1.Outcome(o)
	}
	if f.since != "" {
		t, err := ParseSince(f.since, now)
		if err != nil {
			return nil, err
		}
		req.Since = timestamppb.New(t)
	}
	return req, nil
}

// ParseSince reads --since: an RFC 3339 time or a duration before now.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: want a positive duration", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time or a duration such as 1h", s)
	}
	return t, nil
}

func renderAudit(w io.Writer, events []*adminv1.AuditEvent, now time.Time) error {
	t := newTable(w, "TIME", "ACTOR", "METHOD", "TARGET", "OUTCOME", "REASON")
	for _, e := range events {
		t.row(fmtTime(e.GetTime(), now), e.GetActor(), shortMethod(e.GetMethod()), e.GetTarget(), enumName(e.GetOutcome().String(), "OUTCOME_"), oneLine(e.GetReason()))
	}
	return t.flush()
}

// shortMethod drops the package: "/warden.cert.v1.CertService/RevokeCertificate" → "CertService/RevokeCertificate".
func shortMethod(m string) string {
	svc, name, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
	if !ok {
		return m
	}
	if i := strings.LastIndex(svc, "."); i >= 0 {
		svc = svc[i+1:]
	}
	return svc + "/" + name
}

// auditLine is one streamed event in table mode (a tail cannot align columns across future lines).
func auditLine(e *adminv1.AuditEvent) string {
	parts := []string{
		e.GetTime().AsTime().UTC().Format(time.RFC3339),
		enumName(e.GetOutcome().String(), "OUTCOME_"),
		orDash(e.GetActor()),
		shortMethod(e.GetMethod()),
		orDash(e.GetTarget()),
	}
	if r := oneLine(e.GetReason()); r != "" {
		parts = append(parts, "reason="+r)
	}
	return strings.Join(parts, "  ")
}

func (a *App) writeAuditStreamEvent(ev *adminv1.WatchAuditEventsResponse) error {
	switch a.output {
	case OutputJSON:
		b, err := marshalJSONLine(ev)
		if err != nil {
			return err
		}
		_, err = a.Out.Write(b)
		return err
	case OutputYAML:
		fmt.Fprintln(a.Out, "---")
		return writeMessage(a.Out, OutputYAML, ev)
	default:
		_, err := fmt.Fprintln(a.Out, auditLine(ev.GetEvent()))
		return err
	}
}
