package identity

import "testing"

// FuzzIdentityParse checks that Parse never panics and that whatever it
// accepts is canonical: printing it gives back the input exactly.
func FuzzIdentityParse(f *testing.F) {
	for _, s := range []string{
		"spiffe://td/node/webapp/w1",
		"spiffe://td/node/coreapp/c-1.x_y",
		"spiffe://example.org/admin/alice",
		"spiffe://example.org/auditor/bob",
		"spiffe://example.org/controlplane/wardend",
		"spiffe://TD:1@x/admin/a?b#c",
		"spiffe://td/admin/%61",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("Parse(%q) accepted a non-canonical form of %q", s, id.String())
		}
		if id.URL().String() != s {
			t.Fatalf("URL() of %q prints as %q", s, id.URL().String())
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("Parse(%q) returned an ID that fails Validate: %v", s, err)
		}
	})
}
