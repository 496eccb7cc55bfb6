package webheaders

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/warden-sec/warden/services/internal/issue"
)

// Issue is a validation finding; see package issue for the meaning of
// Downgrade.
type Issue = issue.Issue

// MinHSTSMaxAge is the shortest HSTS max-age accepted without an explicit
// downgrade: one year, the original client's value.
const MinHSTSMaxAge = 31536000

// Validate checks h. errs must be empty (or, for errors marked Downgrade,
// explicitly acknowledged) before h is applied; warnings are shown to the
// operator.
//
// Rules: every name and value is valid HTTP (no CR/LF or other control
// characters), so no header can be injected; Strict-Transport-Security parses
// and has max-age of at least one year; X-Frame-Options is DENY or
// SAMEORIGIN; X-Content-Type-Options is nosniff; a CSP with 'unsafe-eval',
// 'unsafe-inline' scripts or wildcard sources is warned about;
// Referrer-Policy, Cross-Origin-*-Policy and Cache-Control use known syntax;
// Extra neither replaces these headers nor sets hop-by-hop or framing
// headers.
func Validate(h Headers) (errs, warnings []Issue) {
	v := &validator{}
	for _, f := range fields {
		val := f.value(h)
		if !validValue(val) {
			v.err(f.name, false, "contains control characters (such as CR or LF): refused as header injection")
			continue
		}
		switch f.header {
		case "Content-Security-Policy", "X-Content-Security-Policy":
			v.csp(f.name, val)
		case "X-Frame-Options":
			v.frameOptions(f.name, val)
		case "X-Xss-Protection":
			v.xssProtection(f.name, val)
		case "X-Content-Type-Options":
			v.contentTypeOptions(f.name, val)
		case "Strict-Transport-Security":
			v.hsts(f.name, val)
		case "Referrer-Policy":
			v.referrerPolicy(f.name, val)
		case "Cross-Origin-Opener-Policy":
			v.oneOf(f.name, val, []string{"same-origin", "same-origin-allow-popups", "noopener-allow-popups", "unsafe-none"}, "unsafe-none")
		case "Cross-Origin-Resource-Policy":
			v.oneOf(f.name, val, []string{"same-origin", "same-site", "cross-origin"}, "cross-origin")
		case "Cache-Control":
			v.cacheControl(f.name, val)
		}
	}
	if h.ContentSecurityPolicy == "" && h.LegacyXContentSecurityPolicy == "" {
		v.warn("content_security_policy", true, "no content security policy is sent")
	}
	if h.LegacyXContentSecurityPolicy != "" {
		v.warn("legacy_x_content_security_policy", false, "X-Content-Security-Policy is obsolete and ignored by current browsers; set content_security_policy")
	}
	v.extra(h.Extra)
	return v.errs, v.warnings
}

type validator struct {
	errs, warnings []Issue
}

func (v *validator) err(field string, downgrade bool, format string, args ...any) {
	v.errs = append(v.errs, Issue{Field: field, Message: fmt.Sprintf(format, args...), Downgrade: downgrade})
}

func (v *validator) warn(field string, downgrade bool, format string, args ...any) {
	v.warnings = append(v.warnings, Issue{Field: field, Message: fmt.Sprintf(format, args...), Downgrade: downgrade})
}

var errHSTSSyntax = errors.New("malformed Strict-Transport-Security")

type hstsPolicy struct {
	maxAge            uint64
	includeSubDomains bool
	preload           bool
	unknown           []string
}

// parseHSTS follows RFC 6797 section 6.1: directive names are
// case-insensitive, values may be quoted, and a repeated directive makes
// browsers ignore the whole header, so it is an error here.
func parseHSTS(s string) (hstsPolicy, error) {
	var p hstsPolicy
	seen := map[string]bool{}
	for d := range strings.SplitSeq(s, ";") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		name, value, hasValue := strings.Cut(d, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if !validName(name) {
			return p, fmt.Errorf("%w: directive %q", errHSTSSyntax, d)
		}
		if seen[name] {
			return p, fmt.Errorf("%w: directive %q repeated (browsers then ignore the header)", errHSTSSyntax, name)
		}
		seen[name] = true
		switch name {
		case "max-age":
			value = strings.TrimSuffix(strings.TrimPrefix(value, `"`), `"`)
			n, err := strconv.ParseUint(value, 10, 64)
			if errors.Is(err, strconv.ErrRange) {
				n, err = ^uint64(0), nil
			}
			if err != nil {
				return p, fmt.Errorf("%w: max-age %q is not a number of seconds", errHSTSSyntax, value)
			}
			p.maxAge = n
		case "includesubdomains", "preload":
			if hasValue {
				return p, fmt.Errorf("%w: %s takes no value", errHSTSSyntax, name)
			}
			p.includeSubDomains = p.includeSubDomains || name == "includesubdomains"
			p.preload = p.preload || name == "preload"
		default:
			p.unknown = append(p.unknown, name)
		}
	}
	if !seen["max-age"] {
		return p, fmt.Errorf("%w: max-age missing", errHSTSSyntax)
	}
	return p, nil
}

