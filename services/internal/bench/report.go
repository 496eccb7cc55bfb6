package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report for machines.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (d Dist) String() string {
	if d.Count == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s / %s", num(d.P50), num(d.P99), num(d.Max))
}

// num prints a millisecond figure with the precision it deserves.
func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// WriteText writes the report as tables.
func (r *Report) WriteText(out io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "warden-bench (%s mode), %s, %.0f s\n", r.Mode, r.Started.Format("2006-01-02 15:04 MST"), r.Duration)
	fmt.Fprintf(&b, "machine: %s; wardend RLIMIT_NOFILE %s\n", r.Machine, r.WardendNoFile)
	fmt.Fprintf(&b, "load average (1 min) at start %.2f, at end %.2f: anything above ~0.5 means other work shared the cores\n", r.Machine.LoadStart, r.Machine.LoadEnd)
	fmt.Fprintln(&b, "latencies in ms as p50 / p99 / max, from the commit RPC's return; agents are simulated in this process")
	fmt.Fprintln(&b, "(one TLS connection and mTLS identity each; credentials, secrets and policy streams; every snapshot acked).")

	if len(r.Fanout) > 0 {
		fmt.Fprintln(&b, "\nFan-out: policy change (SetPolicy) → every agent")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "agents\tsetup s\tload\tcommit rpc\treceived\tacked\tbaseline 1 conn/stream\tbaseline mux\tratio p50\tratio p99\tmissing recv/ack\t")
		for _, f := range r.Fanout {
			mux := "—"
			if f.BaselineConns > 0 {
				mux = fmt.Sprintf("%s (%d conns)", f.BaselineMux, f.BaselineConns)
			}
			fmt.Fprintf(tw, "%d\t%.1f\t%.2f\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%d/%d\t\n", f.Agents, f.SetupS, f.Load1, f.Policy.Commit, f.Policy.Received,
				f.Policy.Acked, f.Baseline, mux, f.RatioP50, f.RatioP99, f.Policy.Missing, f.Policy.MissingAck)
		}
		tw.Flush()
		if r.Fanout[0].SnapshotBytes > 0 {
			fmt.Fprintf(&b, "baseline: a bare gRPC server (WatchPolicy only, no interceptors) pushing the same %d-byte snapshot, marshalled once;\n", r.Fanout[0].SnapshotBytes)
			fmt.Fprintln(&b, "ratio = Warden received / baseline (1 conn/stream), the same topology as the agents.")
		}
		fmt.Fprintln(&b, "\nFan-out: secret rotation step (RotateSecret wa-secret) → every agent")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "agents\tcommit rpc\tstaged received\tstaged acked\tpromoted, ACTIVE received\tmissing recv/ack\t")
		for _, f := range r.Fanout {
			active := "—"
			if f.Secret.Active != nil {
				active = f.Secret.Active.String()
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d/%d\t\n", f.Agents, f.Secret.Commit, f.Secret.Received, f.Secret.Acked, active, f.Secret.Missing, f.Secret.MissingAck)
		}
		tw.Flush()
		for _, f := range r.Fanout {
			if f.Resubscriptions > 0 || f.AckRetries > 0 {
				fmt.Fprintf(&b, "  %d agents: %d streams re-subscribed, %d acks retried during the changes; last error: %s\n", f.Agents, f.Resubscriptions, f.AckRetries, f.LastError)
			}
			for _, c := range []struct {
				name string
				ch   Change
			}{{"policy", f.Policy}, {"secret", f.Secret}} {
				if c.ch.Error != "" {
					fmt.Fprintf(&b, "  %d agents, %s: %s\n", f.Agents, c.name, c.ch.Error)
				}
			}
		}
	}

	fmt.Fprintln(&b, "\nMemory: wardend with N agents subscribed on all three streams")
	fmt.Fprintf(&b, "just started: RSS %s, heap in use %s (start-up garbage not yet collected)\n", mib(r.Memory.StartRSSKiB), mib(r.Memory.StartHeapKiB))
	if r.Mode != "quick" {
		fmt.Fprintf(&b, "idle, after the runtime's 2-minute forced GC: RSS %s, heap in use %s\n", mib(r.Memory.IdleRSSKiB), mib(r.Memory.IdleHeapKiB))
	}
	if len(r.Memory.Rows) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "agents\tRSS\theap in use\tRSS KiB/agent vs idle\theap KiB/agent vs idle\tRSS KiB/agent vs previous size\tbench process RSS\t")
		for _, m := range r.Memory.Rows {
			marginal := "—"
			if m.MarginalRSSKiBPerAgent != 0 {
				marginal = fmt.Sprintf("%.1f", m.MarginalRSSKiBPerAgent)
			}
			heap, heapPer, rssPer := "n/a", "n/a", "n/a"
			if m.HeapKiB >= 0 {
				heap = mib(m.HeapKiB)
			}
			if r.Mode != "quick" {
				rssPer = fmt.Sprintf("%.1f", m.RSSKiBPerAgent)
				if m.HeapKiB >= 0 {
					heapPer = fmt.Sprintf("%.1f", m.HeapKiBPerAgent)
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", m.Agents, mib(m.RSSKiB), heap, rssPer, heapPer, marginal, mib(m.BenchRSSKiB))
		}
		tw.Flush()
		for _, m := range r.Memory.Rows {
			if m.LiveHeapKiBPerAgent > 0 {
				fmt.Fprintf(&b, "at %d agents, per agent: live heap (at the last GC) %.1f KiB, goroutine stacks %.1f KiB (%.1f KiB of them in use at the last GC); the rest of the RSS is the GC's headroom and memory not yet returned to the OS\n",
					m.Agents, m.LiveHeapKiBPerAgent, m.StackKiBPerAgent, m.StackUsedKiBPerAgent)
			}
		}
		for _, f := range r.Fanout {
			if f.BaselineRSSKiBPerConn > 0 {
				fmt.Fprintf(&b, "bare gRPC baseline with %d TLS connections of one stream each: %.1f KiB RSS per connection\n", f.Agents, f.BaselineRSSKiBPerConn)
			}
		}
	}

	if s := r.Storm; s != nil {
		fmt.Fprintf(&b, "\nReconnect storm: wardend restarted (SIGTERM, same data dir and port) under %d agents\n", s.Agents)
		if s.NotCurrent == 0 {
			fmt.Fprintf(&b, "shutdown %.0f ms, exec to SERVING %.0f ms; every agent current on every stream %.0f ms after the new process's exec (%.0f ms after SIGTERM)\n",
				s.ShutdownMS, s.StartupMS, s.AllCurrentMS, s.AllCurrentFromTermMS)
		} else {
			fmt.Fprintf(&b, "shutdown %.0f ms, exec to SERVING %.0f ms; NOT every agent current: %d missed a change at the deadline (last receipt %.0f ms after exec)\n",
				s.ShutdownMS, s.StartupMS, s.NotCurrent, s.AllCurrentMS)
		}
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "stream\tchange committed after exec, ms\treceived by each agent after exec\tmissing\t")
		for _, c := range s.Checks {
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%d\t\n", c.Stream, c.CommitAfterStartMS, c.FromStart, c.Missing)
		}
		tw.Flush()
		fmt.Fprintf(&b, "re-subscriptions %d; TLS handshakes %d, %d of them resumed; refusals %d; peak wardend CPU %.0f%% of one core; peak RSS %s; agents not current at the deadline (gave up): %d\n",
			s.Resubscriptions, s.Handshakes, s.ResumedHandshakes, s.Refusals, s.PeakCPUPercent, mib(s.PeakRSSKiB), s.NotCurrent)
		if s.Error != "" {
			fmt.Fprintf(&b, "storm error: %s\n", s.Error)
		}
	}

	if c := r.FirstCredential; c != nil {
		fmt.Fprintln(&b, "\nReal warden-agent (one process)")
		fmt.Fprintf(&b, "time to first credential: %.0f ms from CreateNode (RPC %.0f ms; exec → identity certificate on disk %.0f ms)\n", c.TotalMS, c.CreateNodeMS, c.AgentMS)
		if c.EnvFileMS > 0 {
			fmt.Fprintf(&b, "exec → env file with WA_SECRET: %.0f ms\n", c.EnvFileMS)
		}
		fmt.Fprintf(&b, "warden-agent idle RSS: %s\n", mib(c.AgentRSSKiB))
		fmt.Fprintf(&b, "change committed → applied (TLS profile → env file rewritten): %s over %d changes\n", c.Applied, c.Applied.Count)
		if c.Error != "" {
			fmt.Fprintf(&b, "  %s\n", c.Error)
		}
	}

	if len(r.Issuance) > 0 {
		fmt.Fprintf(&b, "\nIssuance: IssueCertificate (P-256 CSR, fresh key each, signed and stored) spread over %d node identities\n", r.IssuanceNodes)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "clients\tcerts/s\tlatency ms\traw sign/s\tof raw\traw etcd put/s\tthrottled\tfailed\t")
		for _, i := range r.Issuance {
			fmt.Fprintf(tw, "%d\t%.0f\t%s\t%.0f\t%.0f%%\t%.0f\t%d\t%d\t\n", i.Clients, i.PerSec, i.Latency, i.RawSignPerSec, 100*i.OfRawSign, i.RawPutPerSec, i.Throttled, i.Failed)
		}
		tw.Flush()
		for _, i := range r.Issuance {
			if i.Error != "" {
				fmt.Fprintf(&b, "  %d clients, first failure: %s\n", i.Clients, i.Error)
			}
		}
		fmt.Fprintln(&b, "raw sign: pki.CA.Issue in this process; raw etcd put: 1.5 KiB puts to wardend's embedded etcd with its client certificate.")
	}
	if o := r.OneNode; o != nil {
		until := fmt.Sprintf("until %d keys and certificates were on disk", o.OnDisk)
		if o.OnDisk == 0 {
			// Reports from before 2026-12-05 timed the calls only.
			until = "until the calls were answered (files not written)"
		}
		fmt.Fprintf(&b, "one node, %d certificates with %d concurrent calls: %.0f ms %s (%d calls refused by the per-identity rate limit and retried)\n",
			o.Certs, o.Clients, o.TotalMS, until, o.Throttled)
	}

	if len(r.Notes) > 0 {
		fmt.Fprintln(&b, "\nNotes")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}
