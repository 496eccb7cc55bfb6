// Package bench is warden-bench: it runs wardend (a child process on an embedded etcd) under
// simulated agents with real mTLS identities and measures policy and secret fan-out against a bare
// gRPC baseline, certificate issuance against raw signing and raw etcd writes, memory per subscribed
// agent, a restart under load, and a real agent's time to its first credential. Everything is measured
// in one run on one machine, whose description is part of the report.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/wardend"
)

// Config selects what to run.
type Config struct {
	// Quick runs a small sweep in seconds (20 agents, one issuance setting, short loops).
	Quick bool
	// Agents is the fan-out sweep; the fleet grows from one size to the next.
	Agents []int
	// Conns is the connection count of the multiplexed baseline (0 skips it).
	Conns int
	// IssuanceClients are the concurrency settings of the issuance comparison.
	IssuanceClients []int
	// Storm restarts wardend under the largest fleet.
	Storm bool
	// Rounds per fan-out measurement; 0 picks 5 (3 in quick mode).
	Rounds int
	// BinDir holds wardend and warden-agent ($WARDEN_BIN); empty builds them.
	BinDir string
	// WorkDir is kept after the run when set (data dir, logs); empty uses a temporary one.
	WorkDir string
	// Self is the executable started as the baseline server (it must call ServeBaselineIfAsked
	// first); empty is os.Executable().
	Self string
	Log  *slog.Logger
}

// QuickConfig is what -quick runs.
func QuickConfig() Config {
	return Config{Quick: true, Agents: []int{20}, Conns: 4, IssuanceClients: []int{8}, Storm: true, Rounds: 3}
}

// FullConfig is the default sweep.
func FullConfig() Config {
	return Config{Agents: []int{100, 1000, 10000}, Conns: 8, IssuanceClients: []int{1, 8, 32}, Storm: true, Rounds: 5}
}

// Report is everything measured in one run.
type Report struct {
	Machine  Machine   `json:"machine"`
	Mode     string    `json:"mode"`
	Started  time.Time `json:"started"`
	Duration float64   `json:"duration_s"`
	// The open-file limit wardend actually ran with.
	WardendNoFile string `json:"wardend_rlimit_nofile"`

	Fanout          []FanoutRow      `json:"fanout"`
	Memory          Memory           `json:"memory"`
	Storm           *Storm           `json:"storm,omitempty"`
	FirstCredential *FirstCredential `json:"first_credential,omitempty"`
	IssuanceNodes   int              `json:"issuance_nodes"`
	Issuance        []Issuance       `json:"issuance"`
	OneNode         *OneNode         `json:"one_node_burst,omitempty"`
	// What limited the run, what was not measured and why.
	Notes []string `json:"notes"`
}

// FanoutRow is the fan-out to one fleet size.
type FanoutRow struct {
	Agents int `json:"agents"`
	// Register + bootstrap + connect + first snapshot on 3 streams, for the agents added at this size.
	SetupS float64 `json:"setup_s"`
	// 1-minute load average after the measurements of this size.
	Load1 float64 `json:"load1"`
	// During this size's changes: streams that broke and were re-subscribed, acks that failed and
	// were retried, and the last such error.
	Resubscriptions int64  `json:"resubscriptions"`
	AckRetries      int64  `json:"ack_retries"`
	LastError       string `json:"last_error,omitempty"`
	Policy          Change `json:"policy"`
	Secret          Change `json:"secret"`
	// Baseline: the same snapshot bytes pushed by a bare gRPC server to N streams, one TLS connection
	// per stream as the agents have; and the same streams over BaselineConns connections.
	Baseline      Dist `json:"baseline"`
	BaselineMux   Dist `json:"baseline_mux"`
	BaselineConns int  `json:"baseline_conns"`
	// The bare server's RSS growth per stream with one TLS connection each: what grpc-go alone costs
	// per connected client, the floor under wardend's memory per agent.
	BaselineRSSKiBPerConn float64 `json:"baseline_rss_kib_per_conn,omitempty"`
	// Warden policy receive / baseline receive.
	RatioP50      float64 `json:"ratio_p50"`
	RatioP99      float64 `json:"ratio_p99"`
	SnapshotBytes int     `json:"snapshot_bytes"`
}

