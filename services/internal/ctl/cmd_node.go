package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
)

// AgentDataDir is where the agent keeps its files beside the app (the apps' own data directory).
const AgentDataDir = "/usr/local/waent/data"

func (a *App) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Aliases: []string{"nodes"}, Short: "Register, list and remove nodes"}
	cmd.AddCommand(a.nodeAddCmd(), a.nodeListCmd(), a.nodeShowCmd(), a.nodeRemoveCmd(), a.nodeTokenCmd())
	return cmd
}

func parseRole(s string) (certv1.NodeRole, error) {
	v, err := parseEnum(s, "NODE_ROLE_", "role", certv1.NodeRole_value)
	return certv1.NodeRole(v), err
}

func (a *App) nodeAddCmd() *cobra.Command {
	var role, zone, agentServer string
	var addresses []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "add NODE_ID --role webapp|coreapp",
		Short: "Register a node; prints its one-time join token and the agent command line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRole(role)
			if err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			c, err := a.certClient()
			if err != nil {
				return err
			}
			req := &certv1.CreateNodeRequest{NodeId: args[0], Role: r, Zone: zone, Addresses: addresses}
			if ttl > 0 {
				req.TokenTtl = durationpb.New(ttl)
			}
			resp, err := call(cmd.Context(), a, "create node", c.CreateNode, req)
			if err != nil {
				return err
			}
			if agentServer == "" {
				agentServer = a.creds.Server
			}
			return a.emit(resp, func(w io.Writer) error { return renderNodeAdded(w, resp, agentServer, a.Now()) })
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "webapp or coreapp (required)")
	cmd.Flags().StringVar(&zone, "zone", "", "network zone of the node (a zone of the policy)")
	cmd.Flags().StringSliceVar(&addresses, "address", nil, "DNS name or IP the node is reached at (repeatable, or comma-separated); becomes a SAN")
	cmd.Flags().DurationVar(&ttl, "token-ttl", 0, "lifetime of the join token (default: the server's, 1h; at most 7 days)")
	cmd.Flags().StringVar(&agentServer, "agent-server", "", "wardend address the agent dials, for the printed command (default --server)")
	_ = cmd.MarkFlagRequired("role")
	return cmd
}

// AgentCommand is the command line that bootstraps an agent with a join token.
func AgentCommand(role certv1.NodeRole, nodeID, server, token, fingerprint string) string {
	return strings.Join([]string{
		"warden-agent", "run",
		"--role", shellQuote(enumName(role.String(), "NODE_ROLE_")),
		"--node-id", shellQuote(nodeID),
		"--server", shellQuote(server),
		"--join-token", shellQuote(token),
		"--ca-fingerprint", shellQuote(fingerprint),
		"--data-dir", AgentDataDir,
	}, " ")
}

// shellQuote single-quotes s unless it is made only of characters a POSIX shell leaves alone.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/=+@,%[]", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func renderNodeAdded(w io.Writer, resp *certv1.CreateNodeResponse, agentServer string, now time.Time) error {
	n := resp.GetNode()
	fmt.Fprintf(w, "Node %s registered (%s, %s).\n\n", n.GetNodeId(), enumName(n.GetRole().String(), "NODE_ROLE_"), n.GetSpiffeId())
	return renderJoin(w, resp, agentServer, now)
}

func renderJoin(w io.Writer, resp *certv1.CreateNodeResponse, agentServer string, now time.Time) error {
	n := resp.GetNode()
	fmt.Fprintf(w, "Join token (shown once, expires %s):\n  %s\n\n", fmtTime(resp.GetTokenExpiresAt(), now), resp.GetJoinToken())
	fmt.Fprintf(w, "CA fingerprint (SHA-256):\n  %s\n\n", resp.GetCaFingerprint())
	fmt.Fprintf(w, "Start the agent on the node:\n  %s\n", AgentCommand(n.GetRole(), n.GetNodeId(), agentServer, resp.GetJoinToken(), resp.GetCaFingerprint()))
	return nil
}

func (a *App) nodeListCmd() *cobra.Command {
	var role string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List registered nodes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r certv1.NodeRole
			if role != "" {
				var err error
				if r, err = parseRole(role); err != nil {
					return fmt.Errorf("--role: %w", err)
				}
			}
			nodes, err := a.listNodes(cmd.Context(), r)
			if err != nil {
				return err
			}
			resp := &certv1.ListNodesResponse{Nodes: nodes}
			return a.emit(resp, func(w io.Writer) error { return renderNodes(w, nodes, a.Now()) })
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "only nodes of this role")
	return cmd
}

