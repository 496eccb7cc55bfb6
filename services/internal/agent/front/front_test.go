package front

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/agent/agenttest"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/netzone"
	"github.com/warden-sec/warden/services/internal/tlsprofile"
	"github.com/warden-sec/warden/services/internal/webheaders"
)

var fiveHeaders = []string{"Content-Security-Policy", "X-Frame-Options", "X-Xss-Protection", "X-Content-Type-Options", "Strict-Transport-Security"}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func allow(m map[policyv1.Endpoint][]string) map[policyv1.Endpoint]*netzone.Allowlist {
	out := map[policyv1.Endpoint]*netzone.Allowlist{}
	for ep, cidrs := range m {
		var pfx []netip.Prefix
		for _, c := range cidrs {
			pfx = append(pfx, netip.MustParsePrefix(c))
		}
		out[ep] = netzone.NewAllowlist(pfx)
	}
	return out
}

func policy(profile tlsprofile.Name, allowlists map[policyv1.Endpoint][]string) *live.Policy {
	return &live.Policy{
		Number: 1, Profile: profile, Headers: webheaders.Defaults(webheaders.Recommended).Map(), APIPrefix: "/v1/",
		Allow: allow(allowlists), NoZones: len(allowlists) == 0,
	}
}

// run starts fn in the background until the test ends.
func run(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("front stopped with %v", err)
		}
	})
}

// needLoopback skips a test that stands in for zones with loopback networks on a host (such as macOS)
// that only has 127.0.0.1.
func needLoopback(t *testing.T, ip string) {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot bind %s: %v", ip, err)
	}
	_ = l.Close()
}

// client dials from the loopback address src (127.0.0.x) and trusts pool.
func client(src string, pool *x509.CertPool, maxVersion uint16) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:     d.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: maxVersion},
	}}
}

func TestWebappFront(t *testing.T) {
	needLoopback(t, "127.0.0.2")
	noLeaks(t)
	ca := agenttest.NewCA(t)
	https := ca.Mint(agenttest.Node(identity.RoleWebapp, "web-1"), time.Hour)
	state := &live.State{}
	state.SetCreds(ca.Creds(map[certv1.CertKind]agenttest.Leaf{certv1.CertKind_CERT_KIND_WEBAPP_HTTPS: https}))
	state.SetPolicy(policy(tlsprofile.Modern, map[policyv1.Endpoint][]string{
		policyv1.Endpoint_ENDPOINT_WEBAPP_ADMIN: {"127.0.0.1/32"},
		policyv1.Endpoint_ENDPOINT_WEBAPP_API:   {"127.0.0.0/8"},
	}))
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "webapp/1.0")
		w.Header().Set("X-Frame-Options", "ALLOWALL")
		fmt.Fprintf(w, "path=%s forwarded=%s", r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(upstream.Close)
	up, _ := url.Parse(upstream.URL)
	ln := listen(t)
	w, err := NewWebapp(WebappConfig{Listener: ln, Upstream: up, State: state, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	run(t, w.Run)
	base := "https://" + ln.Addr().String()
	get := func(c *http.Client, path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	mgmt := client("127.0.0.1", ca.Pool(), 0)
	other := client("127.0.0.2", ca.Pool(), 0)

	t.Run("admin path gets the headers", func(t *testing.T) {
		resp, body := get(mgmt, "/admin/login")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "path=/admin/login") {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		for _, h := range fiveHeaders {
			if resp.Header.Get(h) == "" {
				t.Errorf("admin response lacks %s", h)
			}
		}
		if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("X-Frame-Options = %q: the policy must win over the app", got)
		}
		if resp.Header.Get("Server") != "" {
			t.Error("Server header not removed")
		}
	})
	t.Run("API path gets none", func(t *testing.T) {
		resp, body := get(mgmt, "/v1/messages")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "path=/v1/messages") {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		for _, h := range fiveHeaders {
			if h == "X-Frame-Options" {
				continue // the app's own value passes through on API paths
			}
			if v := resp.Header.Get(h); v != "" {
				t.Errorf("API response carries %s: %s", h, v)
			}
		}
		if got := resp.Header.Get("X-Frame-Options"); got != "ALLOWALL" {
			t.Errorf("X-Frame-Options on API = %q, want the app's value", got)
		}
	})
	t.Run("admin refused outside its zone", func(t *testing.T) {
		resp, _ := get(other, "/admin/login")
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("admin from 127.0.0.2: status %d, want 403", resp.StatusCode)
		}
		resp, _ = get(other, "/v1/messages")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("API from 127.0.0.2: status %d, want 200", resp.StatusCode)
		}
		resp, _ = get(other, "/v1/../admin")
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("dot-dot to admin from 127.0.0.2: status %d, want 403", resp.StatusCode)
		}
	})

	t.Run("profile hot reload keeps connections", func(t *testing.T) {
		tls12 := client("127.0.0.1", ca.Pool(), tls.VersionTLS12)
		if _, err := tls12.Get(base + "/v1/x"); err == nil {
			t.Fatal("TLS 1.2 client connected under MODERN")
		}
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		keep := client("127.0.0.1", ca.Pool(), 0)
		req := func() int {
			r, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, base+"/v1/x", nil)
			resp, err := keep.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		req()
		pol := *state.Policy()
		pol.Profile = tlsprofile.Intermediate
		state.SetPolicy(&pol)
		if code := req(); code != http.StatusOK || !reused {
			t.Errorf("connection opened before the change: status %d reused %v, want 200 on the same connection", code, reused)
		}
		resp, err := tls12.Get(base + "/v1/x")
		if err != nil {
			t.Fatalf("TLS 1.2 client refused under INTERMEDIATE: %v", err)
		}
		resp.Body.Close()
		if resp.TLS.Version != tls.VersionTLS12 {
			t.Errorf("negotiated %x", resp.TLS.Version)
		}
	})

	t.Run("certificate hot reload", func(t *testing.T) {
		next := ca.Mint(agenttest.Node(identity.RoleWebapp, "web-1"), time.Hour)
		state.SetCreds(ca.Creds(map[certv1.CertKind]agenttest.Leaf{certv1.CertKind_CERT_KIND_WEBAPP_HTTPS: next}))
		resp, _ := get(client("127.0.0.1", ca.Pool(), 0), "/v1/x")
		if got := resp.TLS.PeerCertificates[0].SerialNumber; got.Cmp(next.Cert.SerialNumber) != 0 {
			t.Errorf("served serial %x, want the new %x", got, next.Cert.SerialNumber)
		}
	})

	t.Run("no zones closes everything", func(t *testing.T) {
		state.SetPolicy(live.DefaultPolicy())
		for _, p := range []string{"/admin", "/v1/x"} {
			resp, _ := get(mgmt, p)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s without zones: status %d, want 403", p, resp.StatusCode)
			}
		}
	})
}