// Change is one kind of change fanned out to every agent, pooled over rounds; latencies start when
// the commit RPC returned.
type Change struct {
	Rounds   int  `json:"rounds"`
	Commit   Dist `json:"commit_rpc"`
	Received Dist `json:"received"`
	Acked    Dist `json:"acked"`
	// Secret only: the staged version promoted and the ACTIVE state received by every agent.
	Active *Dist `json:"active,omitempty"`
	// Receipts that overtook the commit RPC's response (counted as 0 ms).
	Early int `json:"early"`
	// Agent-rounds that did not receive, or whose acknowledgement was not recorded, before the
	// round's deadline.
	Missing    int    `json:"missing"`
	MissingAck int    `json:"missing_ack"`
	Error      string `json:"error,omitempty"`
}

// Memory is wardend's footprint.
type Memory struct {
	// A few seconds after start: includes start-up garbage the runtime has not collected yet.
	StartRSSKiB  int64 `json:"start_rss_kib"`
	StartHeapKiB int64 `json:"start_heap_inuse_kib"`
	// Idle after the runtime's periodic forced GC (2 minutes without one) let the scavenger return
	// that garbage to the OS; the per-agent figures are relative to it. Full mode only.
	IdleRSSKiB  int64 `json:"idle_rss_kib,omitempty"`
	IdleHeapKiB int64 `json:"idle_heap_inuse_kib,omitempty"`
	// What the per-agent RSS is made of, idle: the heap the last GC found live, and goroutine stacks.
	IdleLiveHeapKiB  int64    `json:"idle_live_heap_kib,omitempty"`
	IdleStackKiB     int64    `json:"idle_stack_kib,omitempty"`
	IdleStackUsedKiB int64    `json:"idle_stack_used_kib,omitempty"`
	Rows             []MemRow `json:"rows"`
}

