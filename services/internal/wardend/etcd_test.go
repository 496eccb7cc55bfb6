package wardend

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/warden-sec/warden/services/internal/cliconfig"
)

func TestExternalEtcdRefusesPlaintextRemote(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cases := []struct {
		name      string
		endpoints cliconfig.List
		allow     bool
		wantErr   string
		wantTLS   bool
	}{
		{"https remote", cliconfig.List{"https://etcd-0.example:2379"}, false, "", true},
		{"plaintext loopback", cliconfig.List{"http://127.0.0.1:2379", "http://localhost:2379"}, false, "", false},
		{"plaintext remote refused", cliconfig.List{"http://10.0.0.4:2379"}, false, "plaintext and not on loopback", false},
		{"plaintext remote allowed explicitly", cliconfig.List{"http://10.0.0.4:2379"}, true, "", false},
		{"not a URL", cliconfig.List{"etcd-0:2379"}, false, "is not an http(s)://host:port URL", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.EtcdEndpoints, cfg.EtcdAllowPlaintext = tc.endpoints, tc.allow
			ccfg, err := externalEtcd(&cfg, log)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (ccfg.TLS != nil) != tc.wantTLS {
				t.Fatalf("TLS configured = %v, want %v", ccfg.TLS != nil, tc.wantTLS)
			}
		})
	}
}
