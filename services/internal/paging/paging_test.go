package paging

import (
	"errors"
	"strings"
	"testing"

	"github.com/warden-sec/warden/services/internal/apierr"
)

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		in      int32
		want    int
		wantErr bool
	}{{0, 100, false}, {5, 5, false}, {5000, 1000, false}, {-1, 0, true}} {
		got, err := Size(tc.in, 100, 1000)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("Size(%d) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestAfter(t *testing.T) {
	good := Token("nodes/web-1")
	cases := map[string]struct {
		tok, prefix, want string
		ok                bool
	}{
		"first page":        {"", "nodes/", "", true},
		"round trip":        {good, "nodes/", "nodes/web-1", true},
		"other prefix":      {good, "certs/", "", false},
		"prefix itself":     {Token("nodes/"), "nodes/", "", false},
		"padding":           {good + "=", "nodes/", "", false},
		"line break inside": {good[:4] + "\n" + good[4:], "nodes/", "", false},
		"not base64":        {"%%%", "nodes/", "", false},
		"too long":          {Token("nodes/" + strings.Repeat("a", 2000)), "nodes/", "", false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := After(tc.tok, tc.prefix)
			if tc.ok != (err == nil) || got != tc.want {
				t.Fatalf("After = %q, %v; want %q ok=%v", got, err, tc.want, tc.ok)
			}
			var inv *apierr.Invalid
			if err != nil && (!errors.As(err, &inv) || inv.Field != "page_token") {
				t.Fatalf("error %v does not name page_token", err)
			}
		})
	}
}

func FuzzAfter(f *testing.F) {
	for _, s := range []string{"", Token("nodes/a"), Token("x"), "bm9kZXMvYQ", "bm9kZXMvYQ==", "\n"} {
		f.Add(s, "nodes/")
	}
	f.Fuzz(func(t *testing.T, tok, prefix string) {
		key, err := After(tok, prefix)
		if err != nil || tok == "" {
			return
		}
		if !strings.HasPrefix(key, prefix) || Token(key) != tok {
			t.Fatalf("accepted %q as %q under %q", tok, key, prefix)
		}
	})
}
