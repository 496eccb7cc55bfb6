package ctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Defaults of the global flags; they match wardend's own defaults so that `wardend` and `wardenctl`
// run from the same directory find each other without flags.
const (
	DefaultServer  = "127.0.0.1:7443"
	DefaultDataDir = "./.warden"
	envPrefix      = "WARDEN_"
)

// GlobalOptions are the flags every command shares. Each can also come from WARDEN_<FLAG> in the
// environment (WARDEN_SERVER, WARDEN_DATA_DIR, WARDEN_CACERT, WARDEN_CERT, WARDEN_KEY, WARDEN_TOKEN);
// a flag on the command line wins over the environment, which wins over the default.
type GlobalOptions struct {
	Server  string
	DataDir string
	CACert  string
	Cert    string
	Key     string
	Token   string
}

// envFlags are the global flags that the environment may set.
var envFlags = []string{"server", "data-dir", "cacert", "cert", "key", "token"}

func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func (o *GlobalOptions) field(flag string) *string {
	switch flag {
	case "server":
		return &o.Server
	case "data-dir":
		return &o.DataDir
	case "cacert":
		return &o.CACert
	case "cert":
		return &o.Cert
	case "key":
		return &o.Key
	case "token":
		return &o.Token
	}
	return nil
}

// Credentials are the resolved connection settings.
type Credentials struct {
	Server string
	CACert string // file that verifies wardend's serving certificate
	Cert   string // client certificate file; empty for none
	Key    string
	Token  string // bearer token; empty for none
}

// Resolve layers the environment under the flags (changed reports the flags given on the command line)
// and picks the credential files: explicit --cacert/--cert/--key, otherwise <data-dir>/admin. A token
// (flag or WARDEN_TOKEN) replaces the data-dir client certificate, because wardend prefers a client
// certificate over a token and the token would silently be ignored.
func Resolve(o GlobalOptions, changed func(flag string) bool, lookupEnv func(string) (string, bool)) (Credentials, error) {
	for _, f := range envFlags {
		if changed(f) {
			continue
		}
		if v, ok := lookupEnv(envName(f)); ok && v != "" {
			*o.field(f) = v
		}
	}
	if o.Server == "" {
		return Credentials{}, errors.New("--server is empty")
	}
	c := Credentials{Server: o.Server, Token: strings.TrimSpace(o.Token)}
	adminDir := filepath.Join(o.DataDir, "admin")

	c.CACert = o.CACert
	if c.CACert == "" {
		c.CACert = filepath.Join(adminDir, "ca.crt")
		if !fileExists(c.CACert) {
			return Credentials{}, fmt.Errorf("no CA certificate to verify wardend: %s does not exist (pass --cacert, or --data-dir pointing at wardend's data directory)", c.CACert)
		}
	}

	switch {
	case (o.Cert == "") != (o.Key == ""):
		return Credentials{}, errors.New("--cert and --key must be given together")
	case o.Cert != "" && c.Token != "":
		return Credentials{}, errors.New("--cert and --token are exclusive: wardend would use the certificate and ignore the token")
	case o.Cert != "":
		c.Cert, c.Key = o.Cert, o.Key
	case c.Token != "":
		// Token authentication: no client certificate.
	default:
		cert, key := filepath.Join(adminDir, "admin.crt"), filepath.Join(adminDir, "admin.key")
		hasCert, hasKey := fileExists(cert), fileExists(key)
		if hasCert != hasKey {
			return Credentials{}, fmt.Errorf("incomplete admin credentials in %s: need both admin.crt and admin.key", adminDir)
		}
		if hasCert {
			c.Cert, c.Key = cert, key
		}
	}
	return c, nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// Describe says how the CLI authenticates, for error hints.
func (c Credentials) Describe() string {
	switch {
	case c.Cert != "":
		return "client certificate " + c.Cert
	case c.Token != "":
		return "bearer token"
	default:
		return "no credentials"
	}
}

// TLSConfig loads the files.
func (c Credentials) TLSConfig() (*tls.Config, error) {
	raw, err := os.ReadFile(c.CACert)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("CA certificate %s holds no PEM certificate", c.CACert)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if c.Cert != "" {
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s / %s: %w", c.Cert, c.Key, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// Dial creates a client connection (it connects lazily, on the first RPC).
func (c Credentials) Dial() (*grpc.ClientConn, error) {
	tc, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithUserAgent("wardenctl"),
	}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(c.Token)))
	}
	conn, err := grpc.NewClient(c.Server, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.Server, err)
	}
	return conn, nil
}

// bearerToken sends "authorization: Bearer <token>" on every call, over TLS only.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return true }
