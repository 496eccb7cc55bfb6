package secretsvc

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exposes the rotation state and the nodes' clock skew from the mirrors at scrape time, so
// every replica reports the same values whichever one received an acknowledgement.
type collector struct {
	s       *Service
	skew    *prometheus.Desc
	phase   *prometheus.Desc
	active  *prometheus.Desc
	pending *prometheus.Desc
}

// Rotation phases of warden_secret_rotation_phase.
var phases = []string{"stable", "staged", "stuck"}

func newCollector(s *Service) *collector {
	return &collector{
		s: s,
		skew: prometheus.NewDesc("warden_node_clock_skew_seconds",
			"Node clock minus control-plane clock, measured at the last acknowledgement that carried the agent's time.",
			[]string{"node"}, nil),
		phase: prometheus.NewDesc("warden_secret_rotation_phase",
			"1 for the secret's current rotation phase: stable (nothing staged), staged (waiting for acknowledgements), stuck (past the rotation timeout with nodes pending).",
			[]string{"secret", "phase"}, nil),
		active: prometheus.NewDesc("warden_secret_active_version",
			"Number of the secret's active version.", []string{"secret"}, nil),
		pending: prometheus.NewDesc("warden_secret_rotation_pending_nodes",
			"In-scope nodes that have not acknowledged the staged version.", []string{"secret"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.skew
	ch <- c.phase
	ch <- c.active
	ch <- c.pending
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, kv := range c.s.acks.List(prefAcks) {
		a, err := decode[ackRecord](kv)
		if err != nil || a.SkewAt.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.skew, prometheus.GaugeValue, a.Skew.Seconds(), strings.TrimPrefix(kv.Key, prefAcks))
	}
	for _, kv := range c.s.metas() {
		rec, err := decode[secretRecord](kv)
		if err != nil {
			continue
		}
		st := c.s.rotationStatus(&rec)
		current := "stable"
		switch {
		case st.stuck:
			current = "stuck"
		case st.staged != 0:
			current = "staged"
		}
		for _, p := range phases {
			v := 0.0
			if p == current {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, v, rec.Name, p)
		}
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(st.active), rec.Name)
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(len(st.pending)), rec.Name)
	}
}
