// Package netzone describes Warden's network segregation: named zones of
// address prefixes, which zones may reach which service endpoint, checks of
// that against the security model, and its enforcement as an address
// allowlist (in the apps) and an nftables ruleset (on the nodes).
//
// The model, from the client's security guidance: the Webapp exposes its API
// and Web Admin only to the networks of API clients and management
// workstations; a Coreapp exposes its communication service only to Webapps
// and its control service only to other Coreapps; the database serves the
// apps.
package netzone

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/warden-sec/warden/services/internal/issue"
)

// Issue is a validation finding; see package issue for the meaning of
// Downgrade.
type Issue = issue.Issue

// Zone is a named set of networks.
type Zone struct {
	Name  string
	CIDRs []netip.Prefix
}

// Endpoint is a service that zones can be allowed to reach.
type Endpoint string

const (
	WebappAPI            Endpoint = "webapp:api"
	WebappAdmin          Endpoint = "webapp:admin"
	CoreappCommunication Endpoint = "coreapp:communication"
	CoreappControl       Endpoint = "coreapp:control"
	DB                   Endpoint = "db"
)

// Endpoints returns every endpoint in a fixed order.
func Endpoints() []Endpoint {
	return []Endpoint{WebappAPI, WebappAdmin, CoreappCommunication, CoreappControl, DB}
}

// Zone names used by Defaults and by the security model.
const (
	ZoneClients    = "clients"
	ZoneManagement = "management"
	ZoneWebapp     = "webapp"
	ZoneCoreapp    = "coreapp"
	ZoneDB         = "db"
)

// Rules says which zones may reach which endpoint.
type Rules struct {
	Zones []Zone
	// Reach maps an endpoint to the names of the zones allowed to reach it;
	// an endpoint without an entry is reachable from nowhere.
	Reach map[Endpoint][]string
}

// Defaults returns the model's zones and reach. The zones have no networks:
// Warden cannot guess a site's addresses, and an empty zone admits nobody,
// so until the operator fills them in every endpoint is closed rather than
// open.
func Defaults() Rules {
	return Rules{
		Zones: []Zone{
			{Name: ZoneClients}, {Name: ZoneManagement}, {Name: ZoneWebapp}, {Name: ZoneCoreapp}, {Name: ZoneDB},
		},
		Reach: map[Endpoint][]string{
			WebappAPI:            {ZoneClients, ZoneManagement},
			WebappAdmin:          {ZoneManagement},
			CoreappCommunication: {ZoneWebapp},
			CoreappControl:       {ZoneCoreapp},
			DB:                   {ZoneWebapp, ZoneCoreapp},
		},
	}
}

// onlyFrom is the part of the model that Validate enforces as errors.
var onlyFrom = map[Endpoint]string{
	CoreappCommunication: ZoneWebapp,
	CoreappControl:       ZoneCoreapp,
}

func validZoneName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Validate checks r.
//
// Errors: a zone name that is not lower-case letters, digits, '-' or '_'
// (starting with a letter) or is repeated; a CIDR that is invalid, has host
// bits set, or is written as IPv4-mapped IPv6; an unknown endpoint or zone in
// Reach; coreapp:communication reachable from any zone but webapp, or
// coreapp:control from any zone but coreapp.
//
// Warnings: a prefix covering all addresses (a downgrade: the zone is
// wider than any network), overlapping zones, the database reachable from
// zones other than the apps' (a downgrade), repeated entries, and zones with
// no networks that an endpoint relies on.
func Validate(r Rules) (errs, warnings []Issue) {
	errf := func(field string, downgrade bool, format string, args ...any) {
		errs = append(errs, Issue{Field: field, Message: fmt.Sprintf(format, args...), Downgrade: downgrade})
	}
	warnf := func(field string, downgrade bool, format string, args ...any) {
		warnings = append(warnings, Issue{Field: field, Message: fmt.Sprintf(format, args...), Downgrade: downgrade})
	}

	zones := map[string]int{}
	for i, z := range r.Zones {
		field := fmt.Sprintf("zones[%d].name", i)
		switch _, dup := zones[z.Name]; {
		case !validZoneName(z.Name):
			errf(field, false, "%q is not a valid zone name (a-z, 0-9, '-', '_', starting with a letter, at most 63)", z.Name)
		case dup:
			errf(field, false, "zone %q defined twice", z.Name)
		default:
			zones[z.Name] = i
		}
		seen := map[netip.Prefix]bool{}
		for j, p := range z.CIDRs {
			field := fmt.Sprintf("zones[%d].cidrs[%d]", i, j)
			switch {
			case !p.IsValid():
				errf(field, false, "not a valid prefix")
				continue
			case p.Addr().Is4In6() && p.Bits() >= 96:
				errf(field, false, "%s is IPv4-mapped IPv6; write %s", p, normalise(p))
				continue
			case p != p.Masked():
				errf(field, false, "%s has host bits set; write %s", p, p.Masked())
				continue
			}
			if p.Bits() == 0 {
				warnf(field, true, "%s covers every address: the zone is wider than any network", p)
			}
			if seen[p] {
				warnf(field, false, "%s listed twice", p)
			}
			seen[p] = true
		}
	}

	for i, a := range r.Zones {
		for j := i + 1; j < len(r.Zones); j++ {
			if p, q, ok := firstOverlap(a.CIDRs, r.Zones[j].CIDRs); ok {
				warnf(fmt.Sprintf("zones[%d].cidrs", j), false, "zone %q (%s) overlaps zone %q (%s): addresses in both get the access of both", r.Zones[j].Name, q, a.Name, p)
			}
		}
	}

	known := Endpoints()
	for _, ep := range sortedEndpoints(r.Reach) {
		field := fmt.Sprintf("reach[%q]", string(ep))
		if !slices.Contains(known, ep) {
			errf(field, false, "unknown endpoint %q", string(ep))
			continue
		}
		seen := map[string]bool{}
		for k, name := range r.Reach[ep] {
			field := fmt.Sprintf("reach[%q][%d]", string(ep), k)
			zi, ok := zones[name]
			if !ok {
				errf(field, false, "unknown zone %q", name)
				continue
			}
			if seen[name] {
				warnf(field, false, "zone %q listed twice", name)
			}
			seen[name] = true
			if only, ok := onlyFrom[ep]; ok && name != only {
				errf(field, false, "%s may only be reached from the %s zone, not %q", ep, only, name)
			}
			if ep == DB && name != ZoneWebapp && name != ZoneCoreapp {
				warnf(field, true, "the database is meant for the apps only; zone %q can reach it", name)
			}
			if len(r.Zones[zi].CIDRs) == 0 {
				warnf(field, false, "zone %q has no networks, so it does not open %s to anyone", name, ep)
			}
		}
	}
	return errs, warnings
}