func (v *validator) hsts(field, val string) {
	if val == "" {
		v.err(field, true, "not sent: browsers would accept plain HTTP for the Web Admin")
		return
	}
	p, err := parseHSTS(val)
	if err != nil {
		v.err(field, false, "%v", err)
		return
	}
	if p.maxAge < MinHSTSMaxAge {
		v.err(field, true, "max-age=%d is shorter than one year (%d)", p.maxAge, MinHSTSMaxAge)
	}
	if !p.includeSubDomains {
		v.warn(field, true, "includeSubDomains missing: subdomains may be reached over plain HTTP")
	}
	if p.preload {
		v.warn(field, false, "preload asks browsers to hard-code the domain; removal from the preload lists takes months")
	}
	for _, d := range p.unknown {
		v.warn(field, false, "unknown directive %q is ignored by browsers", d)
	}
}

func (v *validator) frameOptions(field, val string) {
	switch {
	case val == "":
		v.err(field, true, "not sent: the Web Admin could be framed (clickjacking) by browsers that ignore CSP frame-ancestors")
	case strings.EqualFold(val, "DENY"):
	case strings.EqualFold(val, "SAMEORIGIN"):
		v.warn(field, true, "SAMEORIGIN allows framing by pages of the same origin; DENY is the default")
	default:
		v.err(field, false, "%q is not DENY or SAMEORIGIN (ALLOW-FROM is obsolete and ignored)", val)
	}
}

func (v *validator) contentTypeOptions(field, val string) {
	switch {
	case val == "":
		v.err(field, true, "not sent: browsers may sniff content types")
	case !strings.EqualFold(strings.TrimSpace(val), "nosniff"):
		v.err(field, false, "%q is not nosniff", val)
	}
}

// xssProtection accepts "0" (turn the auditor off, as recommended) and the
// "1[; mode=block | report=<uri>]" forms, which are warned about because the
// auditor is gone from current browsers and could leak data in old ones.
func (v *validator) xssProtection(field, val string) {
	val = strings.TrimSpace(val)
	if val == "" || val == "0" {
		return
	}
	mode, params, _ := strings.Cut(val, ";")
	if strings.TrimSpace(mode) != "1" {
		v.err(field, false, "%q is not 0 or 1", val)
		return
	}
	for p := range strings.SplitSeq(params, ";") {
		p = strings.TrimSpace(p)
		name, _, _ := strings.Cut(p, "=")
		if p != "" && !strings.EqualFold(name, "mode") && !strings.EqualFold(name, "report") {
			v.err(field, false, "unknown parameter %q", p)
			return
		}
	}
	v.warn(field, false, "the XSS auditor is deprecated; \"0\" with a content security policy is recommended")
}

// scriptDirectives are the CSP directives where 'unsafe-inline' allows
// injected scripts to run.
var scriptDirectives = []string{"default-src", "script-src", "script-src-elem", "script-src-attr"}

func (v *validator) csp(field, val string) {
	seen := map[string]bool{}
	for d := range strings.SplitSeq(val, ";") {
		tokens := strings.Fields(d)
		if len(tokens) == 0 {
			continue
		}
		name := strings.ToLower(tokens[0])
		if !isCSPDirectiveName(name) {
			v.err(field, false, "%q is not a directive name", tokens[0])
			continue
		}
		if seen[name] {
			v.warn(field, false, "directive %s repeated: browsers ignore all but the first", name)
			continue
		}
		seen[name] = true
		for _, src := range tokens[1:] {
			lower := strings.ToLower(src)
			switch {
			case lower == "'unsafe-eval'":
				v.warn(field, true, "%s allows 'unsafe-eval'", name)
			case lower == "'unsafe-inline'" && slices.Contains(scriptDirectives, name):
				v.warn(field, true, "%s allows 'unsafe-inline' scripts", name)
			case isWildcardSource(lower):
				v.warn(field, true, "%s allows any host (%s)", name, src)
			}
		}
	}
}

