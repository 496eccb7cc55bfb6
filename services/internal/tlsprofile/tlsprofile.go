// Package tlsprofile is the single source of the Mozilla Server Side TLS
// profiles Warden offers (MODERN, INTERMEDIATE, OLD) and of their translation
// into Go's crypto/tls.
//
// MODERN and INTERMEDIATE follow guideline 6.0; OLD follows 5.8, the last
// guideline that defines it. The guideline is a field of every profile so a
// later guideline can be added next to the current one without changing the
// meaning of stored policies.
package tlsprofile

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Name identifies a profile; the values are those of WA_WEB_SECURITY_LEVEL.
type Name string

const (
	Modern       Name = "MODERN"
	Intermediate Name = "INTERMEDIATE"
	Old          Name = "OLD"
)

// ErrUnknownProfile is returned by Get and Parse for a name that is not a profile.
var ErrUnknownProfile = errors.New("unknown TLS profile")

// Profile is one guideline configuration.
type Profile struct {
	Name      Name
	Guideline string

	MinVersion, MaxVersion uint16

	// CipherSuitesOpenSSL is the guideline's TLS 1.0–1.2 list, verbatim and in
	// order, in OpenSSL names. It is empty for a TLS 1.3-only profile.
	CipherSuitesOpenSSL []string
	// CipherSuitesTLS13 holds IANA names.
	CipherSuitesTLS13 []string
	// Groups holds key exchange groups in the guideline's order and names.
	Groups []string

	// CertificateTypes lists acceptable certificate keys, preferred first:
	// "ecdsa-p256", "ecdsa-p384", "rsa-2048".
	CertificateTypes            []string
	MaxCertLifetimeDays         int
	RecommendedCertLifetimeDays int

	// HSTSMaxAge is in seconds.
	HSTSMaxAge int
	// ServerPreference reports whether the guideline wants the server to
	// choose the cipher suite. Go's crypto/tls always chooses by its own
	// (hardware-aware) order, so it cannot be expressed in a tls.Config.
	ServerPreference bool
}

var (
	tls13Suites = []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
	groups      = []string{"X25519MLKEM768", "X25519", "prime256v1", "secp384r1"}

	intermediateSuites = []string{
		"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
		"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
		"ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
	}
	oldSuites = []string{
		"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
		"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
		"ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
		"ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
		"ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
		"ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
		"ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
		"AES128-GCM-SHA256", "AES256-GCM-SHA384",
		"AES128-SHA256", "AES256-SHA256",
		"AES128-SHA", "AES256-SHA",
		"DES-CBC3-SHA",
	}
)

const hstsTwoYears = 63072000

// profiles is ordered from strongest to weakest; All relies on that.
var profiles = []Profile{
	{
		Name: Modern, Guideline: "6.0",
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		CipherSuitesTLS13:   tls13Suites,
		Groups:              groups,
		CertificateTypes:    []string{"ecdsa-p256", "ecdsa-p384"},
		MaxCertLifetimeDays: 90, RecommendedCertLifetimeDays: 90,
		HSTSMaxAge: hstsTwoYears,
	},
	{
		Name: Intermediate, Guideline: "6.0",
		MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13,
		CipherSuitesOpenSSL: intermediateSuites,
		CipherSuitesTLS13:   tls13Suites,
		Groups:              groups,
		CertificateTypes:    []string{"ecdsa-p256", "rsa-2048"},
		MaxCertLifetimeDays: 366, RecommendedCertLifetimeDays: 90,
		HSTSMaxAge: hstsTwoYears,
	},
	{
		Name: Old, Guideline: "5.8",
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS13,
		CipherSuitesOpenSSL: oldSuites,
		CipherSuitesTLS13:   tls13Suites,
		Groups:              groups,
		CertificateTypes:    []string{"rsa-2048"},
		MaxCertLifetimeDays: 366, RecommendedCertLifetimeDays: 90,
		HSTSMaxAge:       hstsTwoYears,
		ServerPreference: true,
	},
}

// clone keeps callers from mutating the package's lists through the slices
// of a returned Profile.
func (p Profile) clone() Profile {
	p.CipherSuitesOpenSSL = slices.Clone(p.CipherSuitesOpenSSL)
	p.CipherSuitesTLS13 = slices.Clone(p.CipherSuitesTLS13)
	p.Groups = slices.Clone(p.Groups)
	p.CertificateTypes = slices.Clone(p.CertificateTypes)
	return p
}

// Get returns the profile called n (exact, upper-case name).
func Get(n Name) (Profile, error) {
	for _, p := range profiles {
		if p.Name == n {
			return p.clone(), nil
		}
	}
	return Profile{}, fmt.Errorf("get %q: %w", string(n), ErrUnknownProfile)
}

// All returns every profile, strongest first.
func All() []Profile {
	out := make([]Profile, 0, len(profiles))
	for _, p := range profiles {
		out = append(out, p.clone())
	}
	return out
}

// Parse reads a profile name case-insensitively, ignoring surrounding white
// space, and refuses anything that is not a profile. Use it for input that
// Warden itself accepts (API, config).
func Parse(s string) (Name, error) {
	n := Name(strings.ToUpper(strings.TrimSpace(s)))
	if _, err := Get(n); err != nil {
		return "", fmt.Errorf("parse TLS profile %q: %w", s, ErrUnknownProfile)
	}
	return n, nil
}

