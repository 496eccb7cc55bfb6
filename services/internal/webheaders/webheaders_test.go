package webheaders

import (
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
)

func TestIsAdminPath(t *testing.T) {
	tests := []struct {
		path, prefix string
		admin        bool
	}{
		{"/", "", true},
		{"", "", true},
		{"/admin", "", true},
		{"/admin/users", "", true},
		{"/v1/messages", "", false},
		{"/v1/", "", false},
		{"/v1", "", true},
		{"/v1x/messages", "", true},
		{"/v10/messages", "", true},
		{"/v1/../admin", "", true},
		{"/v1/users/../../admin", "", true},
		{"/admin/../v1/users", "", false},
		{"/v1/./messages", "", false},
		{"//v1/messages", "", false},
		{"v1/messages", "", false},
		{"/V1/messages", "", true},
		{"/v1/messages", "/v1/", false},
		{"/v1/messages", "/v1", false},
		{"/api/x", "/api", false},
		{"/api", "/api/", true},
		{"/v1/messages", "/api/", true},
		{"/anything", "/", false},
	}
	for _, tt := range tests {
		t.Run(tt.path+" prefix "+tt.prefix, func(t *testing.T) {
			if got := IsAdminPath(tt.path, tt.prefix); got != tt.admin {
				t.Errorf("IsAdminPath(%q, %q) = %v, want %v", tt.path, tt.prefix, got, tt.admin)
			}
		})
	}
}

func TestDefaultsAndMap(t *testing.T) {
	rec := Defaults(Recommended).Map()
	want := map[string]string{
		"Content-Security-Policy":      "default-src 'self'; form-action 'self'; base-uri 'self'; object-src 'none'; frame-ancestors 'none'; upgrade-insecure-requests",
		"X-Frame-Options":              "DENY",
		"X-Xss-Protection":             "0",
		"X-Content-Type-Options":       "nosniff",
		"Strict-Transport-Security":    "max-age=63072000; includeSubDomains",
		"Referrer-Policy":              "no-referrer",
		"Cross-Origin-Opener-Policy":   "same-origin",
		"Cross-Origin-Resource-Policy": "same-origin",
		"Cache-Control":                "no-store",
	}
	if !maps.Equal(rec, want) {
		t.Errorf("recommended Map() = %v, want %v", rec, want)
	}
	compat := Defaults(Compatible).Map()
	wantCompat := map[string]string{
		"X-Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'",
		"X-Frame-Options":           "DENY",
		"X-Xss-Protection":          "1;",
		"X-Content-Type-Options":    "nosniff",
		"Strict-Transport-Security": "max-age=31536000; includeSubDomains",
	}
	if !maps.Equal(compat, wantCompat) {
		t.Errorf("compatible Map() = %v, want %v", compat, wantCompat)
	}
	if got := Defaults("strict"); !maps.Equal(got.Map(), rec) {
		t.Errorf("unknown mode gave %v, want the recommended set", got.Map())
	}

	h := Headers{XFrameOptions: "DENY", Extra: map[string]string{"permissions-policy": "camera=()", "X-Frame-Options": "SAMEORIGIN", "X-Empty": ""}}
	got := h.Map()
	if want := map[string]string{"Permissions-Policy": "camera=()", "X-Frame-Options": "DENY"}; !maps.Equal(got, want) {
		t.Errorf("Map() = %v, want %v (canonical names, named fields win, empty omitted)", got, want)
	}
}

