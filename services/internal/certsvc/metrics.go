package certsvc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sec/warden/services/internal/mirror"
)

// expiryCollector exports, per certificate kind, the seconds until the earliest expiry among the
// nodes' current, unrevoked certificates. It reads the mirror at scrape time, so every replica reports
// the same value without a job of its own.
type expiryCollector struct {
	m    *mirror.Mirror
	now  func() time.Time
	desc *prometheus.Desc
}

func newExpiryCollector(m *mirror.Mirror, now func() time.Time) *expiryCollector {
	return &expiryCollector{m: m, now: now, desc: prometheus.NewDesc("warden_cert_expiry_seconds",
		"Seconds until the earliest expiry among the current, unrevoked node certificates of a kind (negative once expired).",
		[]string{"kind"}, nil)}
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	earliest := map[string]time.Time{}
	for _, kv := range c.m.List(prefCurrent) {
		ckv, ok := c.m.Get(keyCert(string(kv.Value)))
		if !ok {
			continue
		}
		rec, err := decode[certRecord](ckv)
		if err != nil {
			continue
		}
		if _, revoked := c.m.Get(keyRevoked(rec.Serial)); revoked {
			continue
		}
		if t, ok := earliest[rec.Kind]; !ok || rec.NotAfter.Before(t) {
			earliest[rec.Kind] = rec.NotAfter
		}
	}
	now := c.now()
	for kind, t := range earliest {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, t.Sub(now).Seconds(), kind)
	}
}