// MemRow is wardend with N agents subscribed on all three streams.
type MemRow struct {
	Agents  int   `json:"agents"`
	RSSKiB  int64 `json:"rss_kib"`
	HeapKiB int64 `json:"heap_inuse_kib"`
	// Relative to idle; not computed in quick mode, where idle is not measured.
	RSSKiBPerAgent  float64 `json:"rss_kib_per_agent"`
	HeapKiBPerAgent float64 `json:"heap_kib_per_agent"`
	// Relative to the previous fleet size: the marginal cost, free of start-up effects.
	MarginalRSSKiBPerAgent float64 `json:"marginal_rss_kib_per_agent,omitempty"`
	// The bench process itself (the simulated agents' side), for scale.
	BenchRSSKiB int64 `json:"bench_rss_kib"`
	// The heap the last GC found live and the goroutine stacks, each per agent relative to idle: what
	// an agent costs before the GC's headroom (the heap grows to twice the live heap between
	// collections) and memory the runtime has not returned to the OS yet. StackUsed is the part of the
	// stacks the last GC found in use: a stack is allocated in powers of two and only halved by a GC
	// that finds three quarters of it unused. Full mode only.
	LiveHeapKiBPerAgent  float64 `json:"live_heap_kib_per_agent,omitempty"`
	StackKiBPerAgent     float64 `json:"stack_kib_per_agent,omitempty"`
	StackUsedKiBPerAgent float64 `json:"stack_used_kib_per_agent,omitempty"`
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Run measures everything cfg asks for. A failure in one part is recorded as a note and the run goes
// on with the parts that do not depend on it; only a wardend that does not start is fatal.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 5
		if cfg.Quick {
			cfg.Rounds = 3
		}
	}
	agents := slices.Sorted(slices.Values(cfg.Agents))
	if len(agents) == 0 || agents[0] <= 0 {
		return nil, errors.New("bench: need at least one positive agent count")
	}
	rep := &Report{Mode: "full", Started: time.Now()}
	if cfg.Quick {
		rep.Mode = "quick"
	}
	log := cfg.Log
	// One socket per agent in each process (this one, wardend, the baseline server), plus headroom
	// for etcd, logs and the issuance connections.
	largest := agents[len(agents)-1]
	need := uint64(largest + 1024)
	if got, err := raiseNoFile(need); err != nil {
		rep.note("could not raise RLIMIT_NOFILE: %v", err)
	} else if got < need {
		rep.note("RLIMIT_NOFILE is %d (the hard limit), below the %d the largest fleet needs: expect connection failures there", got, need)
	}
	rep.Machine = describeMachine()
	log.Info("machine", "desc", rep.Machine.String())

	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "warden-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		work = d
	} else if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, err
	}
	wbin, abin, agentErr, err := binaries(ctx, cfg.BinDir, filepath.Join(work, "bin"), log)
	if err != nil {
		return nil, err
	}
	if agentErr != nil {
		rep.note("warden-agent unavailable (%v): time to first credential and agent RSS not measured", agentErr)
	}
	w, err := newWardend(wbin, filepath.Join(work, "data"), log)
	if err != nil {
		return nil, err
	}
	if err := w.start(); err != nil {
		return nil, err
	}
	defer func() { _ = w.stop(60 * time.Second) }()
	if err := w.waitReady(ctx, 120*time.Second); err != nil {
		return nil, err
	}
	rep.WardendNoFile = procNoFile(w.pid())
	log.Info("wardend ready", "addr", w.addr, "pid", w.pid(), "nofile", rep.WardendNoFile)

	settle := 3 * time.Second
	if cfg.Quick {
		settle = 500 * time.Millisecond
	}
	pause(ctx, settle)
	rep.Memory.StartRSSKiB, _ = rssKiB(w.pid())
	if h, err := w.heapInUse(ctx); err == nil {
		rep.Memory.StartHeapKiB = h / 1024
	}
	rep.Memory.IdleRSSKiB, rep.Memory.IdleHeapKiB = rep.Memory.StartRSSKiB, rep.Memory.StartHeapKiB
	if !cfg.Quick {
		log.Info("waiting for wardend's periodic GC to measure idle memory")
		pause(ctx, forcedGCWait)
		rep.Memory.IdleRSSKiB, _ = rssKiB(w.pid())
		if h, err := w.heapInUse(ctx); err == nil {
			rep.Memory.IdleHeapKiB = h / 1024
		}
		rep.Memory.IdleLiveHeapKiB, rep.Memory.IdleStackKiB, rep.Memory.IdleStackUsedKiB = w.liveHeapAndStacks(ctx)
	}

	f, err := newFleet(ctx, w.addr, wardend.AdminFilesIn(w.dataDir), "bench", log)
	if err != nil {
		return nil, err
	}
	defer f.close()

	if abin != "" {
		fc, err := f.firstCredential(ctx, abin, work, settle, 2*((cfg.Rounds+1)/2))
		if err != nil {
			rep.note("time to first credential: %v", err)
		} else {
			rep.FirstCredential = &fc
		}
	}

	reached := runFanout(ctx, cfg, rep, f, w, agents, settle)

	if cfg.Storm && reached > 0 {
		deadline := 60*time.Second + time.Duration(reached)*10*time.Millisecond
		st, err := storm(ctx, f, w, deadline)
		if err != nil {
			st.Error = err.Error()
			rep.note("reconnect storm: %v", err)
		}
		rep.Storm = &st
	}
	sample := f.sample.Load()
	f.closeAgents()

	runBaselines(ctx, cfg, rep, sample, filepath.Join(work, "baseline"))
	runIssuance(ctx, cfg, rep, f, w, filepath.Join(work, OneNodeDir))
	rep.Duration = time.Since(rep.Started).Seconds()
	rep.Machine.LoadEnd = load1()
	return rep, nil
}

// bigFleet and above get at most 3 rounds per change: 30,000 samples are plenty for a p99, and a
// round can take a minute there.
const bigFleet = 5000

// forcedGCWait outlasts the Go runtime's forced GC period (2 minutes), plus time for the scavenger.
const forcedGCWait = 135 * time.Second

