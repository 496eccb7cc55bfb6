package netzone

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// DefaultPorts returns the TCP ports of each endpoint.
func DefaultPorts() map[Endpoint][]int {
	return map[Endpoint][]int{
		WebappAPI:            {443},
		WebappAdmin:          {443},
		CoreappCommunication: {6250, 6251},
		CoreappControl:       {6252},
		DB:                   {3306, 5432},
	}
}

// RoleEndpoints returns the endpoints served by a node of role "webapp",
// "coreapp" (Master nodes included: they run the Coreapp image) or "db".
func RoleEndpoints(role string) []Endpoint {
	switch role {
	case "webapp":
		return []Endpoint{WebappAPI, WebappAdmin}
	case "coreapp":
		return []Endpoint{CoreappCommunication, CoreappControl}
	case "db":
		return []Endpoint{DB}
	}
	return nil
}

// NFTables renders the input filter of a node of the given role as an
// nftables script for `nft -f`. ports overrides DefaultPorts per endpoint
// (nil: all defaults).
//
// The table "inet warden" has an input chain with policy drop: it accepts
// established traffic, loopback, IPv6 neighbour discovery, and each of the
// role's ports from the networks allowed to reach the endpoints on it. It is
// meant for nodes dedicated to one role; other services on the node (SSH,
// monitoring) need their own accept rules in this chain, because a drop in
// any base chain is final. An unknown role gets no endpoint rules at all, so
// a mistake closes the node rather than opening it.
//
// Endpoints that share a port (the API and the Web Admin on 443) cannot be
// told apart by a packet filter, so the port admits the union of their
// networks and the app must apply each endpoint's own Allowlist per request.
func NFTables(r Rules, role string, ports map[Endpoint][]int) string {
	var b strings.Builder
	b.WriteString("#!/usr/sbin/nft -f\n")
	eps := RoleEndpoints(role)
	if eps == nil {
		fmt.Fprintf(&b, "# Warden network segregation: role %q has no endpoints, so no service port is opened.\n", role)
	} else {
		fmt.Fprintf(&b, "# Warden network segregation for the %s role. Generated; do not edit.\n", role)
	}
	b.WriteString("# Loading this file replaces the whole table atomically.\n")
	b.WriteString("table inet warden\ndelete table inet warden\n\ntable inet warden {\n")

	byPort := map[int][]Endpoint{}
	var ignored []string
	for _, ep := range eps {
		list, ok := ports[ep]
		if !ok {
			list = DefaultPorts()[ep]
		}
		for _, port := range list {
			switch {
			case port < 1 || port > 65535:
				ignored = append(ignored, fmt.Sprintf("# ignored invalid port %d of %s\n", port, ep))
			case !slices.Contains(byPort[port], ep):
				byPort[port] = append(byPort[port], ep)
			}
		}
	}
	portList := slices.Sorted(maps.Keys(byPort))

	type portRule struct {
		port   int
		eps    []Endpoint
		v4, v6 []netip.Prefix
	}
	var rules []portRule
	for _, port := range portList {
		var all []netip.Prefix
		for _, ep := range byPort[port] {
			all = append(all, r.Allowlist(ep)...)
		}
		pr := portRule{port: port, eps: byPort[port]}
		for _, p := range aggregate(all) {
			if p.Addr().Is4() {
				pr.v4 = append(pr.v4, p)
			} else {
				pr.v6 = append(pr.v6, p)
			}
		}
		rules = append(rules, pr)
	}

	for _, pr := range rules {
		names := make([]string, len(pr.eps))
		for i, ep := range pr.eps {
			names[i] = string(ep)
		}
		fmt.Fprintf(&b, "\t# tcp/%d: %s", pr.port, strings.Join(names, ", "))
		if len(pr.eps) > 1 {
			b.WriteString(" (shared port: the union of their networks; the app enforces each endpoint's own)")
		}
		b.WriteString("\n")
		writeSet(&b, fmt.Sprintf("tcp_%d_v4", pr.port), "ipv4_addr", pr.v4)
		writeSet(&b, fmt.Sprintf("tcp_%d_v6", pr.port), "ipv6_addr", pr.v6)
		b.WriteString("\n")
	}

	b.WriteString("\tchain input {\n")
	b.WriteString("\t\ttype filter hook input priority filter; policy drop;\n")
	b.WriteString("\t\tct state established,related accept\n")
	b.WriteString("\t\tct state invalid drop\n")
	b.WriteString("\t\tiif \"lo\" accept\n")
	b.WriteString("\t\t# IPv6 does not work without neighbour discovery.\n")
	b.WriteString("\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept\n")
	for _, line := range ignored {
		b.WriteString("\t\t" + line)
	}
	for _, pr := range rules {
		fmt.Fprintf(&b, "\t\ttcp dport %d ip saddr @tcp_%d_v4 accept\n", pr.port, pr.port)
		fmt.Fprintf(&b, "\t\ttcp dport %d ip6 saddr @tcp_%d_v6 accept\n", pr.port, pr.port)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// writeSet writes a named interval set; an empty set is still declared so
// that the rules referring to it load, and it admits nobody.
func writeSet(b *strings.Builder, name, typ string, prefixes []netip.Prefix) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n\t\tflags interval\n", name, typ)
	if len(prefixes) > 0 {
		elems := make([]string, len(prefixes))
		for i, p := range prefixes {
			elems[i] = p.String()
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
	}
	b.WriteString("\t}\n")
}