func sortedEndpoints(reach map[Endpoint][]string) []Endpoint {
	known := Endpoints()
	eps := make([]Endpoint, 0, len(reach))
	for ep := range reach {
		eps = append(eps, ep)
	}
	slices.SortFunc(eps, func(a, b Endpoint) int {
		ia, ib := slices.Index(known, a), slices.Index(known, b)
		if ia < 0 {
			ia = len(known)
		}
		if ib < 0 {
			ib = len(known)
		}
		return cmp.Or(cmp.Compare(ia, ib), cmp.Compare(a, b))
	})
	return eps
}

func firstOverlap(a, b []netip.Prefix) (netip.Prefix, netip.Prefix, bool) {
	for _, p := range a {
		for _, q := range b {
			np, nq := normalise(p), normalise(q)
			if np.IsValid() && nq.IsValid() && np.Overlaps(nq) {
				return p, q, true
			}
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}

// normalise masks p and rewrites an IPv4-mapped IPv6 prefix as IPv4, since
// Allows unmaps addresses before matching. It returns the zero Prefix for an
// invalid one.
func normalise(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return netip.Prefix{}
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

// aggregate normalises prefixes and drops those inside another, giving a
// sorted list (IPv4 first) without overlaps, which nftables interval sets
// require.
func aggregate(prefixes []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range prefixes {
		if p = normalise(p); p.IsValid() {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	// Sorted by address then length, a prefix can only be covered by an
	// earlier one that is kept.
	kept := out[:0]
	for _, p := range out {
		if n := len(kept); n > 0 && kept[n-1].Bits() <= p.Bits() && kept[n-1].Contains(p.Addr()) {
			continue
		}
		kept = append(kept, p)
	}
	return slices.Clip(kept)
}

// Allowlist returns the networks allowed to reach ep, aggregated. Unknown
// zone names are skipped (Validate reports them).
func (r Rules) Allowlist(ep Endpoint) []netip.Prefix {
	var all []netip.Prefix
	for _, name := range r.Reach[ep] {
		for _, z := range r.Zones {
			if z.Name == name {
				all = append(all, z.CIDRs...)
			}
		}
	}
	return aggregate(all)
}

// Wider returns the endpoints that next makes reachable from at least one
// address that prev did not admit, in the order of Endpoints (unknown
// endpoints last, sorted). A policy change with a non-empty result is a
// downgrade.
func Wider(prev, next Rules) []string {
	eps := sortedEndpoints(next.Reach)
	var out []string
	for _, ep := range eps {
		before := prev.Allowlist(ep)
		for _, p := range next.Allowlist(ep) {
			if !covered(before, p) {
				out = append(out, string(ep))
				break
			}
		}
	}
	return out
}

// covered reports whether the union of set contains every address of p.
// When only smaller prefixes of set fall inside p, it splits p in halves;
// the recursion only descends where such prefixes exist, so it is bounded
// by the size of set times the address length.
func covered(set []netip.Prefix, p netip.Prefix) bool {
	inside := false
	for _, s := range set {
		if s.Addr().BitLen() != p.Addr().BitLen() {
			continue
		}
		if s.Bits() <= p.Bits() && s.Contains(p.Addr()) {
			return true
		}
		if s.Bits() > p.Bits() && p.Contains(s.Addr()) {
			inside = true
		}
	}
	if !inside {
		return false
	}
	lo, hi := halves(p)
	return covered(set, lo) && covered(set, hi)
}

// halves splits p (which must be shorter than its address) into its two
// sub-prefixes of one more bit.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits()
	b := p.Addr().AsSlice()
	lo := netip.PrefixFrom(p.Addr(), bits+1)
	b[bits/8] |= 0x80 >> (bits % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(hiAddr, bits+1)
}

// Allowlist matches client addresses against a set of networks.
type Allowlist struct {
	prefixes []netip.Prefix
}

// NewAllowlist builds an Allowlist; invalid prefixes are ignored and
// IPv4-mapped IPv6 prefixes are treated as IPv4.
func NewAllowlist(prefixes []netip.Prefix) *Allowlist {
	return &Allowlist{prefixes: aggregate(prefixes)}
}

// Allows reports whether addr lies in one of the networks. An IPv4 client on
// a dual-stack socket appears as ::ffff:a.b.c.d and is matched as a.b.c.d;
// an IPv6 zone is ignored. The zero Addr is never allowed.
func (a *Allowlist) Allows(addr netip.Addr) bool {
	if a == nil || !addr.IsValid() {
		return false
	}
	addr = addr.WithZone("").Unmap()
	for _, p := range a.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
