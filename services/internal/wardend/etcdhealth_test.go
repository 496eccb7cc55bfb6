package wardend

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// TestEtcdHealthNeedsTwoFailures runs the probe over scripted outcomes (ok "." or failed "x") and
// checks which transitions each service sees: a single slow or failed read between good ones never
// takes the replica out of rotation, two in a row do, and the first good read brings it back.
func TestEtcdHealthNeedsTwoFailures(t *testing.T) {
	cases := []struct {
		probes string
		want   []bool // the transitions reported, in order
	}{
		{"....", nil},
		{".x.x.x", nil},
		{".xx.", []bool{false, true}},
		{"xx", []bool{false}},
		{"x.xxx..xx", []bool{false, true, false}},
	}
	for _, tc := range cases {
		t.Run(tc.probes, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			n := 0
			ping := func(context.Context) error {
				if n == len(tc.probes) {
					cancel()
					return ctx.Err()
				}
				n++
				if tc.probes[n-1] == 'x' {
					return errors.New("context deadline exceeded")
				}
				return nil
			}
			got := map[string][]bool{}
			set := func(service string, serving bool) { got[service] = append(got[service], serving) }
			if err := watchEtcdHealth(ctx, ping, time.Millisecond, []string{"warden.cert.v1.CertService"}, set, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
				t.Fatal(err)
			}
			for _, service := range []string{"", "warden.cert.v1.CertService"} {
				if !slices.Equal(got[service], tc.want) {
					t.Errorf("service %q saw %v, want %v", service, got[service], tc.want)
				}
			}
			if n != len(tc.probes) {
				t.Errorf("probed %d times, want %d", n, len(tc.probes))
			}
		})
	}
}
