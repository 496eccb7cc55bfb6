package bench

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Storm is a wardend restart under N connected agents.
type Storm struct {
	Agents int `json:"agents"`
	// SIGTERM to exit of the old process (graceful stop of N streams).
	ShutdownMS float64 `json:"shutdown_ms"`
	// Exec of the new process to health SERVING (embedded etcd replay included).
	StartupMS float64 `json:"startup_ms"`
	// Exec of the new process to the last receipt of a post-restart change: every agent current on
	// every stream when NotCurrent is 0.
	AllCurrentMS float64 `json:"all_current_ms"`
	// The same from SIGTERM: what an agent experiences end to end.
	AllCurrentFromTermMS float64 `json:"all_current_from_sigterm_ms"`
	// The changes committed after the restart, one per stream, each received by every agent.
	Checks []StormCheck `json:"checks"`
	// Peak CPU of wardend during the storm (percent of one core; the machine has Cores × 100).
	PeakCPUPercent float64 `json:"peak_cpu_percent"`
	// Peak RSS of the new wardend (VmHWM) and the highest sampled RSS of either process.
	PeakRSSKiB int64 `json:"peak_rss_kib"`
	// Stream re-subscriptions the agents made (3 streams per agent; retries included).
	Resubscriptions int64 `json:"resubscriptions"`
	// TLS handshakes the new process completed by the end of the storm, and how many of them resumed a
	// session made with the old process (wardend's warden_tls_handshakes_total).
	Handshakes        int64 `json:"handshakes"`
	ResumedHandshakes int64 `json:"resumed_handshakes"`
	// Stream errors refusing an agent's identity or request (retrying cannot cure them).
	Refusals int64 `json:"refusals"`
	// Agents not current on every stream at the deadline: in effect, they gave up.
	NotCurrent int    `json:"not_current"`
	Error      string `json:"error,omitempty"`
}

// StormCheck is one change committed after the restart.
type StormCheck struct {
	Stream string `json:"stream"`
	// When the commit RPC returned, and when each agent received the change, from the new process's exec.
	CommitAfterStartMS float64 `json:"commit_after_start_ms"`
	FromStart          Dist    `json:"received_from_start"`
	Missing            int     `json:"missing"`
}

// storm restarts wardend on the same data dir and port with every agent connected, then commits a
// policy change, a secret rotation step and a new database CA (one change per stream) and waits until
// every agent received all three: only then is it resubscribed on every stream and current.
func storm(ctx context.Context, f *fleet, w *wardendProc, deadline time.Duration) (Storm, error) {
	n := f.size()
	s := Storm{Agents: n}
	refused0, resub0 := f.refused.Load(), f.reconnects.Load()
	// Before the restart, so the CA generation is known when the first snapshot arrives.
	gen := uint64(time.Now().UnixNano())

	smp := startSampler(w.pid, 100*time.Millisecond)
	tTerm := time.Now()
	if err := w.stop(60 * time.Second); err != nil {
		smp.Stop()
		return s, err
	}
	s.ShutdownMS = ms(time.Since(tTerm))
	tStart := time.Now()
	if err := w.start(); err != nil {
		smp.Stop()
		return s, err
	}
	if err := w.waitReady(ctx, 120*time.Second); err != nil {
		smp.Stop()
		return s, err
	}
	s.StartupMS = ms(time.Since(tStart))

	// The commits get the deadline too: under a large storm even an admin write waits its turn.
	wctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	type check struct {
		name      string
		tr        *tracker
		k         uint64
		committed time.Time
	}
	var checks []check
	number, _, committed, err := f.commitPolicy(wctx, fmt.Sprintf("storm-%d", gen))
	if err != nil {
		smp.Stop()
		return s, err
	}
	checks = append(checks, check{"policy", f.policy, number, committed})
	if staged, _, committed, err := f.rotateSecret(wctx); err == nil {
		checks = append(checks, check{"secrets", f.staged, staged, committed})
	} else {
		s.Error = err.Error()
	}
	if committed, err := f.setDatabaseCA(wctx, gen); err == nil {
		checks = append(checks, check{"credentials", f.creds, gen, committed})
	} else {
		s.Error = err.Error()
	}
	// Every change gets the full deadline to arrive, counted from the last commit.
	rctx, rcancel := context.WithTimeout(ctx, deadline)
	defer rcancel()
	var last time.Time
	for _, c := range checks {
		c.tr.wait(rctx, c.k, n, false)
		recv, _ := c.tr.take(c.k)
		ds, _ := since(tStart, recv)
		s.Checks = append(s.Checks, StormCheck{Stream: c.name, CommitAfterStartMS: ms(c.committed.Sub(tStart)), FromStart: summarize(ds), Missing: n - len(recv)})
		s.NotCurrent = max(s.NotCurrent, n-len(recv))
		if len(recv) > 0 {
			if m := slices.MaxFunc(recv, time.Time.Compare); m.After(last) {
				last = m
			}
		}
	}
	// A moment more so the sampler sees the tail of the reconnect work.
	pause(ctx, 500*time.Millisecond)
	smp.Stop()
	if !last.IsZero() {
		s.AllCurrentMS = ms(last.Sub(tStart))
		s.AllCurrentFromTermMS = ms(last.Sub(tTerm))
	}
	s.PeakCPUPercent = smp.PeakCPU
	s.PeakRSSKiB = smp.PeakRSS
	if hwm, err := hwmKiB(w.pid()); err == nil {
		s.PeakRSSKiB = max(s.PeakRSSKiB, hwm)
	}
	// Missing samples read as 0 (a failed scrape reports no handshakes at all).
	hs, _ := w.metrics(ctx, "warden_tls_handshakes_total{", `warden_tls_handshakes_total{resumed="true"}`)
	s.Handshakes, s.ResumedHandshakes = int64(hs[0]), int64(hs[1])
	s.Resubscriptions = f.reconnects.Load() - resub0
	s.Refusals = f.refused.Load() - refused0
	return s, nil
}
