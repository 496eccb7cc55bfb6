package tlsprofile

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestProfilesFollowGuidelines(t *testing.T) {
	tests := []struct {
		name          Name
		guideline     string
		min, max      uint16
		suites        int
		serverChooses bool
		maxLifetime   int
		certTypes     []string
	}{
		{Modern, "6.0", tls.VersionTLS13, tls.VersionTLS13, 0, false, 90, []string{"ecdsa-p256", "ecdsa-p384"}},
		{Intermediate, "6.0", tls.VersionTLS12, tls.VersionTLS13, 6, false, 366, []string{"ecdsa-p256", "rsa-2048"}},
		{Old, "5.8", tls.VersionTLS10, tls.VersionTLS13, 21, true, 366, []string{"rsa-2048"}},
	}
	for _, tt := range tests {
		t.Run(string(tt.name), func(t *testing.T) {
			p, err := Get(tt.name)
			if err != nil {
				t.Fatalf("Get(%s): %v", tt.name, err)
			}
			if p.Guideline != tt.guideline || p.MinVersion != tt.min || p.MaxVersion != tt.max {
				t.Errorf("got guideline %s versions %#x-%#x, want %s %#x-%#x", p.Guideline, p.MinVersion, p.MaxVersion, tt.guideline, tt.min, tt.max)
			}
			if len(p.CipherSuitesOpenSSL) != tt.suites {
				t.Errorf("got %d TLS 1.2 suites, want %d", len(p.CipherSuitesOpenSSL), tt.suites)
			}
			if p.ServerPreference != tt.serverChooses {
				t.Errorf("ServerPreference = %v, want %v", p.ServerPreference, tt.serverChooses)
			}
			if p.MaxCertLifetimeDays != tt.maxLifetime || p.RecommendedCertLifetimeDays != 90 {
				t.Errorf("lifetimes = %d/%d, want %d/90", p.MaxCertLifetimeDays, p.RecommendedCertLifetimeDays, tt.maxLifetime)
			}
			if !slices.Equal(p.CertificateTypes, tt.certTypes) {
				t.Errorf("CertificateTypes = %v, want %v", p.CertificateTypes, tt.certTypes)
			}
			if p.HSTSMaxAge != 63072000 {
				t.Errorf("HSTSMaxAge = %d, want 63072000", p.HSTSMaxAge)
			}
			if want := []string{"X25519MLKEM768", "X25519", "prime256v1", "secp384r1"}; !slices.Equal(p.Groups, want) {
				t.Errorf("Groups = %v, want %v", p.Groups, want)
			}
			if want := []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}; !slices.Equal(p.CipherSuitesTLS13, want) {
				t.Errorf("CipherSuitesTLS13 = %v, want %v", p.CipherSuitesTLS13, want)
			}
		})
	}
	if got := All(); len(got) != 3 || got[0].Name != Modern || got[1].Name != Intermediate || got[2].Name != Old {
		t.Errorf("All() order = %v, want MODERN, INTERMEDIATE, OLD", got)
	}
	if _, err := Get("modern"); !errors.Is(err, ErrUnknownProfile) {
		t.Errorf("Get(modern) error = %v, want ErrUnknownProfile (Get is exact)", err)
	}
}

func TestReturnedProfilesAreCopies(t *testing.T) {
	p, _ := Get(Old)
	p.CipherSuitesOpenSSL[0] = "NULL-MD5"
	All()[2].Groups[0] = "ffdhe2048"
	again, _ := Get(Old)
	if again.CipherSuitesOpenSSL[0] != "ECDHE-ECDSA-AES128-GCM-SHA256" || again.Groups[0] != "X25519MLKEM768" {
		t.Fatalf("mutating a returned profile changed the package's lists: %v %v", again.CipherSuitesOpenSSL[0], again.Groups[0])
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Name
		wantErr bool
		env     Name
	}{
		{"MODERN", Modern, false, Modern},
		{"intermediate", Intermediate, false, Intermediate},
		{"Old", Old, false, Old},
		{" old\n", Old, false, Old},
		{"", "", true, Modern},
		{"LEGACY", "", true, Modern},
		{"OLD2", "", true, Modern},
		{"O LD", "", true, Modern},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("Parse(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrUnknownProfile) {
				t.Errorf("Parse(%q) error %v does not wrap ErrUnknownProfile", tt.in, err)
			}
			if got := ParseEnv(tt.in); got != tt.env {
				t.Errorf("ParseEnv(%q) = %q, want %q", tt.in, got, tt.env)
			}
		})
	}
}

