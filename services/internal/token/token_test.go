package token

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

var tokenPattern = regexp.MustCompile(`^w[jb]t_[A-Za-z0-9_-]{43}$`)

func mustNew(t testing.TB, prefix string) Token {
	t.Helper()
	tok, err := New(prefix)
	if err != nil {
		t.Fatalf("New(%q): %v", prefix, err)
	}
	return tok
}

func TestNewAndParse(t *testing.T) {
	for _, prefix := range []string{JoinPrefix, BearerPrefix} {
		t.Run(prefix, func(t *testing.T) {
			tok := mustNew(t, prefix)
			if !tokenPattern.MatchString(tok.Value()) || !strings.HasPrefix(tok.Value(), prefix) {
				t.Fatalf("New produced %q, which does not look like a %s token", tok.Value(), prefix)
			}
			if tok.Prefix() != prefix {
				t.Fatalf("Prefix = %q, want %q", tok.Prefix(), prefix)
			}
			parsed, err := Parse(tok.Value(), prefix)
			if err != nil {
				t.Fatalf("Parse(New()): %v", err)
			}
			if parsed != tok {
				t.Fatal("Parse(New().Value()) differs from New()")
			}
			if parsed.Hash() != Hash(tok.Value()) {
				t.Fatal("Token.Hash differs from Hash(Value)")
			}
		})
	}
}

func TestNewIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		v := mustNew(t, BearerPrefix).Value()
		if seen[v] {
			t.Fatalf("New returned %q twice", v)
		}
		seen[v] = true
	}
}

func TestParseRejects(t *testing.T) {
	valid := mustNew(t, JoinPrefix).Value()
	body := valid[len(JoinPrefix):]
	for _, tc := range []struct {
		name, in, prefix string
	}{
		{"empty", "", JoinPrefix},
		{"prefix only", JoinPrefix, JoinPrefix},
		{"wrong kind", valid, BearerPrefix},
		{"upper-case prefix", "WJT_" + body, JoinPrefix},
		{"no prefix", "xxxx" + body, JoinPrefix},
		{"one short", valid[:len(valid)-1], JoinPrefix},
		{"one long", valid + "A", JoinPrefix},
		{"padding", valid[:len(valid)-1] + "=", JoinPrefix},
		{"standard alphabet plus", valid[:10] + "+" + valid[11:], JoinPrefix},
		{"standard alphabet slash", valid[:10] + "/" + valid[11:], JoinPrefix},
		{"newline inside", valid[:10] + "\n" + valid[11:], JoinPrefix},
		{"carriage return inside", valid[:10] + "\r" + valid[11:], JoinPrefix},
		{"space inside", valid[:10] + " " + valid[11:], JoinPrefix},
		{"leading space", " " + valid[:len(valid)-1], JoinPrefix},
		{"non-ASCII", valid[:10] + "é" + valid[12:], JoinPrefix},
		{"NUL", valid[:10] + "\x00" + valid[11:], JoinPrefix},
		// 43 characters carry 258 bits; the last 2 must be zero. 'B' sets one.
		{"non-canonical last character", JoinPrefix + strings.Repeat("A", 42) + "B", JoinPrefix},
		{"unknown prefix argument", "wxt_" + body, "wxt_"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.in, tc.prefix)
			if err == nil {
				t.Fatalf("Parse(%q) accepted an invalid token", tc.in)
			}
			if len(tc.in) > 12 && strings.Contains(err.Error(), tc.in[4:12]) {
				t.Fatalf("error %q quotes the token", err)
			}
		})
	}
	if _, err := Parse(valid, BearerPrefix); !errors.Is(err, ErrInvalid) {
		t.Fatalf("wrong kind: err = %v, want ErrInvalid", err)
	}
	if _, err := Parse(JoinPrefix+strings.Repeat("A", 42)+"A", JoinPrefix); err != nil {
		t.Fatalf("canonical all-zero token rejected: %v", err)
	}
}

func TestNewRejectsUnknownPrefix(t *testing.T) {
	if _, err := New("abc_"); err == nil {
		t.Fatal("New accepted an unknown prefix")
	}
}

func TestHash(t *testing.T) {
	// Known answer from: echo -n wjt_AAA…A | sha256sum
	const tok = "wjt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	const want = "991ba4e844966fb71c7f11f22dc6af5ca2ef68774b5fa3b48264b5b19f416862"
	if got := Hash(tok); got != want {
		t.Fatalf("Hash = %q, want %q", got, want)
	}
	if !MatchesHash(tok, want) {
		t.Fatal("MatchesHash rejected the token's own hash")
	}
	if MatchesHash(tok[:len(tok)-1]+"B", want) || MatchesHash(tok, strings.ToUpper(want)) || MatchesHash(tok, "") {
		t.Fatal("MatchesHash accepted a mismatch")
	}
}

func TestEqual(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"abc", "ab", false},
		{"", "a", false},
	} {
		if got := Equal(tc.a, tc.b); got != tc.want {
			t.Errorf("Equal(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestRedaction(t *testing.T) {
	tok := mustNew(t, BearerPrefix)
	secretPart := tok.Value()[len(BearerPrefix):]
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("issued", "token", tok)
	for name, out := range map[string]string{
		"%v":   fmt.Sprintf("%v", tok),
		"%s":   fmt.Sprintf("%s", tok),
		"%+v":  fmt.Sprintf("%+v", tok),
		"%#v":  fmt.Sprintf("%#v", tok),
		"slog": logged.String(),
	} {
		if strings.Contains(out, secretPart[:8]) {
			t.Errorf("%s output %q reveals the token", name, out)
		}
		if !strings.Contains(out, BearerPrefix) {
			t.Errorf("%s output %q does not even show the token kind", name, out)
		}
	}
	if got := (Token{}).String(); got != "<no token>" {
		t.Errorf("zero Token String = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(mustNew(f, JoinPrefix).Value(), true)
	f.Add(mustNew(f, BearerPrefix).Value(), false)
	f.Add("wjt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", true)
	f.Add("wbt_"+strings.Repeat("_", 43), false)
	f.Add("", true)
	f.Fuzz(func(t *testing.T, s string, join bool) {
		prefix := BearerPrefix
		if join {
			prefix = JoinPrefix
		}
		tok, err := Parse(s, prefix)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse failed without ErrInvalid: %v", err)
			}
			return
		}
		if tok.Value() != s || !tokenPattern.MatchString(s) || tok.Prefix() != prefix {
			t.Fatalf("Parse accepted %q", s)
		}
		if strings.Contains(tok.String(), s[len(prefix):]) {
			t.Fatal("String reveals the token")
		}
	})
}
