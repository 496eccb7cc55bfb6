package password

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// testParams keep argon2 cheap so the suite stays fast; only the tests that
// are about the defaults pay for them.
var testParams = params{memory: 64, time: 1, threads: 1, saltLen: 16, keyLen: 32}

func mustHashWith(t testing.TB, pw string, p params) string {
	t.Helper()
	h, err := hashWith(pw, p)
	if err != nil {
		t.Fatalf("hash: %v", err)
	}
	return h
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		pw   string
		want []error
	}{
		{"all rules met", "Passw0rd!", nil},
		{"exactly 8", "aB3$efgh", nil},
		{"exactly 64", "aB3$" + strings.Repeat("x", 60), nil},
		{"space is special", "Pass w0rd", nil},
		{"non-ASCII letters and digits", "Ärger٣ß!x", nil},
		{"8 multi-byte runes", "Ωω١€ñÑ¡ü", nil},
		{"7 characters", "aB3$efg", []error{ErrTooShort}},
		{"65 characters", "aB3$" + strings.Repeat("x", 61), []error{ErrTooLong}},
		{"more than 64 bytes but 64 runes", "aB3$" + strings.Repeat("é", 60), nil},
		{"no digit", "Password!", []error{ErrNoDigit}},
		{"no upper", "passw0rd!", []error{ErrNoUpper}},
		{"no lower", "PASSW0RD!", []error{ErrNoLower}},
		{"no special", "Passw0rdX", []error{ErrNoSpecial}},
		{"control character", "Passw0rd!\n", []error{ErrControlChars}},
		{"NUL", "Passw0rd!\x00", []error{ErrControlChars}},
		{"empty", "", []error{ErrTooShort, ErrNoDigit, ErrNoUpper, ErrNoLower, ErrNoSpecial}},
		{"several failures at once", "abc", []error{ErrTooShort, ErrNoDigit, ErrNoUpper, ErrNoSpecial}},
		{"invalid UTF-8", "Passw0rd!\xff", []error{ErrInvalidUTF8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.pw)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate(%q) = %v, want nil", tc.pw, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%q) = nil, want %v", tc.pw, tc.want)
			}
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("Validate(%q) = %v, missing %v", tc.pw, err, want)
				}
				if !strings.Contains(err.Error(), strings.TrimPrefix(want.Error(), "password: ")) {
					t.Errorf("message %q does not name rule %q", err, want)
				}
			}
			for _, other := range []error{ErrTooShort, ErrTooLong, ErrNoDigit, ErrNoUpper, ErrNoLower, ErrNoSpecial, ErrControlChars, ErrInvalidUTF8} {
				if errors.Is(err, other) && !containsErr(tc.want, other) {
					t.Errorf("Validate(%q) also reports %v", tc.pw, other)
				}
			}
		})
	}
}

func containsErr(errs []error, target error) bool {
	for _, e := range errs {
		if e == target {
			return true
		}
	}
	return false
}

