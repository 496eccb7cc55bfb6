package netzone

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// example uses documentation ranges only (RFC 5737, RFC 3849).
func example() Rules {
	r := Defaults()
	r.Zones = []Zone{
		{Name: ZoneClients, CIDRs: prefixes("192.0.2.0/24", "198.51.100.0/24", "2001:db8:c::/48")},
		{Name: ZoneManagement, CIDRs: prefixes("198.51.100.0/26", "2001:db8:a::/48")},
		{Name: ZoneWebapp, CIDRs: prefixes("203.0.113.0/28", "2001:db8:e:1::/64")},
		{Name: ZoneCoreapp, CIDRs: prefixes("203.0.113.16/28", "2001:db8:e:2::/64")},
		{Name: ZoneDB, CIDRs: prefixes("203.0.113.32/28")},
	}
	return r
}

func TestNFTablesGolden(t *testing.T) {
	tests := []struct {
		name  string
		rules Rules
		role  string
		ports map[Endpoint][]int
	}{
		{"webapp", example(), "webapp", nil},
		{"coreapp", example(), "coreapp", nil},
		{"db", example(), "db", nil},
		{"coreapp_custom_ports", example(), "coreapp", map[Endpoint][]int{CoreappCommunication: {7250, 7250, 0, 70000}}},
		{"webapp_defaults_empty_zones", Defaults(), "webapp", nil},
		{"unknown_role", example(), "web\napp", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NFTables(tt.rules, tt.role, tt.ports)
			path := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatalf("write golden file: %v", err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("NFTables output differs from %s (run with -update if intended)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	r := Defaults()
	for _, z := range r.Zones {
		if len(z.CIDRs) != 0 {
			t.Errorf("default zone %s has networks %v; defaults must admit nobody", z.Name, z.CIDRs)
		}
	}
	want := map[Endpoint][]string{
		WebappAPI:            {"clients", "management"},
		WebappAdmin:          {"management"},
		CoreappCommunication: {"webapp"},
		CoreappControl:       {"coreapp"},
		DB:                   {"webapp", "coreapp"},
	}
	for ep, zones := range want {
		if !slices.Equal(r.Reach[ep], zones) {
			t.Errorf("Reach[%s] = %v, want %v", ep, r.Reach[ep], zones)
		}
	}
	errs, _ := Validate(r)
	if len(errs) != 0 {
		t.Errorf("defaults have errors: %v", errs)
	}
	errs, warnings := Validate(example())
	if len(errs) != 0 {
		t.Errorf("example has errors: %v", errs)
	}
	// clients and management overlap on purpose in the example.
	if len(warnings) != 1 || warnings[0].Field != "zones[1].cidrs" {
		t.Errorf("example warnings = %v, want one overlap warning", warnings)
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
		modify func(*Rules)
		want   want
	}{
		{"example", func(*Rules) {}, ok},
		{"zone name with digits and dash", func(r *Rules) { r.Zones = append(r.Zones, Zone{Name: "dmz-2"}) }, ok},
		{"zone name upper case", func(r *Rules) { r.Zones = append(r.Zones, Zone{Name: "DMZ"}) }, want{"zones[5].name", true, false}},
		{"zone name empty", func(r *Rules) { r.Zones = append(r.Zones, Zone{}) }, want{"zones[5].name", true, false}},
		{"zone name starting with digit", func(r *Rules) { r.Zones = append(r.Zones, Zone{Name: "1dmz"}) }, want{"zones[5].name", true, false}},
		{"zone name duplicate", func(r *Rules) { r.Zones = append(r.Zones, Zone{Name: "clients"}) }, want{"zones[5].name", true, false}},
		{"cidr host bits", func(r *Rules) { r.Zones[4].CIDRs = prefixes("203.0.113.33/28") }, want{"zones[4].cidrs[0]", true, false}},
		{"cidr ipv6 host bits", func(r *Rules) { r.Zones[4].CIDRs = prefixes("2001:db8:d::1/64") }, want{"zones[4].cidrs[0]", true, false}},
		{"cidr invalid", func(r *Rules) { r.Zones[4].CIDRs = []netip.Prefix{{}} }, want{"zones[4].cidrs[0]", true, false}},
		{"cidr 4in6", func(r *Rules) { r.Zones[4].CIDRs = prefixes("::ffff:203.0.113.32/124") }, want{"zones[4].cidrs[0]", true, false}},
		{"cidr duplicate", func(r *Rules) { r.Zones[4].CIDRs = prefixes("203.0.113.32/28", "203.0.113.32/28") }, want{"zones[4].cidrs[1]", false, false}},
		{"cidr all ipv4", func(r *Rules) { r.Zones[0].CIDRs = prefixes("0.0.0.0/0") }, want{"zones[0].cidrs[0]", false, true}},
		{"cidr all ipv6", func(r *Rules) { r.Zones[0].CIDRs = prefixes("::/0") }, want{"zones[0].cidrs[0]", false, true}},
		{"zones overlap", func(r *Rules) { r.Zones[3].CIDRs = prefixes("203.0.113.0/27") }, want{"zones[3].cidrs", false, false}},
		{"unknown endpoint", func(r *Rules) { r.Reach["coreapp:metrics"] = []string{"management"} }, want{`reach["coreapp:metrics"]`, true, false}},
		{"unknown zone", func(r *Rules) { r.Reach[WebappAdmin] = []string{"managment"} }, want{`reach["webapp:admin"][0]`, true, false}},
		{"zone listed twice", func(r *Rules) { r.Reach[WebappAdmin] = []string{"management", "management"} }, want{`reach["webapp:admin"][1]`, false, false}},
		{"communication from clients", func(r *Rules) { r.Reach[CoreappCommunication] = []string{"webapp", "clients"} }, want{`reach["coreapp:communication"][1]`, true, false}},
		{"communication from management", func(r *Rules) { r.Reach[CoreappCommunication] = []string{"management"} }, want{`reach["coreapp:communication"][0]`, true, false}},
		{"control from webapp", func(r *Rules) { r.Reach[CoreappControl] = []string{"coreapp", "webapp"} }, want{`reach["coreapp:control"][1]`, true, false}},
		{"control unreachable is allowed", func(r *Rules) { delete(r.Reach, CoreappControl) }, ok},
		{"db from management", func(r *Rules) { r.Reach[DB] = []string{"webapp", "coreapp", "management"} }, want{`reach["db"][2]`, false, true}},
		{"reach relies on empty zone", func(r *Rules) { r.Zones[1].CIDRs = nil; r.Zones[0].CIDRs = prefixes("192.0.2.0/24") }, want{`reach["webapp:api"][1]`, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := example()
			// Keep the fixture free of its deliberate overlap so that "ok"
			// cases have no findings at all.
			r.Zones[0].CIDRs = prefixes("192.0.2.0/24", "2001:db8:c::/48")
			tt.modify(&r)
			errs, warnings := Validate(r)
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
					if !tt.want.isError && len(errs) != 0 {
						t.Fatalf("want only warnings, got errors %v", errs)
					}
					return
				}
			}
			t.Fatalf("want %+v; errs %v, warnings %v", tt.want, errs, warnings)
		})
	}
}

func TestAllowlist(t *testing.T) {
	r := example()
	got := r.Allowlist(WebappAPI)
	// management's 198.51.100.0/26 is inside clients' /24 and is dropped.
	want := prefixes("192.0.2.0/24", "198.51.100.0/24", "2001:db8:a::/48", "2001:db8:c::/48")
	if !slices.Equal(got, want) {
		t.Errorf("Allowlist(webapp:api) = %v, want %v", got, want)
	}
	if got := r.Allowlist("nope"); len(got) != 0 {
		t.Errorf("Allowlist of an unknown endpoint = %v, want empty", got)
	}

	a := NewAllowlist(append(r.Allowlist(WebappAdmin), netip.MustParsePrefix("::ffff:10.0.0.0/104"), netip.Prefix{}))
	tests := []struct {
		addr  string
		allow bool
	}{
		{"198.51.100.1", true},
		{"198.51.100.63", true},
		{"198.51.100.64", false},
		{"::ffff:198.51.100.1", true},
		{"::ffff:198.51.100.64", false},
		{"2001:db8:a::1", true},
		{"2001:db8:a::1%eth0", true},
		{"2001:db8:b::1", false},
		{"10.1.2.3", true},
		{"::ffff:10.1.2.3", true},
		{"192.0.2.1", false},
		{"127.0.0.1", false},
		{"::1", false},
	}
	for _, tt := range tests {
		if got := a.Allows(netip.MustParseAddr(tt.addr)); got != tt.allow {
			t.Errorf("Allows(%s) = %v, want %v", tt.addr, got, tt.allow)
		}
	}
	if a.Allows(netip.Addr{}) {
		t.Error("the zero address is allowed")
	}
	var none *Allowlist
	if none.Allows(netip.MustParseAddr("198.51.100.1")) {
		t.Error("a nil Allowlist allows an address")
	}
	if NewAllowlist(nil).Allows(netip.MustParseAddr("198.51.100.1")) {
		t.Error("an empty Allowlist allows an address")
	}
}

func TestWider(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Rules)
		want   []string
	}{
		{"unchanged", func(*Rules) {}, nil},
		{"narrower", func(r *Rules) { r.Zones[1].CIDRs = prefixes("198.51.100.0/27") }, nil},
		{"split into halves covers the same", func(r *Rules) { r.Zones[1].CIDRs = prefixes("198.51.100.0/27", "198.51.100.32/27", "2001:db8:a::/48") }, nil},
		{"zone renamed to same networks", func(r *Rules) {
			r.Zones = append(r.Zones, Zone{Name: "ops", CIDRs: prefixes("198.51.100.0/26", "2001:db8:a::/48")})
			r.Reach[WebappAdmin] = []string{"ops"}
		}, nil},
		{"admin opened to clients", func(r *Rules) { r.Reach[WebappAdmin] = []string{"management", "clients"} }, []string{"webapp:admin"}},
		{"management grows", func(r *Rules) { r.Zones[1].CIDRs = prefixes("198.51.100.0/25", "2001:db8:a::/48") }, []string{"webapp:admin"}},
		{"db zone may reach db", func(r *Rules) {
			r.Zones[4].CIDRs = prefixes("203.0.113.32/28", "2001:db8:d::/64")
			r.Reach[DB] = []string{"webapp", "coreapp", "db"}
		}, []string{"db"}},
		{"everything open", func(r *Rules) { r.Zones[2].CIDRs = prefixes("0.0.0.0/0") }, []string{"coreapp:communication", "db"}},
		{"ipv4-mapped equals ipv4", func(r *Rules) { r.Zones[2].CIDRs = prefixes("::ffff:203.0.113.0/124", "2001:db8:e:1::/64") }, nil},
		{"new endpoint entry", func(r *Rules) { r.Reach["coreapp:metrics"] = []string{"management"} }, []string{"coreapp:metrics"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := example()
			next.Reach = map[Endpoint][]string{}
			for ep, zones := range example().Reach {
				next.Reach[ep] = slices.Clone(zones)
			}
			tt.modify(&next)
			if got := Wider(example(), next); !slices.Equal(got, tt.want) {
				t.Errorf("Wider = %v, want %v", got, tt.want)
			}
		})
	}
	if got := Wider(example(), Defaults()); len(got) != 0 {
		t.Errorf("Wider(example, defaults) = %v, want nothing (defaults admit nobody)", got)
	}
	if got := Wider(Defaults(), example()); len(got) != 5 {
		t.Errorf("Wider(defaults, example) = %v, want all five endpoints", got)
	}
}

func TestCovered(t *testing.T) {
	set := prefixes("10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/11", "10.224.0.0/11")
	if !covered(set, netip.MustParsePrefix("10.0.0.0/8")) {
		t.Error("10.0.0.0/8 should be covered by its four parts")
	}
	if covered(set[:3], netip.MustParsePrefix("10.0.0.0/8")) {
		t.Error("10.0.0.0/8 should not be covered without 10.224.0.0/11")
	}
	hosts := prefixes("2001:db8::1/128", "2001:db8::2/128")
	if covered(hosts, netip.MustParsePrefix("::/0")) {
		t.Error("::/0 covered by two hosts")
	}
	if covered(prefixes("::/0"), netip.MustParsePrefix("10.0.0.0/8")) {
		t.Error("an IPv6 prefix covered an IPv4 one")
	}
}
