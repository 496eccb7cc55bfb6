// Package status is the running agent's report on itself: a JSON file the agent rewrites atomically in
// <data-dir>/.warden-agent/status.json whenever something changes (and every few seconds, so its age
// shows the agent is alive), and the `warden-agent status` rendering of it.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/warden-sec/warden/services/internal/agent/materialize"
)

// FileName is the status file inside the agent's state directory.
const FileName = "status.json"

// Stream names.
const (
	StreamCredentials = "credentials"
	StreamSecrets     = "secrets"
	StreamPolicy      = "policy"
	StreamPeers       = "peers"
)

// Status is what the agent reports.
type Status struct {
	Role        string    `json:"role"`
	NodeID      string    `json:"node_id"`
	TrustDomain string    `json:"trust_domain,omitempty"`
	PID         int       `json:"pid"`
	Servers     []string  `json:"servers"`
	StartedAt   time.Time `json:"started_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// Server is the control-plane address of the last snapshot or ack.
	Server string `json:"server,omitempty"`
	// LastContact is when the control plane last answered.
	LastContact time.Time `json:"last_contact,omitzero"`
	// FromCache is true when the agent started from its cache and has not heard from the control plane since.
	FromCache bool `json:"from_cache,omitempty"`
	// Skew is the agent's clock minus the control plane's (positive: the agent is ahead).
	Skew time.Duration `json:"skew_ns"`
	// RTT is the round trip of the last ack.
	RTT                 time.Duration      `json:"rtt_ns"`
	Streams             map[string]*Stream `json:"streams"`
	Certs               []Cert             `json:"certs"`
	TrustedFingerprints []string           `json:"trusted_fingerprints,omitempty"`
	PolicyNumber        uint64             `json:"policy_number,omitempty"`
	TLSProfile          string             `json:"tls_profile,omitempty"`
	Secrets             []Secret           `json:"secrets,omitempty"`
	Mesh                *Mesh              `json:"mesh,omitempty"`
	Fronts              []Front            `json:"fronts,omitempty"`
	// Warnings are conditions an operator should look at; Errors are failures happening now.
	Warnings []string `json:"warnings,omitempty"`
	Errors   []string `json:"errors,omitempty"`
}

// Stream is one Watch stream.
type Stream struct {
	Connected bool `json:"connected"`
	// Version is the snapshot version last applied.
	Version      int64     `json:"version"`
	AppliedAt    time.Time `json:"applied_at,omitzero"`
	LastMessage  time.Time `json:"last_message,omitzero"`
	AckedVersion int64     `json:"acked_version"`
	Error        string    `json:"error,omitempty"`
}

// Cert is one certificate on disk.
type Cert struct {
	Kind      string    `json:"kind"`
	File      string    `json:"file"`
	Serial    string    `json:"serial"`
	Issuer    string    `json:"issuer"`
	NotAfter  time.Time `json:"not_after"`
	RenewAt   time.Time `json:"renew_at,omitzero"`
	External  bool      `json:"external,omitempty"`
	Error     string    `json:"error,omitempty"`
	NotBefore time.Time `json:"not_before"`
}

// Secret is one secret's versions the node holds.
type Secret struct {
	Name     string          `json:"name"`
	Versions []SecretVersion `json:"versions"`
}

// SecretVersion is one held version.
type SecretVersion struct {
	Number uint64 `json:"number"`
	State  string `json:"state"`
}

// Mesh is the Coreapp's view of the Multiconnect mesh.
type Mesh struct {
	ControlAddress string `json:"control_address"`
	Master         string `json:"master,omitempty"`
	Shards         uint32 `json:"shards,omitempty"`
	Peers          []Peer `json:"peers"`
}

// Peer is one probed peer.
type Peer struct {
	NodeID    string        `json:"node_id"`
	Address   string        `json:"address"`
	Reachable bool          `json:"reachable"`
	RTT       time.Duration `json:"rtt_ns"`
	Error     string        `json:"error,omitempty"`
	ProbedAt  time.Time     `json:"probed_at,omitzero"`
}

// Front is one listener the agent serves.
type Front struct {
	Name   string `json:"name"`
	Listen string `json:"listen"`
	Error  string `json:"error,omitempty"`
}

// Path is the status file of the agent whose data directory is dataDir.
func Path(dataDir string) string {
	return filepath.Join(StateDir(dataDir), FileName)
}

// StateDir is the agent's private directory (cache and status) under dataDir.
func StateDir(dataDir string) string {
	return filepath.Join(dataDir, ".warden-agent")
}

// Read loads the status file.
func Read(dataDir string) (*Status, error) {
	raw, err := os.ReadFile(Path(dataDir))
	if err != nil {
		return nil, fmt.Errorf("read agent status: %w", err)
	}
	var s Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", Path(dataDir), err)
	}
	return &s, nil
}

// Tracker holds the live status and writes it out. Safe for concurrent use.
type Tracker struct {
	path  string
	mu    sync.Mutex
	s     Status
	dirty chan struct{}
	now   func() time.Time
}

// NewTracker starts a status for the agent writing under dataDir.
func NewTracker(dataDir string, initial Status) *Tracker {
	if initial.Streams == nil {
		initial.Streams = map[string]*Stream{}
	}
	return &Tracker{path: Path(dataDir), s: initial, dirty: make(chan struct{}, 1), now: time.Now}
}

// Update changes the status under the lock and schedules a write.
func (t *Tracker) Update(fn func(*Status)) {
	t.mu.Lock()
	fn(&t.s)
	t.mu.Unlock()
	select {
	case t.dirty <- struct{}{}:
	default:
	}
}

// Stream changes one stream's entry.
func (t *Tracker) Stream(name string, fn func(*Stream)) {
	t.Update(func(s *Status) {
		st := s.Streams[name]
		if st == nil {
			st = &Stream{}
			s.Streams[name] = st
		}
		fn(st)
	})
}

// SetError records (or with "" clears) the error of a named component.
func (t *Tracker) SetError(component, msg string) {
	t.Update(func(s *Status) {
		prefix := component + ": "
		s.Errors = slices.DeleteFunc(s.Errors, func(e string) bool { return strings.HasPrefix(e, prefix) })
		if msg != "" {
			s.Errors = append(s.Errors, prefix+msg)
		}
	})
}

// SetWarning records (or with "" clears) the warning of a named component.
func (t *Tracker) SetWarning(component, msg string) {
	t.Update(func(s *Status) {
		prefix := component + ": "
		s.Warnings = slices.DeleteFunc(s.Warnings, func(e string) bool { return strings.HasPrefix(e, prefix) })
		if msg != "" {
			s.Warnings = append(s.Warnings, prefix+msg)
		}
	})
}

// Snapshot returns a deep copy of the status.
func (t *Tracker) Snapshot() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	raw, _ := json.Marshal(t.s)
	var out Status
	_ = json.Unmarshal(raw, &out)
	return out
}

// Write writes the status file now.
func (t *Tracker) Write() error {
	t.mu.Lock()
	t.s.UpdatedAt = t.now().UTC()
	raw, err := json.MarshalIndent(t.s, "", "  ")
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(t.path), 0o700); err != nil {
		return fmt.Errorf("status directory: %w", err)
	}
	return materialize.WriteFile(t.path, append(raw, '\n'), 0o600)
}

// Run writes the file on every change (at most every 200 ms) and at least every interval, until ctx is
// done; it writes once more on the way out.
func (t *Tracker) Run(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = t.Write()
			return nil
		case <-t.dirty:
		case <-tick.C:
		}
		_ = t.Write()
		select {
		case <-ctx.Done():
			_ = t.Write()
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Staleness is how long the agent has not heard from the control plane at now; zero if it never did
// and has nothing (see Render for how that is shown).
func (s *Status) Staleness(now time.Time) time.Duration {
	if s.LastContact.IsZero() {
		return 0
	}
	return now.Sub(s.LastContact)
}

// Render prints a readable summary as of now.
func Render(w io.Writer, s *Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	p("node:\t%s (%s)\ttrust domain %s", s.NodeID, s.Role, orDash(s.TrustDomain))
	p("agent:\tpid %d, started %s, status written %s ago", s.PID, s.StartedAt.Format(time.RFC3339), round(now.Sub(s.UpdatedAt)))
	p("servers:\t%s", strings.Join(s.Servers, ", "))
	switch {
	case s.LastContact.IsZero() && s.FromCache:
		p("control plane:\tnot reached since start; serving from cache")
	case s.LastContact.IsZero():
		p("control plane:\tnever reached")
	default:
		stale := ""
		if s.FromCache {
			stale = " (serving from cache)"
		}
		p("control plane:\t%s, last contact %s ago%s", orDash(s.Server), round(s.Staleness(now)), stale)
	}
	p("clock skew:\t%s (rtt %s)", s.Skew.Round(time.Millisecond), s.RTT.Round(time.Millisecond))
	names := make([]string, 0, len(s.Streams))
	for n := range s.Streams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st := s.Streams[n]
		state := "disconnected"
		if st.Connected {
			state = "connected"
		}
		line := fmt.Sprintf("stream %s:\t%s, version %d applied %s, acked %d", n, state, st.Version, ago(now, st.AppliedAt), st.AckedVersion)
		if st.Error != "" {
			line += ", error: " + st.Error
		}
		p("%s", line)
	}
	if s.PolicyNumber > 0 {
		p("policy:\tversion %d, TLS profile %s", s.PolicyNumber, orDash(s.TLSProfile))
	}
	for _, c := range s.Certs {
		line := fmt.Sprintf("cert %s:\tserial %s, expires %s (in %s)", c.Kind, c.Serial, c.NotAfter.Format(time.RFC3339), round(c.NotAfter.Sub(now)))
		if !c.RenewAt.IsZero() {
			line += ", renews " + c.RenewAt.Format(time.RFC3339)
		}
		if c.External {
			line += ", external"
		}
		if c.Error != "" {
			line += ", error: " + c.Error
		}
		p("%s", line)
	}
	if len(s.TrustedFingerprints) > 0 {
		p("trust bundle:\t%d CA(s): %s", len(s.TrustedFingerprints), strings.Join(short(s.TrustedFingerprints), ", "))
	}
	for _, sec := range s.Secrets {
		var vs []string
		for _, v := range sec.Versions {
			vs = append(vs, fmt.Sprintf("v%d %s", v.Number, v.State))
		}
		p("secret %s:\t%s", sec.Name, strings.Join(vs, ", "))
	}
	if s.Mesh != nil {
		p("mesh:\tcontrol %s, master %s, shards %d", s.Mesh.ControlAddress, orDash(s.Mesh.Master), s.Mesh.Shards)
		for _, pr := range s.Mesh.Peers {
			state := "reachable, rtt " + pr.RTT.Round(time.Microsecond).String()
			if !pr.Reachable {
				state = "UNREACHABLE: " + orDash(pr.Error)
			}
			p("  peer %s:\t%s %s", pr.NodeID, pr.Address, state)
		}
	}
	for _, f := range s.Fronts {
		line := fmt.Sprintf("front %s:\t%s", f.Name, f.Listen)
		if f.Error != "" {
			line += ", error: " + f.Error
		}
		p("%s", line)
	}
	for _, m := range s.Warnings {
		p("WARNING:\t%s", m)
	}
	for _, m := range s.Errors {
		p("ERROR:\t%s", m)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func round(d time.Duration) time.Duration {
	if d < time.Hour {
		return d.Round(time.Second)
	}
	return d.Round(time.Minute)
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return round(now.Sub(t)).String() + " ago"
}

func short(fps []string) []string {
	out := make([]string, len(fps))
	for i, f := range fps {
		if len(f) > 16 {
			f = f[:16] + "…"
		}
		out[i] = f
	}
	return out
}