// TestSuiteMapping checks that every listed suite either reaches the Go
// config or is reported, and that only the three suites Go lacks are
// reported.
func TestSuiteMapping(t *testing.T) {
	wantUnsupported := map[Name][]string{
		Modern:       nil,
		Intermediate: nil,
		Old:          {"ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384", "AES256-SHA256"},
	}
	for _, p := range All() {
		t.Run(string(p.Name), func(t *testing.T) {
			cfg, unsupported := p.TLSConfig()
			var reported []string
			for _, u := range unsupported {
				reported = append(reported, u.Suite)
				if u.Why == "" {
					t.Errorf("unsupported %s has no reason", u.Suite)
				}
			}
			if !slices.Equal(reported, wantUnsupported[p.Name]) {
				t.Errorf("unsupported = %v, want %v", reported, wantUnsupported[p.Name])
			}
			var want []uint16
			for _, name := range p.CipherSuitesOpenSSL {
				iana, ok := IANAName(name)
				if !ok {
					t.Errorf("%s has no IANA name", name)
					continue
				}
				if slices.Contains(reported, name) {
					if _, ok := goSuiteID(iana); ok {
						t.Errorf("%s reported unsupported but Go implements %s", name, iana)
					}
					continue
				}
				id, ok := goSuiteID(iana)
				if !ok {
					t.Errorf("%s (%s) neither in the config nor reported", name, iana)
					continue
				}
				if tls.CipherSuiteName(id) != iana {
					t.Errorf("%s mapped to %s, want %s", name, tls.CipherSuiteName(id), iana)
				}
				want = append(want, id)
			}
			if !slices.Equal(cfg.CipherSuites, want) {
				t.Errorf("CipherSuites = %v, want %v", suiteNames(cfg.CipherSuites), suiteNames(want))
			}
			if p.Name == Old && len(cfg.CipherSuites) != 18 {
				t.Errorf("OLD has %d Go suites, want 18", len(cfg.CipherSuites))
			}
			wantCurves := []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}
			if !slices.Equal(cfg.CurvePreferences, wantCurves) {
				t.Errorf("CurvePreferences = %v, want %v", cfg.CurvePreferences, wantCurves)
			}
			if cfg.MinVersion != p.MinVersion || cfg.MaxVersion != p.MaxVersion {
				t.Errorf("versions %#x-%#x, want %#x-%#x", cfg.MinVersion, cfg.MaxVersion, p.MinVersion, p.MaxVersion)
			}
		})
	}
}

func suiteNames(ids []uint16) []string {
	var out []string
	for _, id := range ids {
		out = append(out, tls.CipherSuiteName(id))
	}
	return out
}

func TestApplyKeepsBase(t *testing.T) {
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("unused") }
	base := &tls.Config{
		Certificates:   []tls.Certificate{{}},
		GetCertificate: getCert,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		NextProtos:     []string{"h2"},
		MinVersion:     tls.VersionTLS10,
	}
	p, _ := Get(Modern)
	cfg, _ := p.Apply(base)
	if cfg == base {
		t.Fatal("Apply returned the base config itself; want a clone")
	}
	if base.MinVersion != tls.VersionTLS10 {
		t.Errorf("Apply modified the base config: MinVersion %#x", base.MinVersion)
	}
	if len(cfg.Certificates) != 1 || cfg.GetCertificate == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || !slices.Equal(cfg.NextProtos, []string{"h2"}) {
		t.Errorf("Apply lost base settings: %+v", cfg)
	}
	if cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("MinVersion = %#x, want TLS 1.3", cfg.MinVersion)
	}
}

func TestApplyNeverFallsBackToGoDefaults(t *testing.T) {
	p := Profile{Name: "CUSTOM", MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, CipherSuitesOpenSSL: []string{"DHE-RSA-AES128-GCM-SHA256"}, Groups: []string{"ffdhe2048"}}
	cfg, unsupported := p.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("MinVersion = %#x, want TLS 1.3 when no TLS 1.2 suite is expressible", cfg.MinVersion)
	}
	if len(cfg.CurvePreferences) == 0 {
		t.Error("CurvePreferences empty; Go would use its defaults")
	}
	var got []string
	for _, u := range unsupported {
		got = append(got, u.Suite)
	}
	if want := []string{"DHE-RSA-AES128-GCM-SHA256", "TLS 1.0-1.2", "ffdhe2048", "groups"}; !slices.Equal(got, want) {
		t.Errorf("unsupported = %v, want %v", got, want)
	}
}

// Real handshakes against a loopback server.

type testPKI struct {
	ecdsa, rsa tls.Certificate
	roots      *x509.CertPool
}

var (
	pkiOnce sync.Once
	pki     testPKI
	pkiErr  error
)

func selfSigned(key crypto.Signer) (tls.Certificate, *x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf, nil
}

func loadPKI(t *testing.T) testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			pkiErr = err
			return
		}
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			pkiErr = err
			return
		}
		pki.roots = x509.NewCertPool()
		var leaf *x509.Certificate
		if pki.ecdsa, leaf, pkiErr = selfSigned(ek); pkiErr != nil {
			return
		}
		pki.roots.AddCert(leaf)
		if pki.rsa, leaf, pkiErr = selfSigned(rk); pkiErr != nil {
			return
		}
		pki.roots.AddCert(leaf)
	})
	if pkiErr != nil {
		t.Fatalf("generate test certificates: %v", pkiErr)
	}
	return pki
}