func TestDefaultsValidate(t *testing.T) {
	errs, warnings := Validate(Defaults(Recommended))
	if len(errs) != 0 || len(warnings) != 0 {
		t.Errorf("recommended defaults: errs %v, warnings %v; want none", errs, warnings)
	}
	errs, warnings = Validate(Defaults(Compatible))
	if len(errs) != 0 {
		t.Errorf("compatible defaults: errs %v, want none", errs)
	}
	var fields []string
	for _, w := range warnings {
		fields = append(fields, w.Field)
	}
	want := []string{"legacy_x_content_security_policy", "x_xss_protection", "legacy_x_content_security_policy"}
	if !slices.Equal(fields, want) {
		t.Errorf("compatible defaults warn on %v, want %v (%v)", fields, want, warnings)
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
		modify func(*Headers)
		want   want
	}{
		{"hsts two years", func(h *Headers) { h.StrictTransportSecurity = "max-age=63072000; includeSubDomains" }, ok},
		{"hsts one year quoted, mixed case", func(h *Headers) { h.StrictTransportSecurity = `MAX-AGE="31536000";includesubdomains;` }, ok},
		{"hsts huge max-age", func(h *Headers) { h.StrictTransportSecurity = "max-age=99999999999999999999999; includeSubDomains" }, ok},
		{"hsts too short", func(h *Headers) { h.StrictTransportSecurity = "max-age=86400; includeSubDomains" }, want{"strict_transport_security", true, true}},
		{"hsts zero", func(h *Headers) { h.StrictTransportSecurity = "max-age=0" }, want{"strict_transport_security", true, true}},
		{"hsts missing", func(h *Headers) { h.StrictTransportSecurity = "" }, want{"strict_transport_security", true, true}},
		{"hsts no max-age", func(h *Headers) { h.StrictTransportSecurity = "includeSubDomains" }, want{"strict_transport_security", true, false}},
		{"hsts non-numeric", func(h *Headers) { h.StrictTransportSecurity = "max-age=1y" }, want{"strict_transport_security", true, false}},
		{"hsts negative", func(h *Headers) { h.StrictTransportSecurity = "max-age=-1" }, want{"strict_transport_security", true, false}},
		{"hsts repeated directive", func(h *Headers) { h.StrictTransportSecurity = "max-age=63072000; max-age=0" }, want{"strict_transport_security", true, false}},
		{"hsts includeSubDomains with value", func(h *Headers) { h.StrictTransportSecurity = "max-age=63072000; includeSubDomains=1" }, want{"strict_transport_security", true, false}},
		{"hsts without includeSubDomains", func(h *Headers) { h.StrictTransportSecurity = "max-age=63072000" }, want{"strict_transport_security", false, true}},
		{"hsts preload", func(h *Headers) { h.StrictTransportSecurity = "max-age=63072000; includeSubDomains; preload" }, want{"strict_transport_security", false, false}},
		{"hsts unknown directive", func(h *Headers) { h.StrictTransportSecurity = "max-age=63072000; includeSubDomains; foo" }, want{"strict_transport_security", false, false}},

		{"xfo deny lower case", func(h *Headers) { h.XFrameOptions = "deny" }, ok},
		{"xfo sameorigin", func(h *Headers) { h.XFrameOptions = "SAMEORIGIN" }, want{"x_frame_options", false, true}},
		{"xfo allow-from", func(h *Headers) { h.XFrameOptions = "ALLOW-FROM https://example.com" }, want{"x_frame_options", true, false}},
		{"xfo missing", func(h *Headers) { h.XFrameOptions = "" }, want{"x_frame_options", true, true}},

		{"xcto nosniff", func(h *Headers) { h.XContentTypeOptions = "nosniff" }, ok},
		{"xcto other", func(h *Headers) { h.XContentTypeOptions = "sniff" }, want{"x_content_type_options", true, false}},
		{"xcto missing", func(h *Headers) { h.XContentTypeOptions = "" }, want{"x_content_type_options", true, true}},

		{"xxss off", func(h *Headers) { h.XXSSProtection = "0" }, ok},
		{"xxss mode=block", func(h *Headers) { h.XXSSProtection = "1; mode=block" }, want{"x_xss_protection", false, false}},
		{"xxss garbage", func(h *Headers) { h.XXSSProtection = "2" }, want{"x_xss_protection", true, false}},
		{"xxss unknown parameter", func(h *Headers) { h.XXSSProtection = "1; foo=bar" }, want{"x_xss_protection", true, false}},

		{"csp strict", func(h *Headers) { h.ContentSecurityPolicy = "default-src 'none'; img-src 'self' data:" }, ok},
		{"csp scoped wildcard host", func(h *Headers) { h.ContentSecurityPolicy = "default-src 'self' https://*.example.com" }, ok},
		{"csp unsafe-inline styles", func(h *Headers) { h.ContentSecurityPolicy = "default-src 'self'; style-src 'self' 'unsafe-inline'" }, ok},
		{"csp unsafe-eval", func(h *Headers) { h.ContentSecurityPolicy = "default-src 'self'; script-src 'self' 'unsafe-eval'" }, want{"content_security_policy", false, true}},
		{"csp unsafe-inline scripts", func(h *Headers) { h.ContentSecurityPolicy = "script-src 'self' 'unsafe-inline'" }, want{"content_security_policy", false, true}},
		{"csp star", func(h *Headers) { h.ContentSecurityPolicy = "default-src *" }, want{"content_security_policy", false, true}},
		{"csp scheme wildcard", func(h *Headers) { h.ContentSecurityPolicy = "default-src 'self'; connect-src https://*" }, want{"content_security_policy", false, true}},
		{"csp bare https scheme", func(h *Headers) { h.ContentSecurityPolicy = "script-src https:" }, want{"content_security_policy", false, true}},
		{"csp bad directive name", func(h *Headers) { h.ContentSecurityPolicy = "default_src 'self'" }, want{"content_security_policy", true, false}},
		{"csp repeated directive", func(h *Headers) { h.ContentSecurityPolicy = "default-src 'self'; default-src *" }, want{"content_security_policy", false, false}},
		{"csp none at all", func(h *Headers) { h.ContentSecurityPolicy = "" }, want{"content_security_policy", false, true}},
		{"legacy csp unsafe-eval", func(h *Headers) {
			h.ContentSecurityPolicy = ""
			h.LegacyXContentSecurityPolicy = "script-src 'unsafe-eval'"
		}, want{"legacy_x_content_security_policy", false, true}},

		{"referrer strict-origin list", func(h *Headers) { h.ReferrerPolicy = "no-referrer, strict-origin-when-cross-origin" }, ok},
		{"referrer unsafe-url", func(h *Headers) { h.ReferrerPolicy = "unsafe-url" }, want{"referrer_policy", false, true}},
		{"referrer unknown", func(h *Headers) { h.ReferrerPolicy = "never" }, want{"referrer_policy", true, false}},

		{"coop with report-to", func(h *Headers) { h.CrossOriginOpenerPolicy = `same-origin; report-to="coop"` }, ok},
		{"coop unsafe-none", func(h *Headers) { h.CrossOriginOpenerPolicy = "unsafe-none" }, want{"cross_origin_opener_policy", false, true}},
		{"coop unknown", func(h *Headers) { h.CrossOriginOpenerPolicy = "isolated" }, want{"cross_origin_opener_policy", true, false}},
		{"corp same-site", func(h *Headers) { h.CrossOriginResourcePolicy = "same-site" }, ok},
		{"corp cross-origin", func(h *Headers) { h.CrossOriginResourcePolicy = "cross-origin" }, want{"cross_origin_resource_policy", false, true}},
		{"corp unknown", func(h *Headers) { h.CrossOriginResourcePolicy = "anyone" }, want{"cross_origin_resource_policy", true, false}},

		{"cache-control list", func(h *Headers) { h.CacheControl = "no-store, max-age=0" }, ok},
		{"cache-control bad", func(h *Headers) { h.CacheControl = "no store" }, want{"cache_control", true, false}},

		{"crlf in hsts", func(h *Headers) { h.StrictTransportSecurity = "max-age=63072000\r\nSet-Cookie: a=b" }, want{"strict_transport_security", true, false}},
		{"lf in csp", func(h *Headers) { h.ContentSecurityPolicy = "default-src 'self'\nX-Evil: 1" }, want{"content_security_policy", true, false}},
		{"nul in cache-control", func(h *Headers) { h.CacheControl = "no-store\x00" }, want{"cache_control", true, false}},
		{"tab in value allowed", func(h *Headers) { h.CacheControl = "no-store,\tprivate" }, ok},

		{"extra permissions-policy", func(h *Headers) { h.Extra = map[string]string{"Permissions-Policy": "camera=(), microphone=()"} }, ok},
		{"extra overrides csp", func(h *Headers) { h.Extra = map[string]string{"content-security-policy": "default-src *"} }, want{`extra["content-security-policy"]`, true, false}},
		{"extra overrides hsts", func(h *Headers) { h.Extra = map[string]string{"Strict-Transport-Security": "max-age=0"} }, want{`extra["Strict-Transport-Security"]`, true, false}},
		{"extra hop-by-hop", func(h *Headers) { h.Extra = map[string]string{"Transfer-Encoding": "chunked"} }, want{`extra["Transfer-Encoding"]`, true, false}},
		{"extra connection", func(h *Headers) { h.Extra = map[string]string{"connection": "close"} }, want{`extra["connection"]`, true, false}},
		{"extra server-owned", func(h *Headers) { h.Extra = map[string]string{"Set-Cookie": "a=b"} }, want{`extra["Set-Cookie"]`, true, false}},
		{"extra bad name", func(h *Headers) { h.Extra = map[string]string{"X-A: b\r\nX-Evil": "1"} }, want{`extra["X-A: b\r\nX-Evil"]`, true, false}},
		{"extra name with space", func(h *Headers) { h.Extra = map[string]string{"X Foo": "1"} }, want{`extra["X Foo"]`, true, false}},
		{"extra crlf value", func(h *Headers) { h.Extra = map[string]string{"X-Foo": "1\r\nSet-Cookie: a=b"} }, want{`extra["X-Foo"]`, true, false}},
		{"extra case duplicate", func(h *Headers) { h.Extra = map[string]string{"X-Foo": "1", "x-foo": "2"} }, want{`extra["x-foo"]`, true, false}},
		{"extra empty value", func(h *Headers) { h.Extra = map[string]string{"X-Foo": ""} }, want{`extra["X-Foo"]`, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Defaults(Recommended)
			tt.modify(&h)
			errs, warnings := Validate(h)
			if tt.want == ok {
				if len(errs) != 0 || len(warnings) != 0 {
					t.Fatalf("errs %v, warnings %v; want none", errs, warnings)
				}
				return
			}
			list, other := warnings, errs
			if tt.want.isError {
				list, other = errs, warnings
			}
			found := false
			for _, i := range list {
				if i.Field == tt.want.field && i.Downgrade == tt.want.downgrade {
					found = true
				}
			}
			if !found {
				t.Fatalf("want %+v among %v (other list %v)", tt.want, list, other)
			}
			if !tt.want.isError && len(errs) != 0 {
				t.Fatalf("want only a warning, got errors %v", errs)
			}
		})
	}
}