// ParseEnv predicts the profile an app runs with for a WA_WEB_SECURITY_LEVEL
// value: case-insensitive, and an unset or unknown value means MODERN, as in
// the original client.
//
// Surrounding white space is ignored. Whether the apps trim is not
// documented; trimming can only make this function report a weaker profile
// than the app really runs, never a stronger one, so a downgrade is never
// missed.
func ParseEnv(s string) Name {
	n, err := Parse(s)
	if err != nil {
		return Modern
	}
	return n
}

// opensslToIANA maps the OpenSSL names used by the guidelines to IANA names.
// It covers every suite of every profile, including those Go does not
// implement, so that a missing entry can only mean a new guideline.
var opensslToIANA = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-AES128-SHA256":     "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-RSA-AES128-SHA256":       "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA384":     "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
	"ECDHE-RSA-AES256-SHA384":       "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"AES128-GCM-SHA256":             "TLS_RSA_WITH_AES_128_GCM_SHA256",
	"AES256-GCM-SHA384":             "TLS_RSA_WITH_AES_256_GCM_SHA384",
	"AES128-SHA256":                 "TLS_RSA_WITH_AES_128_CBC_SHA256",
	"AES256-SHA256":                 "TLS_RSA_WITH_AES_256_CBC_SHA256",
	"AES128-SHA":                    "TLS_RSA_WITH_AES_128_CBC_SHA",
	"AES256-SHA":                    "TLS_RSA_WITH_AES_256_CBC_SHA",
	"DES-CBC3-SHA":                  "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
}

// IANAName returns the IANA name of an OpenSSL cipher suite name.
func IANAName(openssl string) (string, bool) {
	n, ok := opensslToIANA[openssl]
	return n, ok
}

var groupIDs = map[string]tls.CurveID{
	"X25519MLKEM768": tls.X25519MLKEM768,
	"X25519":         tls.X25519,
	"prime256v1":     tls.CurveP256,
	"secp384r1":      tls.CurveP384,
}

// goSuiteID finds a suite by IANA name among everything Go implements,
// including the insecure suites that are only negotiated when listed
// explicitly (RSA key exchange, 3DES, CBC-SHA256).
func goSuiteID(iana string) (uint16, bool) {
	for _, s := range slices.Concat(tls.CipherSuites(), tls.InsecureCipherSuites()) {
		if s.Name == iana {
			return s.ID, true
		}
	}
	return 0, false
}

// Unsupported is a part of a profile that Go's crypto/tls cannot express.
// Suite holds the OpenSSL suite name, or a group name or version range when
// Why says so.
type Unsupported struct {
	Suite string
	Why   string
}

// TLSConfig translates p into a fresh tls.Config; see Apply.
func (p Profile) TLSConfig() (*tls.Config, []Unsupported) {
	return p.Apply(nil)
}

// Apply returns a clone of base (an empty config if nil) with the profile's
// MinVersion, MaxVersion, CipherSuites and CurvePreferences; everything else
// (Certificates, GetCertificate, ClientAuth, NextProtos, …) is kept.
//
// The returned list names every part of the profile that the config cannot
// express, so that the caller can show it instead of silently serving less
// (or more) than the guideline says. Go ignores the order of CipherSuites and
// CurvePreferences and does not let TLS 1.3 suites be configured; the
// guideline's TLS 1.3 suites are exactly Go's, so that loses nothing.
func (p Profile) Apply(base *tls.Config) (*tls.Config, []Unsupported) {
	var cfg *tls.Config
	if base == nil {
		cfg = &tls.Config{}
	} else {
		cfg = base.Clone()
	}
	var unsupported []Unsupported

	cfg.MinVersion, cfg.MaxVersion = p.MinVersion, p.MaxVersion

	var ids []uint16
	for _, name := range p.CipherSuitesOpenSSL {
		iana, ok := opensslToIANA[name]
		if !ok {
			unsupported = append(unsupported, Unsupported{Suite: name, Why: "no IANA name known for this OpenSSL suite"})
			continue
		}
		id, ok := goSuiteID(iana)
		if !ok {
			unsupported = append(unsupported, Unsupported{Suite: name, Why: iana + " is not implemented by Go's crypto/tls"})
			continue
		}
		ids = append(ids, id)
	}
	cfg.CipherSuites = ids
	// A nil CipherSuites would mean Go's default list, which differs from the
	// profile; with nothing expressible, refuse TLS 1.2 and below instead.
	if len(ids) == 0 && p.MinVersion < tls.VersionTLS13 {
		cfg.MinVersion = tls.VersionTLS13
		unsupported = append(unsupported, Unsupported{
			Suite: "TLS 1.0-1.2",
			Why:   "none of the profile's TLS 1.2 suites is available in Go; versions below TLS 1.3 are disabled",
		})
	}

	var curves []tls.CurveID
	for _, g := range p.Groups {
		id, ok := groupIDs[g]
		if !ok {
			unsupported = append(unsupported, Unsupported{Suite: g, Why: "key exchange group not known to Go's crypto/tls"})
			continue
		}
		curves = append(curves, id)
	}
	// Same reasoning as for suites: nil would enable Go's defaults.
	if len(curves) == 0 {
		curves = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}
		if len(p.Groups) > 0 {
			unsupported = append(unsupported, Unsupported{Suite: "groups", Why: "no listed group is available; using the guideline 6.0 groups"})
		}
	}
	cfg.CurvePreferences = curves

	return cfg, unsupported
}