func (a *App) listNodes(ctx context.Context, role certv1.NodeRole) ([]*certv1.Node, error) {
	c, err := a.certClient()
	if err != nil {
		return nil, err
	}
	return pages(ctx, a, "list nodes", func(ctx context.Context, token string) ([]*certv1.Node, string, error) {
		resp, err := c.ListNodes(ctx, &certv1.ListNodesRequest{PageSize: 1000, PageToken: token, Role: role})
		return resp.GetNodes(), resp.GetNextPageToken(), err
	})
}

func renderNodes(w io.Writer, nodes []*certv1.Node, now time.Time) error {
	t := newTable(w, "NODE", "ROLE", "ZONE", "ADDRESSES", "BOOTSTRAPPED", "LAST ACK", "ACKED VERSION")
	for _, n := range nodes {
		acked := "-"
		if n.GetAckedVersion() > 0 {
			acked = fmt.Sprint(n.GetAckedVersion())
		}
		boot := fmtTimeShort(n.GetBootstrappedAt(), now)
		if n.GetBootstrappedAt() == nil {
			boot = "not yet"
		}
		t.row(n.GetNodeId(), enumName(n.GetRole().String(), "NODE_ROLE_"), n.GetZone(), joinOr(n.GetAddresses(), "-"), boot, fmtTimeShort(n.GetAckedAt(), now), acked)
	}
	return t.flush()
}

func (a *App) nodeShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show NODE_ID",
		Short: "Show one node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAndEmit(cmd.Context(), a, a.certClient, "get node", certv1.CertServiceClient.GetNode, &certv1.GetNodeRequest{NodeId: args[0]},
				func(w io.Writer, resp *certv1.GetNodeResponse) error { return renderNode(w, resp.GetNode(), a.Now()) })
		},
	}
}

func renderNode(w io.Writer, n *certv1.Node, now time.Time) error {
	k := newKV(w)
	k.add("Node", n.GetNodeId())
	k.add("Role", enumName(n.GetRole().String(), "NODE_ROLE_"))
	k.add("Zone", n.GetZone())
	k.add("Addresses", joinOr(n.GetAddresses(), "-"))
	k.add("SPIFFE ID", n.GetSpiffeId())
	k.add("Registered", fmtTime(n.GetCreatedAt(), now))
	k.add("Bootstrapped", fmtTime(n.GetBootstrappedAt(), now))
	k.add("Acked version", fmt.Sprint(n.GetAckedVersion()))
	k.add("Last ack", fmtTime(n.GetAckedAt(), now))
	k.add("Version", fmt.Sprint(n.GetVersion()))
	return k.flush()
}

func (a *App) nodeRemoveCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:     "remove NODE_ID",
		Aliases: []string{"rm", "decommission"},
		Short:   "Decommission a node: revoke its certificates and invalidate its join tokens",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAndEmit(cmd.Context(), a, a.certClient, "decommission node", certv1.CertServiceClient.DecommissionNode,
				&certv1.DecommissionNodeRequest{NodeId: args[0], Reason: reason},
				func(w io.Writer, resp *certv1.DecommissionNodeResponse) error {
					fmt.Fprintf(w, "Node %s removed; %d certificate(s) revoked.\n", args[0], len(resp.GetRevokedSerials()))
					for _, s := range resp.GetRevokedSerials() {
						fmt.Fprintf(w, "  %s\n", s)
					}
					return nil
				})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return cmd
}

func (a *App) nodeTokenCmd() *cobra.Command {
	var ttl time.Duration
	var agentServer string
	cmd := &cobra.Command{
		Use:   "token NODE_ID",
		Short: "Issue a new one-time join token for an existing node (e.g. a rebuilt host)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.certClient()
			if err != nil {
				return err
			}
			node, err := call(cmd.Context(), a, "get node", c.GetNode, &certv1.GetNodeRequest{NodeId: args[0]})
			if err != nil {
				return err
			}
			req := &certv1.CreateJoinTokenRequest{NodeId: args[0]}
			if ttl > 0 {
				req.Ttl = durationpb.New(ttl)
			}
			resp, err := call(cmd.Context(), a, "create join token", c.CreateJoinToken, req)
			if err != nil {
				return err
			}
			if agentServer == "" {
				agentServer = a.creds.Server
			}
			added := &certv1.CreateNodeResponse{Node: node.GetNode(), JoinToken: resp.GetJoinToken(), TokenExpiresAt: resp.GetExpiresAt(), CaFingerprint: resp.GetCaFingerprint()}
			return a.emit(resp, func(w io.Writer) error { return renderJoin(w, added, agentServer, a.Now()) })
		},
	}
	cmd.Flags().DurationVar(&ttl, "token-ttl", 0, "lifetime of the join token (default: the server's, 1h)")
	cmd.Flags().StringVar(&agentServer, "agent-server", "", "wardend address the agent dials, for the printed command (default --server)")
	return cmd
}
