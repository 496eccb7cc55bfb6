package materialize

import (
	"maps"
	"strings"
	"testing"
)

func TestRenderEnvRoundTrip(t *testing.T) {
	vars := map[string]string{
		"WA_SECRET":                "c2VjcmV0/+=",
		"WA_DB_SSL_KEY":            "/usr/local/waent/data/certs/db.key",
		"WA_DB_CONNECTION_OPTION":  `sslmode=verify-full sslrootcert="/x y/ca.pem"`,
		"WA_WEB_SECURITY_LEVEL":    "2",
		"EMPTY":                    "",
		"_UNDERSCORE_1":            "a=b=c # not a comment",
		"WA_DB_SSL_VERIFY":         "true",
		"WITH_INNER_SPACE_AND_TAB": "a b\tc",
	}
	data, err := RenderEnv(vars)
	if err != nil {
		t.Fatalf("RenderEnv: %v", err)
	}
	got, err := ParseEnv(data)
	if err != nil {
		t.Fatalf("ParseEnv: %v\n%s", err, data)
	}
	if !maps.Equal(got, vars) {
		t.Errorf("round trip = %v, want %v", got, vars)
	}
}

func TestRenderEnvFormat(t *testing.T) {
	data, err := RenderEnv(map[string]string{"WA_SECRET": "s", "A": "1", "WA_B": "x y"})
	if err != nil {
		t.Fatalf("RenderEnv: %v", err)
	}
	want := envHeader + "A=1\nWA_B=x y\nWA_SECRET=s\n"
	if string(data) != want {
		t.Errorf("RenderEnv =\n%s\nwant\n%s", data, want)
	}
}

func TestRenderEnvRejects(t *testing.T) {
	for _, tc := range []struct {
		name, key, value string
	}{
		{"lower-case key", "wa_secret", "x"},
		{"key starts with digit", "1WA", "x"},
		{"key with dash", "WA-SECRET", "x"},
		{"key with equals", "WA=X", "x"},
		{"empty key", "", "x"},
		{"newline", "WA_SECRET", "a\nB=c"},
		{"carriage return", "WA_SECRET", "a\r"},
		{"nul", "WA_SECRET", "a\x00b"},
		{"backslash", "WA_SECRET", `a\nb`},
		{"leading space", "WA_SECRET", " a"},
		{"trailing tab", "WA_SECRET", "a\t"},
		{"double quote first", "WA_SECRET", `"a"`},
		{"single quote first", "WA_SECRET", `'a'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RenderEnv(map[string]string{"OK": "fine", tc.key: tc.value})
			if err == nil {
				t.Fatalf("RenderEnv(%q=%q) succeeded, want an error", tc.key, tc.value)
			}
			if tc.value != "x" && len(tc.value) > 2 && strings.Contains(err.Error(), tc.value) {
				t.Errorf("error %q reveals the value", err)
			}
		})
	}
}

func TestParseEnvRejects(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"no equals", "WA_SECRET\n"},
		{"bad key", "wa=1\n"},
		{"duplicate", "A=1\nA=2\n"},
		{"leading space in value", "A= 1\n"},
		{"carriage return", "A=1\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := ParseEnv([]byte(tc.data)); err == nil {
				t.Errorf("ParseEnv(%q) = %v, want an error", tc.data, got)
			}
		})
	}
}

func TestParseEnvSkipsCommentsAndBlankLines(t *testing.T) {
	got, err := ParseEnv([]byte("# header\n\nA=1\n#B=2\nC=\n"))
	if err != nil {
		t.Fatalf("ParseEnv: %v", err)
	}
	if want := map[string]string{"A": "1", "C": ""}; !maps.Equal(got, want) {
		t.Errorf("ParseEnv = %v, want %v", got, want)
	}
}
