// Package dbssl renders and checks the database TLS settings of the Webapp
// and Coreapp containers.
//
// Both apps read WA_DB_SSL_KEY, WA_DB_SSL_CERT and WA_DB_SSL_CA (paths inside
// the container); the Webapp also reads WA_DB_SSL_VERIFY. The Coreapp still
// honours the deprecated WA_DB_CONNECTION_OPTION.
//
// The format of WA_DB_CONNECTION_OPTION is not publicly documented. Warden
// defines it as a JSON object of driver SSL options in the shape the Node.js
// mysql and pg drivers take:
//
//	{"ssl":{"key":"/usr/local/waent/data/certs/db-client.key","cert":"/usr/local/waent/data/certs/db-client.crt","ca":"/usr/local/waent/data/certs/db-ca.crt","rejectUnauthorized":true}}
//
// with one difference: key, cert and ca are file paths inside the container,
// not PEM contents, so that the value carries the same information as the
// WA_DB_SSL_* variables. A missing rejectUnauthorized means true. Settings
// rendered by ConnectionOption import back unchanged with
// ImportConnectionOption.
package dbssl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/warden-sec/warden/services/internal/issue"
)

// Issue is a validation finding; see package issue for the meaning of
// Downgrade.
type Issue = issue.Issue

// CertsDir is the certificates directory on the apps' data volume.
const CertsDir = "/usr/local/waent/data/certs"

// Environment variable names read by the apps.
const (
	EnvKey              = "WA_DB_SSL_KEY"
	EnvCert             = "WA_DB_SSL_CERT"
	EnvCA               = "WA_DB_SSL_CA"
	EnvVerify           = "WA_DB_SSL_VERIFY"
	EnvConnectionOption = "WA_DB_CONNECTION_OPTION"
)

// Settings are the database TLS settings shared by both apps. An empty path
// means the file is not configured (e.g. no client certificate).
type Settings struct {
	KeyPath, CertPath, CAPath string
	// Verify turns on verification of the database server's certificate.
	Verify bool
}

// Defaults returns files under CertsDir and verification on.
func Defaults() Settings {
	return Settings{
		KeyPath:  CertsDir + "/db-client.key",
		CertPath: CertsDir + "/db-client.crt",
		CAPath:   CertsDir + "/db-ca.crt",
		Verify:   true,
	}
}

// ParseVerify reads WA_DB_SSL_VERIFY as the apps do: verification is on
// unless the value, with surrounding white space removed, is exactly "0".
// "false", "no", "off" and "" all leave it on, as in the original client,
// where only 0 turned it off.
func ParseVerify(v string) bool {
	return strings.TrimSpace(v) != "0"
}

func (s Settings) fileEnv() map[string]string {
	env := map[string]string{}
	for name, p := range map[string]string{EnvKey: s.KeyPath, EnvCert: s.CertPath, EnvCA: s.CAPath} {
		if p != "" {
			env[name] = p
		}
	}
	return env
}

// WebappEnv returns the Webapp's environment; unset paths are left out.
func (s Settings) WebappEnv() map[string]string {
	env := s.fileEnv()
	env[EnvVerify] = "0"
	if s.Verify {
		env[EnvVerify] = "1"
	}
	return env
}

// CoreappEnv returns the Coreapp's environment: the WA_DB_SSL_* paths and,
// for Coreapp versions that only know it, WA_DB_CONNECTION_OPTION rendered
// from the same settings. WA_DB_SSL_VERIFY is Webapp-only, so on the Coreapp
// verification is carried by rejectUnauthorized. The warnings tell the
// operator about the deprecated variable.
func (s Settings) CoreappEnv() (map[string]string, []string) {
	env := s.fileEnv()
	env[EnvConnectionOption] = s.ConnectionOption()
	return env, []string{EnvConnectionOption + " is deprecated; it is rendered from the WA_DB_SSL_* settings for older Coreapp versions only"}
}

type sslOptions struct {
	Key                string `json:"key,omitempty"`
	Cert               string `json:"cert,omitempty"`
	CA                 string `json:"ca,omitempty"`
	RejectUnauthorized bool   `json:"rejectUnauthorized"`
}

// ConnectionOption renders s as a WA_DB_CONNECTION_OPTION value.
func (s Settings) ConnectionOption() string {
	b, err := json.Marshal(struct {
		SSL sslOptions `json:"ssl"`
	}{sslOptions{Key: s.KeyPath, Cert: s.CertPath, CA: s.CAPath, RejectUnauthorized: s.Verify}})
	if err != nil {
		// Strings and a bool always marshal.
		return ""
	}
	return string(b)
}

// maxConnectionOption bounds the input; real values are a few hundred bytes.
const maxConnectionOption = 64 << 10

// ErrConnectionOption is wrapped by every error of ImportConnectionOption.
var ErrConnectionOption = errors.New("invalid " + EnvConnectionOption)

