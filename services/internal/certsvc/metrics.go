package certsvc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warden-sec/warden/services/internal/mirror"
)

// expiryCollector exports, per certificate kind, the seconds until the earliest expiry among the
// nodes' current, unrevoked certificates, and how many of them expire within each bucket. It reads the
// mirror at scrape time, so every replica reports the same value without a job of its own.
type expiryCollector struct {
	m       *mirror.Mirror
	now     func() time.Time
	desc    *prometheus.Desc
	buckets *prometheus.Desc
}

// expiryBuckets are upper bounds of the time left; "expired" and "later" complete them.
var expiryBuckets = []struct {
	name string
	left time.Duration
}{{"1d", 24 * time.Hour}, {"7d", 7 * 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}}

func newExpiryCollector(m *mirror.Mirror, now func() time.Time) *expiryCollector {
	return &expiryCollector{m: m, now: now,
		desc: prometheus.NewDesc("warden_cert_expiry_seconds",
			"Seconds until the earliest expiry among the current, unrevoked node certificates of a kind (negative once expired).",
			[]string{"kind"}, nil),
		buckets: prometheus.NewDesc("warden_certs_expiring",
			"Current, unrevoked node certificates by time left: expired, within 1d, 7d, 30d (each bucket excludes the shorter ones), later.",
			[]string{"kind", "within"}, nil),
	}
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.buckets }

func bucketOf(left time.Duration) string {
	if left <= 0 {
		return "expired"
	}
	for _, b := range expiryBuckets {
		if left <= b.left {
			return b.name
		}
	}
	return "later"
}

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	earliest := map[string]time.Time{}
	type key struct{ kind, bucket string }
	counts := map[key]int{}
	now := c.now()
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
		counts[key{rec.Kind, bucketOf(rec.NotAfter.Sub(now))}]++
	}
	for kind, t := range earliest {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, t.Sub(now).Seconds(), kind)
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.buckets, prometheus.GaugeValue, float64(n), k.kind, k.bucket)
	}
}

// phaseCollector exports the CA rotation phase (1 for the current phase), read at scrape time.
type phaseCollector struct {
	m    *mirror.Mirror
	desc *prometheus.Desc
}

func newPhaseCollector(m *mirror.Mirror) *phaseCollector {
	return &phaseCollector{m: m, desc: prometheus.NewDesc("warden_ca_rotation_phase",
		"1 for the CA rotation's current phase (stable, prepared, activated), 0 for the others.", []string{"phase"}, nil)}
}

func (c *phaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	kv, ok := c.m.Get(keyCAState)
	if !ok {
		return
	}
	st, err := decode[caState](kv)
	if err != nil {
		return
	}
	for _, p := range []string{phaseStable, phasePrepared, phaseActivated} {
		v := 0.0
		if st.Phase == p {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, p)
	}
}
