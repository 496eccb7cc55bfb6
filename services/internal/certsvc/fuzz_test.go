package certsvc

import (
	"strings"
	"testing"
)

// FuzzNormalizeSerial: serials come from admins and agents.
func FuzzNormalizeSerial(f *testing.F) {
	for _, s := range []string{"", "0", "00ab", "AB:CD:EF", "xyz", strings.Repeat("f", 41), " 1f "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := normalizeSerial(in)
		if err != nil {
			return
		}
		if s == "" || len(s) > maxSerialHex || s[0] == '0' || strings.Trim(s, "0123456789abcdef") != "" {
			t.Fatalf("%q normalised to %q", in, s)
		}
		if again, err := normalizeSerial(s); err != nil || again != s {
			t.Fatalf("not idempotent: %q → %q → %q (%v)", in, s, again, err)
		}
	})
}

// FuzzNormalizeAddresses: node addresses become certificate SANs and must always be issuable.
func FuzzNormalizeAddresses(f *testing.F) {
	for _, s := range []string{"web-1.example.com", "10.0.0.1", "::ffff:10.0.0.1", "fe80::1%eth0", "*.example.com", "a..b", "-a.com", "UPPER.com", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := normalizeAddresses("addresses", []string{in, in})
		if err != nil {
			return
		}
		if len(out) != 1 {
			t.Fatalf("%q: duplicates not removed: %v", in, out)
		}
		dns, ips := splitAddresses(out)
		for _, d := range dns {
			if err := validDNSName(d); err != nil {
				t.Fatalf("%q accepted as DNS name %q: %v", in, d, err)
			}
		}
		for _, ip := range ips {
			if len(ip) != 4 && len(ip) != 16 {
				t.Fatalf("%q gave IP of %d bytes", in, len(ip))
			}
		}
		if again, err := normalizeAddresses("addresses", out); err != nil || again[0] != out[0] {
			t.Fatalf("not idempotent: %q → %v → %v (%v)", in, out, again, err)
		}
	})
}