// ImportConnectionOption converts an existing WA_DB_CONNECTION_OPTION value
// (the format in the package doc) into Settings.
//
// Parsing is strict where a lenient parser could disagree with the app about
// the security outcome: key names are case-sensitive, a repeated key is an
// error (parsers differ on which copy wins), and values must have the
// expected JSON type. Unknown options are ignored with a warning, since the
// drivers accept many options that do not concern Warden.
func ImportConnectionOption(v string) (Settings, []string, error) {
	if strings.TrimSpace(v) == "" {
		return Settings{}, nil, fmt.Errorf("%w: empty", ErrConnectionOption)
	}
	if len(v) > maxConnectionOption {
		return Settings{}, nil, fmt.Errorf("%w: longer than %d bytes", ErrConnectionOption, maxConnectionOption)
	}
	dec := json.NewDecoder(strings.NewReader(v))
	var (
		s        = Settings{Verify: true}
		warnings []string
		foundSSL bool
	)
	err := eachMember(dec, "", func(key string) error {
		if key != "ssl" {
			warnings = append(warnings, fmt.Sprintf("option %q ignored", key))
			return skipValue(dec)
		}
		foundSSL = true
		return eachMember(dec, "ssl", func(key string) error {
			var err error
			switch key {
			case "key":
				s.KeyPath, err = stringValue(dec, "ssl.key")
			case "cert":
				s.CertPath, err = stringValue(dec, "ssl.cert")
			case "ca":
				s.CAPath, err = stringValue(dec, "ssl.ca")
			case "rejectUnauthorized":
				s.Verify, err = boolValue(dec, "ssl.rejectUnauthorized")
			default:
				warnings = append(warnings, fmt.Sprintf("option ssl.%s ignored", key))
				err = skipValue(dec)
			}
			return err
		})
	})
	if err != nil {
		return Settings{}, nil, fmt.Errorf("%w: %w", ErrConnectionOption, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Settings{}, nil, fmt.Errorf("%w: data after the JSON object", ErrConnectionOption)
	}
	if !foundSSL {
		return Settings{}, nil, fmt.Errorf("%w: no \"ssl\" object", ErrConnectionOption)
	}
	return s, warnings, nil
}

// eachMember reads a JSON object from dec and calls member for each key,
// with the decoder positioned at the value; member must consume it.
func eachMember(dec *json.Decoder, where string, member func(key string) error) error {
	label := where
	if label == "" {
		label = "top level"
	}
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%s: want a JSON object", label)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%s: want an object key", label)
		}
		if seen[key] {
			return fmt.Errorf("%s: key %q repeated", label, key)
		}
		seen[key] = true
		if err := member(key); err != nil {
			return err
		}
	}
	// The closing brace; Token reports any syntax error.
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	return nil
}

func stringValue(dec *json.Decoder, name string) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("%s: want a file path string", name)
	}
	return s, nil
}

func boolValue(dec *json.Decoder, name string) (bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return false, fmt.Errorf("%s: %w", name, err)
	}
	b, ok := tok.(bool)
	if !ok {
		return false, fmt.Errorf("%s: want true or false", name)
	}
	return b, nil
}

func skipValue(dec *json.Decoder) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("skip value: %w", err)
	}
	return nil
}

// Validate checks s. Errors: a path that is relative, not clean or contains
// a control character; a client key without a certificate or the reverse.
// Warnings: a path outside CertsDir, no CA file, and verification off (a
// downgrade).
func Validate(s Settings) (errs, warnings []Issue) {
	for _, f := range []struct{ field, path string }{
		{"key_path", s.KeyPath}, {"cert_path", s.CertPath}, {"ca_path", s.CAPath},
	} {
		p := f.path
		switch {
		case p == "":
		case strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }):
			errs = append(errs, Issue{Field: f.field, Message: "contains a NUL, newline or other control character"})
		case !path.IsAbs(p):
			errs = append(errs, Issue{Field: f.field, Message: fmt.Sprintf("%q is not an absolute path", p)})
		case path.Clean(p) != p:
			errs = append(errs, Issue{Field: f.field, Message: fmt.Sprintf("%q is not clean; use %q", p, path.Clean(p))})
		case !strings.HasPrefix(p, CertsDir+"/"):
			warnings = append(warnings, Issue{Field: f.field, Message: fmt.Sprintf("%q is outside %s on the data volume; make sure the file exists in both containers", p, CertsDir)})
		}
	}
	if (s.KeyPath == "") != (s.CertPath == "") {
		errs = append(errs, Issue{Field: "cert_path", Message: "a client key needs a client certificate and the reverse"})
	}
	if s.CAPath == "" && s.Verify {
		warnings = append(warnings, Issue{Field: "ca_path", Message: "no CA file: the database certificate is verified against the container's system trust store"})
	}
	if !s.Verify {
		warnings = append(warnings, Issue{Field: "verify", Message: "the database server's certificate is not verified: a machine in the path can impersonate it", Downgrade: true})
	}
	return errs, warnings
}