func isCSPDirectiveName(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return s != ""
}

// isWildcardSource reports whether a CSP source expression matches any host:
// "*", "https://*", "*:443", or a bare network scheme such as "https:".
func isWildcardSource(src string) bool {
	switch src {
	case "http:", "https:", "ws:", "wss:":
		return true
	}
	if _, rest, ok := strings.Cut(src, "://"); ok {
		src = rest
	}
	host, _, _ := strings.Cut(src, "/")
	host, _, _ = strings.Cut(host, ":")
	return host == "*"
}

var referrerPolicies = []string{
	"no-referrer", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin",
	"same-origin", "strict-origin", "strict-origin-when-cross-origin", "unsafe-url",
}

// referrerPolicy accepts the comma-separated fallback list the
// specification allows; browsers use the last value they know.
func (v *validator) referrerPolicy(field, val string) {
	if val == "" {
		return
	}
	for p := range strings.SplitSeq(val, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		switch {
		case !slices.Contains(referrerPolicies, p):
			v.err(field, false, "%q is not a referrer policy", p)
		case p == "unsafe-url" || p == "no-referrer-when-downgrade":
			v.warn(field, true, "%s sends full URLs, including paths, to other sites", p)
		}
	}
}

// oneOf checks a header whose value is one keyword, optionally followed by
// parameters (COOP allows "; report-to=…").
func (v *validator) oneOf(field, val string, allowed []string, weak string) {
	if val == "" {
		return
	}
	kw, _, _ := strings.Cut(val, ";")
	kw = strings.TrimSpace(kw)
	switch {
	case !slices.Contains(allowed, kw):
		v.err(field, false, "%q is not one of %s", kw, strings.Join(allowed, ", "))
	case kw == weak:
		v.warn(field, true, "%s disables the protection", kw)
	}
}

func (v *validator) cacheControl(field, val string) {
	if val == "" {
		return
	}
	for d := range strings.SplitSeq(val, ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(d), "=")
		if !validName(name) {
			v.err(field, false, "%q is not a cache directive", strings.TrimSpace(d))
			return
		}
	}
}

// hopByHop headers describe one connection, not the response; a proxy or
// net/http itself manages them, and setting them can desynchronise framing.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Te", "Trailer",
	"Upgrade", "Proxy-Authenticate", "Proxy-Authorization",
}

// serverOwned headers belong to the handler or to net/http; a static policy
// value would break responses or defeat the middleware's removals.
var serverOwned = []string{
	"Content-Length", "Content-Type", "Content-Encoding", "Content-Range", "Date", "Host",
	"Location", "Set-Cookie", "Server", "X-Powered-By",
}

func (v *validator) extra(extra map[string]string) {
	names := make([]string, 0, len(extra))
	for name := range extra {
		names = append(names, name)
	}
	slices.Sort(names)
	seen := map[string]string{}
	for _, name := range names {
		val := extra[name]
		field := fmt.Sprintf("extra[%q]", name)
		if !validName(name) {
			v.err(field, false, "not a valid header name (letters, digits and !#$%%&'*+-.^_`|~ only)")
			continue
		}
		canon := http.CanonicalHeaderKey(name)
		if prev, ok := seen[canon]; ok {
			v.err(field, false, "same header as extra[%q] (header names are case-insensitive)", prev)
			continue
		}
		seen[canon] = name
		for _, f := range fields {
			if f.header == canon {
				v.err(field, false, "is a security header: set %s instead", f.name)
			}
		}
		switch {
		case slices.Contains(hopByHop, canon):
			v.err(field, false, "hop-by-hop header may not be set")
		case slices.Contains(serverOwned, canon):
			v.err(field, false, "is managed by the server and may not be set")
		}
		if !validValue(val) {
			v.err(field, false, "value contains control characters (such as CR or LF): refused as header injection")
		} else if val == "" {
			v.warn(field, false, "empty value: the header is not sent")
		}
	}
}

// validName reports whether s is an RFC 9110 token.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// validValue reports whether s is a valid field value: no control
// characters except horizontal tab, as net/http enforces.
func validValue(s string) bool {
	for i := range len(s) {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
