package dbssl

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	want := Settings{
		KeyPath:  "/usr/local/waent/data/certs/db-client.key",
		CertPath: "/usr/local/waent/data/certs/db-client.crt",
		CAPath:   "/usr/local/waent/data/certs/db-ca.crt",
		Verify:   true,
	}
	if got := Defaults(); got != want {
		t.Fatalf("Defaults() = %+v, want %+v", got, want)
	}
	errs, warnings := Validate(want)
	if len(errs) != 0 || len(warnings) != 0 {
		t.Errorf("defaults do not validate cleanly: errs %v, warnings %v", errs, warnings)
	}
}

func TestWebappEnv(t *testing.T) {
	tests := []struct {
		name string
		s    Settings
		want map[string]string
	}{
		{"defaults", Defaults(), map[string]string{
			"WA_DB_SSL_KEY":    "/usr/local/waent/data/certs/db-client.key",
			"WA_DB_SSL_CERT":   "/usr/local/waent/data/certs/db-client.crt",
			"WA_DB_SSL_CA":     "/usr/local/waent/data/certs/db-ca.crt",
			"WA_DB_SSL_VERIFY": "1",
		}},
		{"ca only, no verification", Settings{CAPath: "/usr/local/waent/data/certs/ca.pem"}, map[string]string{
			"WA_DB_SSL_CA":     "/usr/local/waent/data/certs/ca.pem",
			"WA_DB_SSL_VERIFY": "0",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.s.WebappEnv()
			if !maps.Equal(got, tt.want) {
				t.Errorf("WebappEnv() = %v, want %v", got, tt.want)
			}
			if ParseVerify(got[EnvVerify]) != tt.s.Verify {
				t.Errorf("the app would read WA_DB_SSL_VERIFY=%q as %v, want %v", got[EnvVerify], !tt.s.Verify, tt.s.Verify)
			}
		})
	}
}

func TestCoreappEnv(t *testing.T) {
	env, warnings := Defaults().CoreappEnv()
	want := map[string]string{
		"WA_DB_SSL_KEY":           "/usr/local/waent/data/certs/db-client.key",
		"WA_DB_SSL_CERT":          "/usr/local/waent/data/certs/db-client.crt",
		"WA_DB_SSL_CA":            "/usr/local/waent/data/certs/db-ca.crt",
		"WA_DB_CONNECTION_OPTION": `{"ssl":{"key":"/usr/local/waent/data/certs/db-client.key","cert":"/usr/local/waent/data/certs/db-client.crt","ca":"/usr/local/waent/data/certs/db-ca.crt","rejectUnauthorized":true}}`,
	}
	if !maps.Equal(env, want) {
		t.Errorf("CoreappEnv() = %v, want %v", env, want)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "deprecated") {
		t.Errorf("warnings = %v, want one deprecation warning", warnings)
	}
	if _, ok := env[EnvVerify]; ok {
		t.Error("WA_DB_SSL_VERIFY is Webapp-only but was rendered for the Coreapp")
	}
}

