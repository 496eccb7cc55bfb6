package bench

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
)

func TestMain(m *testing.M) {
	ServeBaselineIfAsked()
	os.Exit(m.Run())
}

// TestQuick runs warden-bench -quick end to end against a real wardend child process, so the bench
// keeps working as the services change. It checks that every part produced figures and that no agent
// missed a change or gave up, never how fast anything was.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wardend and a real agent as processes")
	}
	cfg := QuickConfig()
	cfg.BinDir = os.Getenv("WARDEN_BIN")
	cfg.Log = etcdtest.Logger(t)
	cfg.WorkDir = t.TempDir()
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var out strings.Builder
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())

	if len(rep.Fanout) != 1 {
		t.Fatalf("fan-out rows = %d, want 1 (notes: %v)", len(rep.Fanout), rep.Notes)
	}
	row := rep.Fanout[0]
	for name, c := range map[string]Change{"policy": row.Policy, "secret": row.Secret} {
		if c.Error != "" || c.Missing != 0 || c.MissingAck != 0 || c.Received.Count != cfg.Rounds*cfg.Agents[0] || c.Acked.Count != cfg.Rounds*cfg.Agents[0] {
			t.Errorf("%s fan-out: %+v, want %d receipts and acks, none missing", name, c, cfg.Rounds*cfg.Agents[0])
		}
	}
	if row.Baseline.Count == 0 || row.RatioP50 == 0 {
		t.Errorf("baseline not measured: %+v", row)
	}
	if m := rep.Memory; m.IdleRSSKiB == 0 || len(m.Rows) != 1 || m.Rows[0].RSSKiB == 0 {
		t.Errorf("memory: %+v", m)
	}
	if s := rep.Storm; s == nil || s.Error != "" || s.Refusals != 0 || s.NotCurrent != 0 || len(s.Checks) != 3 {
		t.Errorf("storm: %+v", s)
	} else if s.ResumedHandshakes < int64(s.Agents) {
		// Every agent's reconnection to the restarted process resumes the session of the old one.
		t.Errorf("storm: %d of %d TLS handshakes resumed, want at least one per agent (%d)", s.ResumedHandshakes, s.Handshakes, s.Agents)
	}
	if c := rep.FirstCredential; c == nil || c.AgentMS == 0 || c.AgentRSSKiB == 0 || c.Error != "" {
		t.Errorf("first credential: %+v (notes: %v)", c, rep.Notes)
	}
	if len(rep.Issuance) != 1 || rep.Issuance[0].Issued == 0 || rep.Issuance[0].RawSignPerSec == 0 || rep.Issuance[0].RawPutPerSec == 0 {
		t.Errorf("issuance: %+v", rep.Issuance)
	}
	if rep.OneNode == nil {
		t.Errorf("one-node burst not measured (notes: %v)", rep.Notes)
	} else {
		checkBurstFiles(t, filepath.Join(cfg.WorkDir, OneNodeDir), rep.OneNode)
	}
	if len(rep.Notes) > 0 {
		t.Errorf("notes (something was not measured): %v", rep.Notes)
	}
}

// checkBurstFiles checks that every credential the one-node burst counted is on disk as a key only its
// owner can read and a certificate for that key naming the burst's node.
func checkBurstFiles(t *testing.T, dir string, o *OneNode) {
	t.Helper()
	if o.OnDisk != o.Certs {
		t.Errorf("one-node burst: %d of %d credentials on disk", o.OnDisk, o.Certs)
	}
	for i := range o.OnDisk {
		keyName, certName := burstFiles(i)
		fi, err := os.Stat(filepath.Join(dir, keyName))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", keyName, fi.Mode().Perm())
		}
		certPEM, err := os.ReadFile(filepath.Join(dir, certName))
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, err := os.ReadFile(filepath.Join(dir, keyName))
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatalf("credential %d: %v", i, err)
		}
		if id := pair.Leaf.URIs; len(id) != 1 || !strings.HasSuffix(id[0].Path, "/"+o.Node) {
			t.Errorf("credential %d: URI SANs %v, want the burst node's identity", i, id)
		}
	}
}

func TestSummarize(t *testing.T) {
	seq := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[n-1-i] = time.Duration(i+1) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		want Dist
	}{
		{"empty", nil, Dist{}},
		{"one", seq(1), Dist{Count: 1, P50: 1, P99: 1, Max: 1}},
		{"hundred", seq(100), Dist{Count: 100, P50: 50, P99: 99, Max: 100}},
		{"thousand", seq(1000), Dist{Count: 1000, P50: 500, P99: 990, Max: 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := summarize(tc.in); got != tc.want {
				t.Errorf("summarize = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSinceClampsEarlyEvents(t *testing.T) {
	t0 := time.Now()
	ds, early := since(t0, []time.Time{t0.Add(-time.Millisecond), t0.Add(3 * time.Millisecond)})
	if early != 1 || ds[0] != 0 || ds[1] != 3*time.Millisecond {
		t.Errorf("since = %v, %d early; want [0 3ms], 1 early", ds, early)
	}
}

func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	if r, err := rssKiB(pid); err != nil || r <= 0 {
		t.Errorf("rssKiB = %d, %v", r, err)
	}
	if _, err := cpuTicks(pid); err != nil {
		t.Errorf("cpuTicks: %v", err)
	}
	if m := describeMachine(); m.Cores <= 0 || m.CPU == "" || m.RAMMiB <= 0 {
		t.Errorf("describeMachine = %+v", m)
	}
}
