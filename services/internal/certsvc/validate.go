package certsvc

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/identity"
)

const (
	maxAddresses    = 64
	defaultPageSize = 100
	maxPageSize     = 1000
	maxSerialHex    = 40 // 20 octets, RFC 5280's limit
	defaultTokenTTL = time.Hour
	maxTokenTTL     = 7 * 24 * time.Hour
)

func validNodeID(field, id string) error {
	if err := identity.ValidName(id); err != nil {
		return apierr.InvalidArg(field, "%v", err)
	}
	return nil
}

// normalizeAddresses validates DNS names and IP addresses and returns them deduplicated, in the order
// given, IPs in canonical form.
func normalizeAddresses(field string, in []string) ([]string, error) {
	if len(in) > maxAddresses {
		return nil, apierr.InvalidArg(field, "%d addresses, at most %d allowed", len(in), maxAddresses)
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(in))
	for i, a := range in {
		var norm string
		if ip, err := netip.ParseAddr(a); err == nil {
			if ip.Zone() != "" {
				return nil, apierr.InvalidArg(fmt.Sprintf("%s[%d]", field, i), "%q: IPv6 zones are not allowed", a)
			}
			norm = ip.Unmap().String()
		} else if err := validDNSName(a); err != nil {
			return nil, apierr.InvalidArg(fmt.Sprintf("%s[%d]", field, i), "%q is neither an IP address nor a DNS name: %v", a, err)
		} else {
			norm = a
		}
		if !seen[norm] {
			seen[norm] = true
			out = append(out, norm)
		}
	}
	return out, nil
}

// validDNSName accepts what pki.Template accepts as a DNS SAN: lowercase host names, no wildcards, so
// that a registered address can always be issued.
func validDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("must be 1 to 253 characters")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("labels must be 1 to 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("labels cannot start or end with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z') && !('0' <= c && c <= '9') && c != '-' {
				return fmt.Errorf("contains %q; allowed are a-z, 0-9, '-' and '.'", c)
			}
		}
	}
	return nil
}

// splitAddresses turns registry addresses into certificate SANs.
func splitAddresses(addrs []string) (dns []string, ips []net.IP) {
	for _, a := range addrs {
		if ip, err := netip.ParseAddr(a); err == nil {
			ips = append(ips, net.IP(ip.AsSlice()))
			continue
		}
		dns = append(dns, a)
	}
	return dns, ips
}

// normalizeSerial accepts hex with or without colons, in either case, and returns the lowercase form
// without leading zeros that certificates are stored under.
func normalizeSerial(s string) (string, error) {
	s = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if s == "" {
		return "", apierr.InvalidArg("serial", "is empty")
	}
	if len(s) > maxSerialHex {
		return "", apierr.InvalidArg("serial", "%d hex digits, at most %d allowed", len(s), maxSerialHex)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9') && !('a' <= c && c <= 'f') {
			return "", apierr.InvalidArg("serial", "is not hexadecimal")
		}
	}
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return "", apierr.InvalidArg("serial", "must not be zero")
	}
	return s, nil
}

// ttlOf reads an optional duration field bounded to [min, max].
func ttlOf(field string, d *durationpb.Duration, def, lo, hi time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, apierr.InvalidArg(field, "%v", err)
	}
	v := d.AsDuration()
	if v < lo || v > hi {
		return 0, apierr.InvalidArg(field, "%s is outside [%s, %s]", v, lo, hi)
	}
	return v, nil
}