func TestParseVerify(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", true},
		{"1", true},
		{"0", false},
		{" 0 ", false},
		{"0\n", false},
		{"\t0", false},
		{"00", true},
		{"false", true},
		{"FALSE", true},
		{"no", true},
		{"off", true},
		{"-0", true},
		{"0.0", true},
		{"O", true},
	}
	for _, tt := range tests {
		if got := ParseVerify(tt.in); got != tt.want {
			t.Errorf("ParseVerify(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestImportConnectionOption(t *testing.T) {
	tests := []struct {
		name         string
		in           string
		want         Settings
		wantWarnings int
		wantErr      string
	}{
		{"rendered defaults", Defaults().ConnectionOption(), Defaults(), 0, ""},
		{"verification off", `{"ssl":{"ca":"/usr/local/waent/data/certs/db-ca.crt","rejectUnauthorized":false}}`,
			Settings{CAPath: "/usr/local/waent/data/certs/db-ca.crt"}, 0, ""},
		{"missing rejectUnauthorized means on", `{"ssl":{"ca":"/c"}}`, Settings{CAPath: "/c", Verify: true}, 0, ""},
		{"empty ssl object", ` {"ssl":{}} `, Settings{Verify: true}, 0, ""},
		{"unknown options warned", `{"connectTimeout":10,"ssl":{"ca":"/c","minVersion":"TLSv1.2","ciphers":["a"]}}`, Settings{CAPath: "/c", Verify: true}, 3, ""},
		{"empty", "  ", Settings{}, 0, "empty"},
		{"not json", "ssl=true", Settings{}, 0, "invalid"},
		{"not an object", `["ssl"]`, Settings{}, 0, "object"},
		{"no ssl", `{"host":"db"}`, Settings{}, 0, `no "ssl"`},
		{"ssl true", `{"ssl":true}`, Settings{}, 0, "object"},
		{"ssl profile name", `{"ssl":"Amazon RDS"}`, Settings{}, 0, "object"},
		{"key is not a string", `{"ssl":{"key":1}}`, Settings{}, 0, "ssl.key"},
		{"ca array", `{"ssl":{"ca":["/a","/b"]}}`, Settings{}, 0, "ssl.ca"},
		{"rejectUnauthorized as string", `{"ssl":{"rejectUnauthorized":"false"}}`, Settings{}, 0, "ssl.rejectUnauthorized"},
		{"repeated key", `{"ssl":{"rejectUnauthorized":true,"rejectUnauthorized":false}}`, Settings{}, 0, "repeated"},
		{"repeated ssl", `{"ssl":{},"ssl":{"rejectUnauthorized":false}}`, Settings{}, 0, "repeated"},
		{"case variant key is not ssl", `{"SSL":{"rejectUnauthorized":false}}`, Settings{}, 0, `no "ssl"`},
		{"trailing data", `{"ssl":{}} {"ssl":{}}`, Settings{}, 0, "after"},
		{"truncated", `{"ssl":{"ca":"/c"`, Settings{}, 0, "ssl"},
		{"too long", `{"ssl":{"ca":"` + strings.Repeat("a", maxConnectionOption) + `"}}`, Settings{}, 0, "longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings, err := ImportConnectionOption(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrConnectionOption) {
					t.Fatalf("error = %v, want one wrapping ErrConnectionOption containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got != tt.want || len(warnings) != tt.wantWarnings {
				t.Errorf("got %+v with warnings %v, want %+v with %d warnings", got, warnings, tt.want, tt.wantWarnings)
			}
		})
	}
}

func TestConnectionOptionRoundTrip(t *testing.T) {
	for _, s := range []Settings{
		Defaults(),
		{},
		{Verify: true},
		{CAPath: "/usr/local/waent/data/certs/ca.pem"},
		{KeyPath: `/certs/"quoted"\key`, CertPath: "/certs/<b>&c.crt", CAPath: "/certs/ünïcode ca.pem", Verify: false},
	} {
		rendered := s.ConnectionOption()
		if !json.Valid([]byte(rendered)) {
			t.Fatalf("rendered %q is not JSON", rendered)
		}
		got, warnings, err := ImportConnectionOption(rendered)
		if err != nil || got != s || len(warnings) != 0 {
			t.Errorf("import(render(%+v)) = %+v, %v, %v; want the same settings, no warnings", s, got, warnings, err)
		}
	}
}

func TestValidate(t *testing.T) {
	type want struct {
		field     string
		isError   bool
		downgrade bool
	}
	ok := want{}
	tests := []struct {
		name   string
		modify func(*Settings)
		want   want
	}{
		{"defaults", func(*Settings) {}, ok},
		{"no client certificate", func(s *Settings) { s.KeyPath, s.CertPath = "", "" }, ok},
		{"relative path", func(s *Settings) { s.CAPath = "certs/db-ca.crt" }, want{"ca_path", true, false}},
		{"traversal", func(s *Settings) { s.KeyPath = CertsDir + "/../../../../etc/shadow" }, want{"key_path", true, false}},
		{"trailing slash", func(s *Settings) { s.CertPath = CertsDir + "/db.crt/" }, want{"cert_path", true, false}},
		{"newline", func(s *Settings) { s.CAPath = CertsDir + "/ca.crt\nWA_DB_SSL_VERIFY=0" }, want{"ca_path", true, false}},
		{"nul", func(s *Settings) { s.KeyPath = CertsDir + "/k\x00" }, want{"key_path", true, false}},
		{"key without certificate", func(s *Settings) { s.CertPath = "" }, want{"cert_path", true, false}},
		{"outside certs dir", func(s *Settings) { s.CAPath = "/etc/ssl/certs/db-ca.pem" }, want{"ca_path", false, false}},
		{"certs dir prefix trick", func(s *Settings) { s.CAPath = CertsDir + "-evil/ca.pem" }, want{"ca_path", false, false}},
		{"no CA", func(s *Settings) { s.CAPath = "" }, want{"ca_path", false, false}},
		{"verification off", func(s *Settings) { s.Verify = false }, want{"verify", false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Defaults()
			tt.modify(&s)
			errs, warnings := Validate(s)
			if tt.want == ok {
				if len(errs) != 0 || len(warnings) != 0 {
					t.Fatalf("errs %v, warnings %v; want none", errs, warnings)
				}
				return
			}
			list := warnings
			if tt.want.isError {
				list = errs
			}
			for _, i := range list {
				if i.Field == tt.want.field && i.Downgrade == tt.want.downgrade {
					return
				}
			}
			t.Fatalf("want %+v; errs %v, warnings %v", tt.want, errs, warnings)
		})
	}
}

// FuzzImportConnectionOption checks that the importer never panics and that
// whatever it accepts renders back to a value importing to the same
// settings without warnings.
func FuzzImportConnectionOption(f *testing.F) {
	f.Add(Defaults().ConnectionOption())
	f.Add(`{"ssl":{"rejectUnauthorized":false}}`)
	f.Add(`{"ssl":{"ca":"/c","x":{"y":[1,2,{"z":null}]}},"host":"db"}`)
	f.Fuzz(func(t *testing.T, in string) {
		s, _, err := ImportConnectionOption(in)
		if err != nil {
			if !errors.Is(err, ErrConnectionOption) {
				t.Fatalf("error %v does not wrap ErrConnectionOption", err)
			}
			return
		}
		rendered := s.ConnectionOption()
		again, warnings, err := ImportConnectionOption(rendered)
		if err != nil || again != s || len(warnings) != 0 {
			t.Fatalf("round trip of %+v via %q gave %+v, %v, %v", s, rendered, again, warnings, err)
		}
		// Validate must cope with anything the importer accepts.
		Validate(s)
	})
}