// runFanout grows the fleet through the sweep and measures each size; it returns the largest size
// reached.
func runFanout(ctx context.Context, cfg Config, rep *Report, f *fleet, w *wardendProc, agents []int, settle time.Duration) int {
	reached := 0
	for _, n := range agents {
		log := cfg.Log.With("agents", n)
		log.Info("growing the fleet")
		took, err := f.grow(ctx, n)
		if err != nil {
			rep.note("fleet stopped at %d agents on the way to %d: %v", f.size(), n, err)
			break
		}
		reached = n
		row := FanoutRow{Agents: n, SetupS: took.Seconds()}
		log.Info("fleet subscribed", "setup", took)
		resub0, ack0 := f.reconnects.Load(), f.ackFailed.Load()
		f.setErr(nil)
		rounds := cfg.Rounds
		if n >= bigFleet {
			rounds = min(rounds, 3)
		}
		row.Policy = f.policyRounds(ctx, n, rounds)
		log.Info("policy fan-out", "received", row.Policy.Received, "acked", row.Policy.Acked)
		row.Secret = f.secretRounds(ctx, n, rounds)
		log.Info("secret fan-out", "received", row.Secret.Received, "acked", row.Secret.Acked)
		row.Load1 = load1()
		row.Resubscriptions, row.AckRetries = f.reconnects.Load()-resub0, f.ackFailed.Load()-ack0
		if err := f.err(); err != nil {
			row.LastError = err.Error()
		}
		rep.Fanout = append(rep.Fanout, row)

		pause(ctx, settle)
		m := MemRow{Agents: n, HeapKiB: -1}
		m.RSSKiB, _ = rssKiB(w.pid())
		if h, err := w.heapInUse(ctx); err == nil {
			m.HeapKiB = h / 1024
			if !cfg.Quick {
				m.HeapKiBPerAgent = float64(m.HeapKiB-rep.Memory.IdleHeapKiB) / float64(n)
			}
		} else {
			rep.note("wardend heap at %d agents not scraped: %v", n, err)
		}
		m.BenchRSSKiB, _ = rssKiB(os.Getpid())
		if !cfg.Quick {
			m.RSSKiBPerAgent = float64(m.RSSKiB-rep.Memory.IdleRSSKiB) / float64(n)
			live, stacks, used := w.liveHeapAndStacks(ctx)
			m.LiveHeapKiBPerAgent = float64(live-rep.Memory.IdleLiveHeapKiB) / float64(n)
			m.StackKiBPerAgent = float64(stacks-rep.Memory.IdleStackKiB) / float64(n)
			m.StackUsedKiBPerAgent = float64(used-rep.Memory.IdleStackUsedKiB) / float64(n)
		}
		if k := len(rep.Memory.Rows); k > 0 {
			prev := rep.Memory.Rows[k-1]
			m.MarginalRSSKiBPerAgent = float64(m.RSSKiB-prev.RSSKiB) / float64(n-prev.Agents)
		}
		rep.Memory.Rows = append(rep.Memory.Rows, m)
		log.Info("memory", "rss_kib", m.RSSKiB, "kib_per_agent", m.RSSKiBPerAgent)
		if ctx.Err() != nil {
			break
		}
	}
	return reached
}

// roundDeadline bounds the wait for one change to reach n agents.
func roundDeadline(n int) time.Duration { return 30*time.Second + time.Duration(n)*5*time.Millisecond }

func (f *fleet) policyRounds(ctx context.Context, n, rounds int) Change {
	var c Change
	var commit, recv, ack []time.Duration
	for r := range rounds {
		pause(ctx, 300*time.Millisecond)
		number, start, t0, err := f.commitPolicy(ctx, fmt.Sprintf("n%d-r%d-%d", n, r, time.Now().UnixNano()))
		if err != nil {
			c.Error = err.Error()
			break
		}
		c.Rounds++
		commit = append(commit, t0.Sub(start))
		wctx, cancel := context.WithTimeout(ctx, roundDeadline(n))
		f.policy.wait(wctx, number, n, true)
		cancel()
		rt, at := f.policy.take(number)
		c.Missing, c.MissingAck = c.Missing+n-len(rt), c.MissingAck+n-len(at)
		d, early := since(t0, rt)
		recv, c.Early = append(recv, d...), c.Early+early
		f.log.Debug("policy round", "agents", n, "round", r, "received", summarize(d))
		d, _ = since(t0, at)
		ack = append(ack, d...)
	}
	c.Commit, c.Received, c.Acked = summarize(commit), summarize(recv), summarize(ack)
	return c
}