// handler imitates an app that advertises itself and sets weaker values.
func handler(status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "waweb/2.0")
		w.Header().Set("X-Powered-By", "Express")
		if r.URL.Path == "/admin/weak" {
			w.Header().Set("X-Frame-Options", "SAMEORIGIN")
		}
		if status != 0 {
			w.WriteHeader(status)
		}
		if body != "" {
			_, _ = io.WriteString(w, body)
		}
	})
}

var fiveHeaders = []string{"Content-Security-Policy", "X-Frame-Options", "X-Xss-Protection", "X-Content-Type-Options", "Strict-Transport-Security"}

func TestMiddleware(t *testing.T) {
	headers := Defaults(Recommended).Map()
	tests := []struct {
		name       string
		path       string
		status     int
		body       string
		wantPolicy bool
	}{
		{"admin page", "/admin", http.StatusOK, "<html>", true},
		{"root", "/", 0, "<html>", true},
		{"admin error", "/admin/missing", http.StatusNotFound, "", true},
		{"admin empty response", "/admin/empty", 0, "", true},
		{"admin handler weaker value", "/admin/weak", 0, "x", true},
		{"traversal to admin", "/v1/../admin", 0, "x", true},
		{"api", "/v1/messages", http.StatusOK, `{"messages":[]}`, false},
		{"api empty response", "/v1/health", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mw := Middleware(handler(tt.status, tt.body), func() map[string]string { return headers }, func() string { return "" })
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "http://warden.test/", nil)
			req.URL.Path = tt.path
			mw.ServeHTTP(rec, req)
			res := rec.Result()
			for _, h := range fiveHeaders {
				got := res.Header.Get(h)
				if tt.wantPolicy && got != headers[h] {
					t.Errorf("%s = %q, want %q", h, got, headers[h])
				}
				if !tt.wantPolicy && got != "" {
					t.Errorf("%s = %q on an API path, want absent", h, got)
				}
			}
			for _, h := range []string{"Server", "X-Powered-By"} {
				if got := res.Header.Get(h); got != "" {
					t.Errorf("%s = %q, want removed", h, got)
				}
			}
		})
	}
}

