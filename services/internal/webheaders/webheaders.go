// Package webheaders defines the HTTP security headers of the Webapp's Web
// Admin, validates operator-supplied values and applies them.
//
// The headers go on Web Admin pages only, never on API responses, as in the
// original client: every path outside the API prefix ("/v1/") is a Web Admin
// path.
package webheaders

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"path"
	"strings"
)

// Mode selects a set of default values.
type Mode string

const (
	// Recommended follows OWASP Secure Headers and Mozilla; the default.
	Recommended Mode = "recommended"
	// Compatible reproduces the original client's values, for operators who
	// must match an audit baseline written against it.
	Compatible Mode = "compatible"
)

// DefaultAPIPrefix is the API prefix of the original client.
const DefaultAPIPrefix = "/v1/"

// Headers holds one value per security header; an empty value means the
// header is not sent.
type Headers struct {
	ContentSecurityPolicy string
	// LegacyXContentSecurityPolicy is the obsolete X-Content-Security-Policy
	// the original client sent instead of Content-Security-Policy.
	LegacyXContentSecurityPolicy string
	XFrameOptions                string
	XXSSProtection               string
	XContentTypeOptions          string
	StrictTransportSecurity      string
	ReferrerPolicy               string
	CrossOriginOpenerPolicy      string
	CrossOriginResourcePolicy    string
	CacheControl                 string
	// Extra holds further headers by name; it may not replace the headers
	// above nor set hop-by-hop or framing headers (see Validate).
	Extra map[string]string
}

// Defaults returns the values of mode m. An unknown mode gets the
// recommended values: falling back to the stronger set can only add
// protection.
func Defaults(m Mode) Headers {
	if m == Compatible {
		return Headers{
			LegacyXContentSecurityPolicy: "default-src 'self'; script-src 'self' 'unsafe-inline'",
			XFrameOptions:                "DENY",
			XXSSProtection:               "1;",
			XContentTypeOptions:          "nosniff",
			StrictTransportSecurity:      "max-age=31536000; includeSubDomains",
		}
	}
	return Headers{
		ContentSecurityPolicy:     "default-src 'self'; form-action 'self'; base-uri 'self'; object-src 'none'; frame-ancestors 'none'; upgrade-insecure-requests",
		XFrameOptions:             "DENY",
		XXSSProtection:            "0",
		XContentTypeOptions:       "nosniff",
		StrictTransportSecurity:   "max-age=63072000; includeSubDomains",
		ReferrerPolicy:            "no-referrer",
		CrossOriginOpenerPolicy:   "same-origin",
		CrossOriginResourcePolicy: "same-origin",
		CacheControl:              "no-store",
	}
}

// field ties a Headers field to its header name and its name in the policy API.
type field struct {
	header string // canonical
	name   string // snake_case
	value  func(Headers) string
}

var fields = []field{
	{"Content-Security-Policy", "content_security_policy", func(h Headers) string { return h.ContentSecurityPolicy }},
	{"X-Content-Security-Policy", "legacy_x_content_security_policy", func(h Headers) string { return h.LegacyXContentSecurityPolicy }},
	{"X-Frame-Options", "x_frame_options", func(h Headers) string { return h.XFrameOptions }},
	{"X-Xss-Protection", "x_xss_protection", func(h Headers) string { return h.XXSSProtection }},
	{"X-Content-Type-Options", "x_content_type_options", func(h Headers) string { return h.XContentTypeOptions }},
	{"Strict-Transport-Security", "strict_transport_security", func(h Headers) string { return h.StrictTransportSecurity }},
	{"Referrer-Policy", "referrer_policy", func(h Headers) string { return h.ReferrerPolicy }},
	{"Cross-Origin-Opener-Policy", "cross_origin_opener_policy", func(h Headers) string { return h.CrossOriginOpenerPolicy }},
	{"Cross-Origin-Resource-Policy", "cross_origin_resource_policy", func(h Headers) string { return h.CrossOriginResourcePolicy }},
	{"Cache-Control", "cache_control", func(h Headers) string { return h.CacheControl }},
}

