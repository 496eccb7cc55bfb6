package ctl

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
)

func (a *App) meshCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "mesh", Short: "The Multiconnect mesh of Coreapp nodes"}
	cmd.AddCommand(a.meshStatusCmd(), a.meshConfigCmd())
	return cmd
}

func (a *App) meshStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show members, who sees whom, partitions, the master and warnings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAndEmit(cmd.Context(), a, a.meshClient, "get mesh status", meshv1.MeshServiceClient.GetMeshStatus,
				&meshv1.GetMeshStatusRequest{},
				func(w io.Writer, resp *meshv1.GetMeshStatusResponse) error { return renderMeshStatus(w, resp, a.Now()) })
		},
	}
}

func renderMeshStatus(w io.Writer, resp *meshv1.GetMeshStatusResponse, now time.Time) error {
	k := newKV(w)
	k.add("Members", fmt.Sprint(len(resp.GetMembers())))
	k.add("Master", orDash(resp.GetMasterNodeId()))
	if cfg := resp.GetConfig(); cfg != nil {
		k.add("Shards", fmt.Sprint(cfg.GetShards()))
		k.add("Master election", onOff(cfg.GetMasterElection()))
	}
	switch n := len(resp.GetPartitions()); {
	case n > 1:
		groups := make([]string, 0, n)
		for _, p := range resp.GetPartitions() {
			groups = append(groups, "{"+strings.Join(p.GetNodeIds(), ",")+"}")
		}
		k.add("Partitions", "PARTITIONED: "+strings.Join(groups, " "))
	default:
		k.add("Partitions", "none")
	}
	if err := k.flush(); err != nil {
		return err
	}
	if len(resp.GetMembers()) > 0 {
		fmt.Fprintln(w)
		t := newTable(w, "MEMBER", "CONTROL ADDRESS", "ZONE", "MASTER ELIGIBLE", "JOINED")
		for _, m := range resp.GetMembers() {
			t.row(m.GetNodeId(), m.GetControlAddress(), m.GetZone(), yesNo(m.GetMasterEligible()), fmtTimeShort(m.GetJoinedAt(), now))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if err := renderMatrix(w, resp); err != nil {
		return err
	}
	if len(resp.GetWarnings()) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, warn := range resp.GetWarnings() {
			fmt.Fprintf(w, "  - %s\n", warn)
		}
	}
	return nil
}

// renderMatrix prints who sees whom: rows observe, columns are observed; "ok", "FAIL", "?" (no report).
func renderMatrix(w io.Writer, resp *meshv1.GetMeshStatusResponse) error {
	if len(resp.GetLinks()) == 0 {
		return nil
	}
	ids := make([]string, 0, len(resp.GetMembers()))
	for _, m := range resp.GetMembers() {
		ids = append(ids, m.GetNodeId())
	}
	for _, l := range resp.GetLinks() {
		for _, id := range []string{l.GetFromNodeId(), l.GetToNodeId()} {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	cell := map[[2]string]string{}
	for _, l := range resp.GetLinks() {
		v := "FAIL"
		if l.GetReachable() {
			v = "ok"
		}
		cell[[2]string{l.GetFromNodeId(), l.GetToNodeId()}] = v
	}
	fmt.Fprintln(w, "\nReachability (row reaches column):")
	t := newTable(w, append([]string{"FROM \\ TO"}, ids...)...)
	for _, from := range ids {
		row := []string{from}
		for _, to := range ids {
			switch v, ok := cell[[2]string{from, to}]; {
			case from == to:
				row = append(row, "·")
			case ok:
				row = append(row, v)
			default:
				row = append(row, "?")
			}
		}
		t.row(row...)
	}
	return t.flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func (a *App) meshConfigCmd() *cobra.Command {
	var shards uint32
	var election bool
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "config [--shards N] [--master-election=BOOL] [--member-ttl D]",
		Short: "Show the mesh settings, or change them with flags",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.meshClient()
			if err != nil {
				return err
			}
			cur, err := call(cmd.Context(), a, "get mesh config", c.GetMeshConfig, &meshv1.GetMeshConfigRequest{})
			if err != nil {
				return err
			}
			fl := cmd.Flags()
			if !fl.Changed("shards") && !fl.Changed("master-election") && !fl.Changed("member-ttl") {
				return a.emit(cur, func(w io.Writer) error { return renderMeshConfig(w, cur.GetConfig()) })
			}
			cfg := &meshv1.MeshConfig{
				Shards:         cur.GetConfig().GetShards(),
				MasterElection: cur.GetConfig().GetMasterElection(),
				MemberTtl:      cur.GetConfig().GetMemberTtl(),
			}
			if fl.Changed("shards") {
				cfg.Shards = shards
			}
			if fl.Changed("master-election") {
				cfg.MasterElection = election
			}
			if fl.Changed("member-ttl") {
				cfg.MemberTtl = durationpb.New(ttl)
			}
			resp, err := call(cmd.Context(), a, "set mesh config", c.SetMeshConfig, &meshv1.SetMeshConfigRequest{Config: cfg, ExpectedVersion: cur.GetConfig().GetVersion()})
			if err != nil {
				return err
			}
			return a.emit(resp, func(w io.Writer) error { return renderMeshConfig(w, resp.GetConfig()) })
		},
	}
	cmd.Flags().Uint32Var(&shards, "shards", 0, "shard count: 1, 2, 4, 8, 16 or 32")
	cmd.Flags().BoolVar(&election, "master-election", false, "elect one master among master-eligible members")
	cmd.Flags().DurationVar(&ttl, "member-ttl", 0, "how long a member survives without its stream")
	return cmd
}

func renderMeshConfig(w io.Writer, cfg *meshv1.MeshConfig) error {
	k := newKV(w)
	k.add("Shards", fmt.Sprint(cfg.GetShards()))
	k.add("Master election", onOff(cfg.GetMasterElection()))
	k.add("Member TTL", fmtPBDuration(cfg.GetMemberTtl()))
	k.add("Version", fmt.Sprint(cfg.GetVersion()))
	return k.flush()
}