// serve starts a TLS server configured from profile n with both an ECDSA and
// an RSA certificate (crypto/tls picks the one the client can use) and
// returns its address.
func serve(t *testing.T, n Name) string {
	t.Helper()
	keys := loadPKI(t)
	p, err := Get(n)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := p.Apply(&tls.Config{Certificates: []tls.Certificate{keys.ecdsa, keys.rsa}})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				// The client reports the outcome; a refused handshake is an
				// expected result here.
				_ = c.(*tls.Conn).Handshake()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

type client struct {
	min, max uint16
	suites   []uint16
}

func handshake(t *testing.T, addr string, c client) (tls.ConnectionState, error) {
	t.Helper()
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 10 * time.Second},
		Config: &tls.Config{
			RootCAs:      loadPKI(t).roots,
			ServerName:   "localhost",
			MinVersion:   c.min,
			MaxVersion:   c.max,
			CipherSuites: c.suites,
		},
	}
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState(), nil
}

func mustConnect(t *testing.T, addr string, c client, wantVersion, wantSuite uint16) tls.ConnectionState {
	t.Helper()
	st, err := handshake(t, addr, c)
	if err != nil {
		t.Fatalf("handshake failed, want success: %v", err)
	}
	if st.Version != wantVersion {
		t.Errorf("negotiated %s, want %s", tls.VersionName(st.Version), tls.VersionName(wantVersion))
	}
	if wantSuite != 0 && st.CipherSuite != wantSuite {
		t.Errorf("negotiated %s, want %s", tls.CipherSuiteName(st.CipherSuite), tls.CipherSuiteName(wantSuite))
	}
	return st
}

func mustFail(t *testing.T, addr string, c client) {
	t.Helper()
	if st, err := handshake(t, addr, c); err == nil {
		t.Fatalf("handshake succeeded with %s %s, want refusal", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
}

func goSuites(t *testing.T, n Name) []uint16 {
	t.Helper()
	p, _ := Get(n)
	cfg, _ := p.TLSConfig()
	return cfg.CipherSuites
}

func TestModernHandshakes(t *testing.T) {
	addr := serve(t, Modern)
	t.Run("TLS 1.3 with post-quantum hybrid", func(t *testing.T) {
		st := mustConnect(t, addr, client{}, tls.VersionTLS13, 0)
		if st.CurveID != tls.X25519MLKEM768 {
			t.Errorf("key exchange %v, want X25519MLKEM768", st.CurveID)
		}
	})
	t.Run("TLS 1.2 refused", func(t *testing.T) {
		mustFail(t, addr, client{min: tls.VersionTLS12, max: tls.VersionTLS12})
	})
	t.Run("TLS 1.2 with an intermediate suite refused", func(t *testing.T) {
		mustFail(t, addr, client{min: tls.VersionTLS12, max: tls.VersionTLS12, suites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
	})
}

func TestIntermediateHandshakes(t *testing.T) {
	addr := serve(t, Intermediate)
	t.Run("TLS 1.3", func(t *testing.T) {
		mustConnect(t, addr, client{}, tls.VersionTLS13, 0)
	})
	for _, id := range goSuites(t, Intermediate) {
		t.Run("TLS 1.2 "+tls.CipherSuiteName(id), func(t *testing.T) {
			mustConnect(t, addr, client{min: tls.VersionTLS12, max: tls.VersionTLS12, suites: []uint16{id}}, tls.VersionTLS12, id)
		})
	}
	refused := []uint16{
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
	}
	for _, id := range refused {
		t.Run("TLS 1.2 refuses "+tls.CipherSuiteName(id), func(t *testing.T) {
			mustFail(t, addr, client{min: tls.VersionTLS12, max: tls.VersionTLS12, suites: []uint16{id}})
		})
	}
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		mustFail(t, addr, client{min: tls.VersionTLS11, max: tls.VersionTLS11, suites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}})
	})
}

func TestOldHandshakes(t *testing.T) {
	addr := serve(t, Old)
	t.Run("TLS 1.3", func(t *testing.T) {
		mustConnect(t, addr, client{}, tls.VersionTLS13, 0)
	})
	for _, id := range goSuites(t, Old) {
		t.Run("TLS 1.2 "+tls.CipherSuiteName(id), func(t *testing.T) {
			mustConnect(t, addr, client{min: tls.VersionTLS12, max: tls.VersionTLS12, suites: []uint16{id}}, tls.VersionTLS12, id)
		})
	}
	legacy := []uint16{
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		for _, id := range legacy {
			t.Run(tls.VersionName(v)+" "+tls.CipherSuiteName(id), func(t *testing.T) {
				mustConnect(t, addr, client{min: v, max: v, suites: []uint16{id}}, v, id)
			})
		}
	}
	t.Run("TLS 1.2 refuses a suite outside the list", func(t *testing.T) {
		mustFail(t, addr, client{min: tls.VersionTLS12, max: tls.VersionTLS12, suites: []uint16{tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA}})
	})
}