// Map returns the headers to send, by canonical header name; empty values
// are left out. It does not validate: call Validate first.
func (h Headers) Map() map[string]string {
	out := make(map[string]string, len(fields)+len(h.Extra))
	for name, v := range h.Extra {
		if v != "" {
			out[http.CanonicalHeaderKey(name)] = v
		}
	}
	// The named fields are written last so that they win over an Extra entry
	// that Validate would have refused.
	for _, f := range fields {
		if v := f.value(h); v != "" {
			out[f.header] = v
		}
	}
	return out
}

// IsAdminPath reports whether a request path is a Web Admin path, i.e. lies
// outside apiPrefix ("" means DefaultAPIPrefix).
//
// The path is cleaned first so that "/v1/../admin" counts as "/admin", and
// compared case-sensitively: "/V1/x" is not under "/v1/" and so gets the
// headers. Whenever the answer is in doubt it errs towards "admin", because
// security headers on an API response are harmless while a Web Admin page
// without them is not. For the same reason "/v1" itself (without the slash)
// is an admin path, as it is outside "/v1/".
func IsAdminPath(p, apiPrefix string) bool {
	prefix := normalisePrefix(apiPrefix)
	if prefix == "/" {
		return false
	}
	trailing := strings.HasSuffix(p, "/")
	p = path.Clean("/" + p)
	if trailing && p != "/" {
		p += "/"
	}
	return !strings.HasPrefix(p, prefix)
}

func normalisePrefix(prefix string) string {
	if prefix == "" {
		return DefaultAPIPrefix
	}
	prefix = path.Clean("/" + prefix)
	if prefix != "/" {
		prefix += "/"
	}
	return prefix
}

// Middleware sets the headers returned by headers on Web Admin responses
// (see IsAdminPath; apiPrefix may return "" for the default) and removes
// Server and X-Powered-By from every response. Both functions are called
// once per request so that a new policy takes effect without a restart; a
// nil function means no headers or the default prefix.
//
// The configured values replace whatever the handler set: they are the
// operator's policy, and the Webapp's own values are the original, weaker
// ones. Header names or values that are not valid HTTP are skipped, so a
// policy that bypassed Validate cannot inject headers.
func Middleware(next http.Handler, headers func() map[string]string, apiPrefix func() string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		prefix := ""
		if apiPrefix != nil {
			prefix = apiPrefix()
		}
		var set map[string]string
		if headers != nil && IsAdminPath(r.URL.Path, prefix) {
			set = headers()
		}
		sw := &secureWriter{ResponseWriter: w, set: set}
		next.ServeHTTP(sw, r)
		// A handler that writes nothing gets an implicit 200 from net/http
		// on the underlying writer, which bypasses WriteHeader below.
		if !sw.hijacked {
			sw.finish()
		}
	})
}

// secureWriter fixes the response headers at the moment they are sent, so
// that values the handler sets cannot undo the policy.
type secureWriter struct {
	http.ResponseWriter
	set      map[string]string
	hijacked bool
	// sent is set once the final header block has gone out; later changes
	// to the header map have no effect, so there is nothing left to fix.
	sent bool
}

// finish fixes the headers of the final response.
func (w *secureWriter) finish() {
	if !w.sent {
		w.prepare()
		w.sent = true
	}
}

// prepare fixes the headers of the next header block, informational (1xx)
// or final.
func (w *secureWriter) prepare() {
	h := w.ResponseWriter.Header()
	h.Del("Server")
	h.Del("X-Powered-By")
	for name, v := range w.set {
		if validName(name) && validValue(v) {
			h.Set(name, v)
		}
	}
}

func (w *secureWriter) WriteHeader(code int) {
	if code >= 200 {
		w.finish()
	} else {
		w.prepare()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *secureWriter) Write(b []byte) (int, error) {
	w.finish()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *secureWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush is implemented directly because streaming handlers still type-assert
// http.Flusher instead of using http.ResponseController.
func (w *secureWriter) Flush() {
	w.finish()
	// A writer that cannot flush just buffers; nothing to report.
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack is implemented directly for WebSocket libraries that type-assert
// http.Hijacker.
func (w *secureWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("hijack: %w", err)
	}
	w.hijacked = true
	return conn, rw, nil
}