func TestMiddlewareCompatibleFiveHeaders(t *testing.T) {
	headers := Defaults(Compatible).Map()
	mw := Middleware(handler(0, "x"), func() map[string]string { return headers }, nil)
	rec := httptest.NewRecorder()
	mw.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	for _, h := range []string{"X-Content-Security-Policy", "X-Frame-Options", "X-Xss-Protection", "X-Content-Type-Options", "Strict-Transport-Security"} {
		if got := rec.Header().Get(h); got == "" || got != headers[h] {
			t.Errorf("%s = %q, want %q", h, got, headers[h])
		}
	}
}

func TestMiddlewareRealServer(t *testing.T) {
	var calls atomic.Int32
	headers := func() map[string]string {
		calls.Add(1)
		m := Defaults(Recommended).Map()
		m["X-Injected"] = "1\r\nSet-Cookie: session=evil"
		m["Bad Name"] = "1"
		return m
	}
	prefix := func() string { return "/api/" }
	srv := httptest.NewServer(Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Powered-By", "PHP")
		_, _ = io.WriteString(w, "chunk")
		// Streaming handlers assert http.Flusher directly.
		f, ok := w.(http.Flusher)
		if !ok {
			t.Error("wrapped writer is not an http.Flusher")
			return
		}
		f.Flush()
	}), headers, prefix))
	t.Cleanup(srv.Close)

	for _, tt := range []struct {
		path       string
		wantPolicy bool
	}{{"/admin", true}, {"/v1/messages", true}, {"/api/messages", false}} {
		res, err := srv.Client().Get(srv.URL + tt.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tt.path, err)
		}
		res.Body.Close()
		if got := res.Header.Get("Strict-Transport-Security") != ""; got != tt.wantPolicy {
			t.Errorf("GET %s: HSTS present = %v, want %v", tt.path, got, tt.wantPolicy)
		}
		if res.Header.Get("X-Powered-By") != "" || res.Header.Get("Set-Cookie") != "" || res.Header.Get("X-Injected") != "" {
			t.Errorf("GET %s: unexpected headers %v", tt.path, res.Header)
		}
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("headers() called %d times, want once per admin request (2)", got)
	}
}

func TestMiddlewareHijack(t *testing.T) {
	srv := httptest.NewServer(Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj, ok := w.(http.Hijacker)
		if !ok {
			t.Error("wrapped writer is not an http.Hijacker")
			return
		}
		conn, rw, err := hj.Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		_ = rw.Flush()
	}), func() map[string]string { return Defaults(Recommended).Map() }, nil))
	t.Cleanup(srv.Close)
	res, err := srv.Client().Get(srv.URL + "/admin/ws")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if string(body) != "ok" {
		t.Errorf("body = %q, want the hijacked response", body)
	}
}

func TestMiddlewareInformationalResponse(t *testing.T) {
	srv := httptest.NewServer(Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		// Set after the 103: the final response must still be cleaned.
		w.Header().Set("Server", "waweb")
		_, _ = io.WriteString(w, "page")
	}), func() map[string]string { return Defaults(Recommended).Map() }, nil))
	t.Cleanup(srv.Close)
	res, err := srv.Client().Get(srv.URL + "/admin")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Server") != "" || res.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("final response %d with headers %v; want 200, no Server, X-Frame-Options DENY", res.StatusCode, res.Header)
	}
}
