package bench

import (
	"slices"
	"time"
)

// Dist summarises a set of latencies. Durations are reported in milliseconds so the JSON output is
// directly comparable with the goals, which are stated in ms.
type Dist struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize uses the nearest-rank method: p99 of 100 samples is the 99th smallest, so with few
// samples p99 equals max rather than an interpolation between two real observations.
func summarize(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Dist{Count: len(s), P50: ms(rank(0.50)), P99: ms(rank(0.99)), Max: ms(s[len(s)-1])}
}

// since turns absolute receive times into latencies from t0. An event observed before t0 (a push that
// overtook the commit RPC's own response) counts as zero: it cannot have been faster than the commit.
func since(t0 time.Time, ts []time.Time) (ds []time.Duration, early int) {
	ds = make([]time.Duration, len(ts))
	for i, t := range ts {
		d := t.Sub(t0)
		if d < 0 {
			d, early = 0, early+1
		}
		ds[i] = d
	}
	return ds, early
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}