// mtlsDial connects to addr from src with cert and returns the connection after a successful first
// exchange of line, or the error.
func mtlsExchange(src, addr string, cert *tls.Certificate, pool *x509.CertPool, line string) (string, error) {
	d := &tls.Dialer{
		NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second},
		Config:    &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13},
	}
	if cert != nil {
		d.Config.Certificates = []tls.Certificate{*cert}
	}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, line); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

// noLeaks fails the test if it leaves goroutines behind; call it first, so that it runs after every
// other cleanup.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func TestCommFront(t *testing.T) {
	needLoopback(t, "127.0.0.2")
	noLeaks(t)
	ca := agenttest.NewCA(t)
	comm := ca.Mint(agenttest.Node(identity.RoleCoreapp, "core-1"), time.Hour)
	web := ca.Mint(agenttest.Node(identity.RoleWebapp, "web-1"), time.Hour)
	core := ca.Mint(agenttest.Node(identity.RoleCoreapp, "core-2"), time.Hour)
	foreign := agenttest.NewCA(t).Mint(agenttest.Node(identity.RoleWebapp, "web-1"), time.Hour)
	state := &live.State{}
	creds := ca.Creds(map[certv1.CertKind]agenttest.Leaf{certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION: comm})
	state.SetCreds(creds)
	state.SetPolicy(policy(tlsprofile.Modern, map[policyv1.Endpoint][]string{policyv1.Endpoint_ENDPOINT_COREAPP_COMMUNICATION: {"127.0.0.1/32"}}))

	echo := agenttest.LineEcho(t, "echo ")
	ln := listen(t)
	f, err := NewComm(CommConfig{Listener: ln, Upstream: echo.Addr().String(), State: state, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	run(t, f.Run)
	addr := ln.Addr().String()

	for _, tc := range []struct {
		name string
		src  string
		cert *tls.Certificate
		ok   bool
	}{
		{"webapp identity", "127.0.0.1", web.TLS, true},
		{"coreapp identity", "127.0.0.1", core.TLS, false},
		{"no client certificate", "127.0.0.1", nil, false},
		{"certificate from another CA", "127.0.0.1", foreign.TLS, false},
		{"webapp outside the zone", "127.0.0.2", web.TLS, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mtlsExchange(tc.src, addr, tc.cert, ca.Pool(), "hello\n")
			if tc.ok && (err != nil || got != "echo hello\n") {
				t.Fatalf("got %q, %v; want the echo", got, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("got %q, want a refusal", got)
			}
		})
	}
	t.Run("revoked webapp", func(t *testing.T) {
		revoked := *creds
		revoked.Revoked = map[string]bool{fmt.Sprintf("%x", web.Cert.SerialNumber): true}
		state.SetCreds(&revoked)
		t.Cleanup(func() { state.SetCreds(creds) })
		if got, err := mtlsExchange("127.0.0.1", addr, web.TLS, ca.Pool(), "hello\n"); err == nil {
			t.Fatalf("revoked certificate accepted: %q", got)
		}
	})
}

func TestControlEndpointAndProbe(t *testing.T) {
	noLeaks(t)
	ca := agenttest.NewCA(t)
	aID, bID := agenttest.Node(identity.RoleCoreapp, "core-a"), agenttest.Node(identity.RoleCoreapp, "core-b")
	allowAll := map[policyv1.Endpoint][]string{policyv1.Endpoint_ENDPOINT_COREAPP_CONTROL: {"127.0.0.0/8"}}
	stateA, stateB := &live.State{}, &live.State{}
	stateA.SetCreds(ca.Creds(map[certv1.CertKind]agenttest.Leaf{certv1.CertKind_CERT_KIND_COREAPP_CONTROL: ca.Mint(aID, time.Hour)}))
	stateB.SetCreds(ca.Creds(map[certv1.CertKind]agenttest.Leaf{certv1.CertKind_CERT_KIND_COREAPP_CONTROL: ca.Mint(bID, time.Hour)}))
	stateA.SetPolicy(policy(tlsprofile.Modern, allowAll))
	ln := listen(t)
	c, err := NewControl(ControlConfig{Listener: ln, NodeID: "core-a", State: stateA, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c.Run)
	addr := ln.Addr().String()

	t.Run("coreapp probe", func(t *testing.T) {
		rtt, err := Probe(t.Context(), stateB, addr, aID.String())
		if err != nil || rtt <= 0 {
			t.Fatalf("Probe = %v, %v", rtt, err)
		}
	})
	t.Run("probe checks the peer identity", func(t *testing.T) {
		if _, err := Probe(t.Context(), stateB, addr, bID.String()); err == nil || !strings.Contains(err.Error(), "want") {
			t.Fatalf("Probe of a peer presenting another identity = %v, want an identity error", err)
		}
	})
	t.Run("webapp identity refused", func(t *testing.T) {
		web := ca.Mint(agenttest.Node(identity.RoleWebapp, "web-1"), time.Hour)
		if got, err := mtlsExchange("127.0.0.1", addr, web.TLS, ca.Pool(), "PING 01\n"); err == nil {
			t.Fatalf("webapp identity got %q from the control endpoint", got)
		}
	})
	t.Run("ping protocol", func(t *testing.T) {
		got, err := mtlsExchange("127.0.0.1", addr, stateB.Creds().Cert(certv1.CertKind_CERT_KIND_COREAPP_CONTROL), ca.Pool(), "PING 0a1b\n")
		if err != nil || got != "PONG core-a 0a1b\n" {
			t.Fatalf("got %q, %v", got, err)
		}
		if got, err := mtlsExchange("127.0.0.1", addr, stateB.Creds().Cert(certv1.CertKind_CERT_KIND_COREAPP_CONTROL), ca.Pool(), "HELLO\n"); err == nil {
			t.Fatalf("garbage answered with %q", got)
		}
	})
	t.Run("zone closed", func(t *testing.T) {
		stateA.SetPolicy(live.DefaultPolicy())
		t.Cleanup(func() { stateA.SetPolicy(policy(tlsprofile.Modern, allowAll)) })
		if _, err := Probe(t.Context(), stateB, addr, aID.String()); err == nil {
			t.Fatal("probe succeeded although the control allowlist is empty")
		}
	})
}

func TestParsePing(t *testing.T) {
	for _, tc := range []struct {
		in    string
		nonce string
	}{
		{"PING 0a\n", "0a"},
		{"PING " + strings.Repeat("f", 64) + "\n", strings.Repeat("f", 64)},
		{"PING \n", ""},
		{"PING 0A\n", ""},
		{"PING 0a", ""},
		{"PONG 0a\n", ""},
		{"PING " + strings.Repeat("f", 65) + "\n", ""},
		{"PING 0a 0b\n", ""},
	} {
		got, err := ParsePing([]byte(tc.in))
		if tc.nonce == "" && err == nil {
			t.Errorf("ParsePing(%q) = %q, want an error", tc.in, got)
		}
		if tc.nonce != "" && (err != nil || got != tc.nonce) {
			t.Errorf("ParsePing(%q) = %q, %v; want %q", tc.in, got, err, tc.nonce)
		}
	}
}

func FuzzParsePing(f *testing.F) {
	f.Add([]byte("PING 0a1b\n"))
	f.Add([]byte("PING \n"))
	f.Add([]byte("PONG x 01\n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		nonce, err := ParsePing(line)
		if err != nil {
			return
		}
		if string(line) != "PING "+nonce+"\n" || len(nonce) == 0 || len(nonce) > 64 {
			t.Fatalf("ParsePing(%q) accepted nonce %q", line, nonce)
		}
	})
}