func (f *fleet) secretRounds(ctx context.Context, n, rounds int) Change {
	var c Change
	var commit, recv, ack, active []time.Duration
	for r := range rounds {
		pause(ctx, 300*time.Millisecond)
		staged, start, t0, err := f.rotateSecret(ctx)
		if err != nil {
			c.Error = err.Error()
			break
		}
		c.Rounds++
		commit = append(commit, t0.Sub(start))
		wctx, cancel := context.WithTimeout(ctx, roundDeadline(n))
		f.staged.wait(wctx, staged, n, true)
		// Every agent acknowledged: the rotation promotes the version by itself.
		f.active.wait(wctx, staged, n, false)
		cancel()
		rt, at := f.staged.take(staged)
		act, _ := f.active.take(staged)
		c.Missing, c.MissingAck = c.Missing+n-len(rt), c.MissingAck+n-len(at)
		d, early := since(t0, rt)
		recv, c.Early = append(recv, d...), c.Early+early
		f.log.Debug("secret round", "agents", n, "round", r, "received", summarize(d))
		d, _ = since(t0, at)
		ack = append(ack, d...)
		d, _ = since(t0, act)
		active = append(active, d...)
	}
	c.Commit, c.Received, c.Acked = summarize(commit), summarize(recv), summarize(ack)
	a := summarize(active)
	c.Active = &a
	return c
}

func runBaselines(ctx context.Context, cfg Config, rep *Report, sample *policyv1.WatchPolicyResponse, dir string) {
	if sample == nil {
		rep.note("baseline not measured: no policy snapshot was received to replay")
		return
	}
	self := cfg.Self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			rep.note("baseline not measured: %v", err)
			return
		}
	}
	for i := range rep.Fanout {
		row := &rep.Fanout[i]
		row.SnapshotBytes = proto.Size(sample)
		b, err := runBaseline(ctx, self, dir, sample, row.Agents, 0, cfg.Rounds)
		if err != nil {
			rep.note("baseline at %d streams: %v", row.Agents, err)
			continue
		}
		row.Baseline, row.BaselineRSSKiBPerConn = b.recv, b.rssKiBPerStream
		row.RatioP50 = ratio(row.Policy.Received.P50, b.recv.P50)
		row.RatioP99 = ratio(row.Policy.Received.P99, b.recv.P99)
		if cfg.Conns > 0 && cfg.Conns < row.Agents {
			if m, err := runBaseline(ctx, self, dir, sample, row.Agents, cfg.Conns, cfg.Rounds); err == nil {
				row.BaselineMux, row.BaselineConns = m.recv, cfg.Conns
			} else {
				rep.note("multiplexed baseline at %d streams: %v", row.Agents, err)
			}
		}
	}
}

// OneNodeDir is where, under the work directory, the one-node burst writes its credentials.
const OneNodeDir = "one-node-certs"

func runIssuance(ctx context.Context, cfg Config, rep *Report, f *fleet, w *wardendProc, burstDir string) {
	nodes, dur, poolSize := 64, 4*time.Second, 40000
	if cfg.Quick {
		nodes, dur, poolSize = 8, 500*time.Millisecond, 3000
	}
	// One more node than the issuance clients use: the one-node burst starts with a full rate-limit
	// bucket, as a node renewing everything at once would.
	all, err := f.newIssuers(ctx, nodes+1)
	if err != nil {
		rep.note("issuance not measured: %v", err)
		return
	}
	defer closeIssuers(all)
	is, burstNode := all[:nodes], all[nodes]
	rep.IssuanceNodes = nodes
	pool, err := newCSRPool(f.td, poolSize)
	if err != nil {
		rep.note("issuance not measured: %v", err)
		return
	}
	for _, c := range cfg.IssuanceClients {
		pause(ctx, 500*time.Millisecond)
		r, err := issueThroughWardend(ctx, is, pool, c, dur)
		if err != nil {
			rep.note("issuance with %d clients: %v", c, err)
		}
		if pool.next.Load() >= int64(len(pool.csrs)) {
			rep.note("issuance with %d clients spent the pool of %d CSRs before %s", c, len(pool.csrs), dur)
		}
		if r.RawSignPerSec, err = rawSignRate(ctx, pool, c, dur); err != nil {
			rep.note("raw signing with %d clients: %v", c, err)
		}
		if r.RawPutPerSec, err = rawPutRate(ctx, w.dataDir, c, dur); err != nil {
			rep.note("raw etcd puts with %d clients: %v", c, err)
		}
		r.OfRawSign = ratio(r.PerSec, r.RawSignPerSec)
		rep.Issuance = append(rep.Issuance, r)
	}
	pause(ctx, 500*time.Millisecond)
	burst := 1000
	if cfg.Quick {
		burst = 100
	}
	one, err := oneNodeBurst(ctx, burstNode, pool, burst, 8, burstDir)
	if err != nil {
		rep.note("one-node burst: %v", err)
		return
	}
	rep.OneNode = &one
}