var phcPattern = regexp.MustCompile(`^\$argon2id\$v=19\$m=65536,t=3,p=2\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

func TestHashWithDefaults(t *testing.T) {
	h, err := Hash("Correct-h0rse")
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if !phcPattern.MatchString(h) {
		t.Fatalf("Hash = %q, want the PHC form %s", h, phcPattern)
	}
	if ok, err := Verify("Correct-h0rse", h); err != nil || !ok {
		t.Fatalf("Verify(right password) = %v, %v", ok, err)
	}
	if NeedsRehash(h) {
		t.Fatal("NeedsRehash is true for a hash made with the current parameters")
	}
	if strings.Contains(h, "Correct-h0rse") {
		t.Fatal("hash contains the password")
	}
}

// TestVerifyReferenceVector checks interoperability with the reference C
// implementation: echo -n password | argon2 somesalt -id -t 2 -m 16 -p 4 -l 32 -e
func TestVerifyReferenceVector(t *testing.T) {
	const ref = "$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo"
	if ok, err := Verify("password", ref); err != nil || !ok {
		t.Fatalf("Verify(reference vector) = %v, %v; want true, nil", ok, err)
	}
	if !NeedsRehash(ref) {
		t.Fatal("NeedsRehash is false for a hash with other parameters")
	}
}

func TestVerify(t *testing.T) {
	h := mustHashWith(t, "Passw0rd!", testParams)
	for _, tc := range []struct {
		name, pw string
		want     bool
	}{
		{"right password", "Passw0rd!", true},
		{"wrong password", "Passw0rd?", false},
		{"prefix of password", "Passw0rd", false},
		{"password with suffix", "Passw0rd!!", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Verify(tc.pw, h)
			if err != nil || got != tc.want {
				t.Fatalf("Verify = %v, %v; want %v, nil", got, err, tc.want)
			}
		})
	}
}

func TestHashIsSalted(t *testing.T) {
	a := mustHashWith(t, "Passw0rd!", testParams)
	b := mustHashWith(t, "Passw0rd!", testParams)
	if a == b {
		t.Fatal("two hashes of the same password are identical")
	}
}

func TestParametersComeFromTheString(t *testing.T) {
	weak := mustHashWith(t, "Passw0rd!", testParams)
	if !strings.HasPrefix(weak, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q does not record its parameters", weak)
	}
	if ok, err := Verify("Passw0rd!", weak); err != nil || !ok {
		t.Fatalf("Verify of a hash with other parameters = %v, %v", ok, err)
	}
	if !NeedsRehash(weak) {
		t.Fatal("NeedsRehash is false for a hash below the current parameters")
	}
	longSalt := mustHashWith(t, "Passw0rd!", params{memory: 64, time: 1, threads: 1, saltLen: 32, keyLen: 64})
	if ok, err := Verify("Passw0rd!", longSalt); err != nil || !ok {
		t.Fatalf("Verify with 32-byte salt and 64-byte hash = %v, %v", ok, err)
	}
}

func TestTamperedHashDoesNotVerify(t *testing.T) {
	h := mustHashWith(t, "Passw0rd!", testParams)
	fields := strings.Split(h, "$")
	flip := func(s string) string {
		c := byte('A')
		if s[0] == 'A' {
			c = 'B'
		}
		return string(c) + s[1:]
	}
	for name, bad := range map[string]string{
		"salt changed": strings.Join([]string{"", fields[1], fields[2], fields[3], flip(fields[4]), fields[5]}, "$"),
		"hash changed": strings.Join([]string{"", fields[1], fields[2], fields[3], fields[4], flip(fields[5])}, "$"),
		"t changed":    strings.Replace(h, "t=1", "t=2", 1),
	} {
		if ok, err := Verify("Passw0rd!", bad); err != nil || ok {
			t.Errorf("%s: Verify = %v, %v; want false, nil", name, ok, err)
		}
	}
}

func TestMalformedHashes(t *testing.T) {
	const salt, key = "c29tZXNhbHRzb21lc2FsdA", "GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo"
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{"argon2i", "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key},
		{"version 16", "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key},
		{"missing version", "$argon2id$m=64,t=1,p=1$" + salt + "$" + key},
		{"params out of order", "$argon2id$v=19$t=1,m=64,p=1$" + salt + "$" + key},
		{"extra param", "$argon2id$v=19$m=64,t=1,p=1,k=1$" + salt + "$" + key},
		{"leading zero", "$argon2id$v=19$m=064,t=1,p=1$" + salt + "$" + key},
		{"plus sign", "$argon2id$v=19$m=+64,t=1,p=1$" + salt + "$" + key},
		{"zero time", "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key},
		{"zero threads", "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key},
		{"256 threads", "$argon2id$v=19$m=4096,t=1,p=256$" + salt + "$" + key},
		{"memory below 8 KiB per lane", "$argon2id$v=19$m=15,t=1,p=2$" + salt + "$" + key},
		{"memory above cap", "$argon2id$v=19$m=4194304,t=1,p=1$" + salt + "$" + key},
		{"time above cap", "$argon2id$v=19$m=64,t=1000,p=1$" + salt + "$" + key},
		{"uint32 overflow", "$argon2id$v=19$m=4294967360,t=1,p=1$" + salt + "$" + key},
		{"padded salt", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key},
		{"short salt", "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$" + key},
		{"short hash", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$c2hvcnQ"},
		{"non-canonical base64", "$argon2id$v=19$m=64,t=1,p=1$" + salt[:len(salt)-1] + "B$" + key},
		{"newline in hash", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key[:10] + "\n" + key[10:]},
		{"url alphabet", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + strings.ReplaceAll(key, "/", "_")},
		{"trailing field", "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key + "$"},
		{"no leading dollar", "argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key + "$x"},
		{"huge salt", "$argon2id$v=19$m=64,t=1,p=1$" + strings.Repeat("A", 1<<20) + "$" + key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := Verify("password", tc.in)
			if ok || !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("Verify = %v, %v; want false, ErrMalformedHash", ok, err)
			}
			if !NeedsRehash(tc.in) {
				t.Fatal("NeedsRehash is false for an unparsable hash")
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(mustHashWith(f, "Passw0rd!", testParams))
	f.Add("$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo")
	f.Add("$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA")
	f.Add("$argon2id$v=19$m=64,t=1,p=1$$")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := decode(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("decode failed without ErrMalformedHash: %v", err)
			}
			return
		}
		if got := encode(p, salt, key); got != s {
			t.Fatalf("decode accepted a non-canonical string:\n in  %q\n out %q", s, got)
		}
		if p.memory > maxMemory || p.time > maxTime || p.threads == 0 || p.memory < 8*uint32(p.threads) {
			t.Fatalf("decode accepted out-of-range parameters %+v", p)
		}
	})
}
