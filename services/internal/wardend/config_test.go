package wardend

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// TestEveryFlagDocumented keeps the README's configuration reference true.
func TestEveryFlagDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("wardend", flag.ContinueOnError)
	c := Defaults()
	c.Flags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(readme), "`--"+f.Name+"`") {
			t.Errorf("flag --%s is not in README.md's wardend reference", f.Name)
		}
	})
}

func TestValidateRefusesBadSettings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"pprof without metrics listener", func(c *Config) { c.Pprof, c.MetricsListen = true, "" }, "--pprof"},
		{"zero rate limit", func(c *Config) { c.RateLimit = 0 }, "--rate-limit"},
		{"negative burst", func(c *Config) { c.RateBurst = -1 }, "--rate-burst"},
		{"no streams", func(c *Config) { c.MaxStreams = 0 }, "--max-streams"},
		{"unknown service", func(c *Config) { c.Services = []string{"cert", "dns"} }, "unknown service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid settings refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}
