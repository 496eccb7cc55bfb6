package ctl

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
)

func TestParseDocumentForms(t *testing.T) {
	verify := false
	want := &policyv1.PolicyDocument{
		Defaults: &policyv1.PolicySettings{Tls: &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_INTERMEDIATE}},
		Nodes:    map[string]*policyv1.PolicySettings{"web-1": {DbSsl: &policyv1.DBSSLSettings{Verify: &verify}}},
	}
	y, err := DocumentYAML(want)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, in string
	}{
		{"yaml round trip", string(y)},
		{"yaml with comments", "# policy version 2\n" + string(y)},
		{"json", `{"defaults":{"tls":{"profile":"TLS_PROFILE_INTERMEDIATE"}},"nodes":{"web-1":{"db_ssl":{"verify":false}}}}`},
		{"camelCase json", `{"defaults":{"tls":{"profile":2}},"nodes":{"web-1":{"dbSsl":{"verify":false}}}}`},
		{"get -o json output", `{"policy":{"number":"2","revision":"41","document":{"defaults":{"tls":{"profile":"TLS_PROFILE_INTERMEDIATE"}},"nodes":{"web-1":{"db_ssl":{"verify":false}}}}}}`},
		{"get -o yaml output", "policy:\n  number: \"2\"\n  document:\n    defaults:\n      tls:\n        profile: TLS_PROFILE_INTERMEDIATE\n    nodes:\n      web-1:\n        db_ssl:\n          verify: false\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDocument([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

func TestParseDocumentRejects(t *testing.T) {
	cases := map[string]string{
		"empty":         "",
		"comments only": "# nothing\n",
		"list":          "- a\n- b\n",
		"unknown field": "defaults:\n  tls:\n    profle: TLS_PROFILE_MODERN\n",
		"bad enum":      "defaults:\n  tls:\n    profile: TLS_PROFILE_ANCIENT\n",
		"not yaml":      "defaults: [\n",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseDocument([]byte(in)); err == nil {
				t.Fatal("accepted")
			} else if strings.Contains(err.Error(), "\n\n") {
				t.Errorf("odd error %q", err)
			}
		})
	}
}

func FuzzParseDocument(f *testing.F) {
	f.Add([]byte("defaults:\n  tls:\n    profile: TLS_PROFILE_MODERN\n"))
	f.Add([]byte(`{"policy":{"document":{"roles":{"webapp":{}}}}}`))
	f.Add([]byte(`{"document":{"nodes":{"a":{"network":{"zones":[{"name":"z","cidrs":["10.0.0.0/8"]}]}}}}}`))
	f.Add([]byte("&a [*a, *a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := ParseDocument(data)
		if err != nil {
			return
		}
		// Whatever parses must render back and parse to the same document.
		y, err := DocumentYAML(doc)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		again, err := ParseDocument(y)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", y, err)
		}
		if !proto.Equal(doc, again) {
			t.Fatalf("round trip changed the document: %v vs %v", doc, again)
		}
	})
}
