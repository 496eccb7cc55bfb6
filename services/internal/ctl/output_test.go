package ctl

import (
	"testing"
	"time"
)

func TestApproxDuration(t *testing.T) {
	cases := map[time.Duration]string{
		0:                                "0s",
		45 * time.Second:                 "45s",
		119 * time.Second:                "119s",
		5*time.Minute + 30*time.Second:   "5m30s",
		42 * time.Minute:                 "42m",
		time.Hour:                        "1h",
		90 * time.Minute:                 "1h30m",
		23 * time.Hour:                   "23h",
		6*24*time.Hour + 5*time.Hour:     "6d5h",
		30 * 24 * time.Hour:              "30d",
		3650 * 24 * time.Hour:            "10y",
		-(23*time.Hour + 20*time.Minute): "23h",
	}
	for d, want := range cases {
		if got := approxDuration(d); got != want {
			t.Errorf("approxDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestFmtDuration(t *testing.T) {
	cases := map[time.Duration]string{
		0:                            "0s",
		15 * time.Second:             "15s",
		1500 * time.Millisecond:      "1.5s",
		300 * time.Millisecond:       "300ms",
		90 * time.Minute:             "1h30m",
		720 * time.Hour:              "30d",
		-7200 * time.Millisecond:     "-7.2s",
		25*time.Hour + 1*time.Second: "1d1h1s",
	}
	for d, want := range cases {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"1h", now.Add(-time.Hour), true},
		{"2025-05-31T00:00:00Z", time.Date(2025, 5, 31, 0, 0, 0, 0, time.UTC), true},
		{"-1h", time.Time{}, false},
		{"yesterday", time.Time{}, false},
	}
	for _, tc := range cases {
		got, err := ParseSince(tc.in, now)
		if (err == nil) != tc.ok || (tc.ok && !got.Equal(tc.want)) {
			t.Errorf("ParseSince(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestAgentCommandQuotes(t *testing.T) {
	got := AgentCommand(2, "core-1", "[::1]:7443", "tok en'x", "ab")
	want := `warden-agent run --role coreapp --node-id core-1 --server [::1]:7443 --join-token 'tok en'\''x' --ca-fingerprint ab --data-dir /usr/local/waent/data`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
