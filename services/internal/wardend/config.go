// Package wardend assembles the control plane: etcd (embedded or external), the CA bootstrap, the
// services named in --services, the gRPC server and the metrics listener. main only parses flags.
package wardend

import (
	"flag"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/warden-sec/warden/services/internal/cliconfig"
	"github.com/warden-sec/warden/services/internal/identity"
)

// Service names accepted by --services.
const (
	SvcCert   = "cert"
	SvcSecret = "secret"
	SvcPolicy = "policy"
	SvcMesh   = "mesh"
)

// AllServices is the default of --services.
var AllServices = []string{SvcCert, SvcSecret, SvcPolicy, SvcMesh}

// Config is wardend's configuration. Every field is a flag (and a WARDEN_* variable and a config-file key).
type Config struct {
	ConfigFile         string
	Listen             string
	MetricsListen      string
	Pprof              bool
	DataDir            string
	Services           cliconfig.List
	TrustDomain        string
	ServerNames        cliconfig.List
	ReplicaID          string
	EtcdEndpoints      cliconfig.List
	EtcdCACert         string
	EtcdCert           string
	EtcdKey            string
	EtcdAllowPlaintext bool
	EtcdTimeout        time.Duration
	SealKeyFile        string
	LogLevel           string
	LogFormat          string
	AdminName          string
	RateLimit          float64
	RateBurst          int
	MaxStreams         int
}

// Defaults returns the configuration `make run` uses.
func Defaults() Config {
	return Config{
		Listen:        "127.0.0.1:7443",
		MetricsListen: "127.0.0.1:7444",
		DataDir:       "./.warden",
		Services:      slices.Clone(AllServices),
		TrustDomain:   "warden.local",
		EtcdTimeout:   5 * time.Second,
		LogLevel:      "info",
		LogFormat:     "text",
		AdminName:     "admin",
		RateLimit:     200,
		RateBurst:     1000,
		MaxStreams:    32,
	}
}

// Flags registers every setting on fs, with cfg's values as defaults.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "YAML file with settings (keys are flag names); flags and WARDEN_* variables override it")
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC TLS listen address")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "Prometheus /metrics and /healthz listen address (plain HTTP; keep it on loopback or a management network); empty disables")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "also serve Go's /debug/pprof/ profiles on --metrics-listen (off by default: profiles reveal internals and cost CPU while taken)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the embedded etcd, the dev seal key and the admin credentials")
	fs.Var(&c.Services, "services", "comma-separated services to host: cert,secret,policy,mesh (AdminService is always hosted)")
	fs.StringVar(&c.TrustDomain, "trust-domain", c.TrustDomain, "SPIFFE trust domain of every identity (fixed at first start)")
	fs.Var(&c.ServerNames, "server-names", "extra DNS names and IPs for wardend's serving certificate (localhost and 127.0.0.1 are always included)")
	fs.StringVar(&c.ReplicaID, "replica-id", c.ReplicaID, "this replica's id for leader election (default: host name and listen port)")
	fs.Var(&c.EtcdEndpoints, "etcd-endpoints", "external etcd endpoints (https://host:2379,…); empty starts an embedded etcd under --data-dir")
	fs.StringVar(&c.EtcdCACert, "etcd-cacert", c.EtcdCACert, "CA bundle that verifies the external etcd")
	fs.StringVar(&c.EtcdCert, "etcd-cert", c.EtcdCert, "client certificate for the external etcd")
	fs.StringVar(&c.EtcdKey, "etcd-key", c.EtcdKey, "client key for the external etcd")
	fs.BoolVar(&c.EtcdAllowPlaintext, "etcd-allow-plaintext", c.EtcdAllowPlaintext, "allow http:// etcd endpoints that are not on loopback (insecure; logged as a warning)")
	fs.DurationVar(&c.EtcdTimeout, "etcd-timeout", c.EtcdTimeout, "deadline of every etcd request")
	fs.StringVar(&c.SealKeyFile, "seal-key-file", c.SealKeyFile, "key-encryption keys (\"id:base64\" lines, first = primary, mode 0600); empty generates <data-dir>/seal.key (dev mode)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	fs.Float64Var(&c.RateLimit, "rate-limit", c.RateLimit, "requests per second each identity (or each source address, for anonymous calls) may make, sustained")
	fs.IntVar(&c.RateBurst, "rate-burst", c.RateBurst, "requests each identity may make at once above --rate-limit (a node renewing all its credentials together)")
	fs.IntVar(&c.MaxStreams, "max-streams", c.MaxStreams, "open streams per identity (an agent holds three)")
	fs.StringVar(&c.AdminName, "admin-name", c.AdminName, "name of the admin identity written to <data-dir>/admin on first start")
}

// Validate checks the configuration after all layers were applied.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: %w", c.Listen, err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("--metrics-listen %q: %w", c.MetricsListen, err)
		}
	}
	if c.Pprof && c.MetricsListen == "" {
		return fmt.Errorf("--pprof needs --metrics-listen")
	}
	if c.DataDir == "" {
		return fmt.Errorf("--data-dir must not be empty")
	}
	if len(c.Services) == 0 {
		return fmt.Errorf("--services must name at least one of %s", strings.Join(AllServices, ","))
	}
	for _, s := range c.Services {
		if !slices.Contains(AllServices, s) {
			return fmt.Errorf("--services: unknown service %q (known: %s)", s, strings.Join(AllServices, ","))
		}
	}
	if err := identity.ValidTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	if err := identity.ValidName(c.AdminName); err != nil {
		return fmt.Errorf("--admin-name: %w", err)
	}
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		return fmt.Errorf("--etcd-cert and --etcd-key go together")
	}
	if c.RateLimit <= 0 || c.RateBurst <= 0 || c.MaxStreams <= 0 {
		return fmt.Errorf("--rate-limit, --rate-burst and --max-streams must be positive")
	}
	if c.EtcdTimeout <= 0 {
		return fmt.Errorf("--etcd-timeout must be positive")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format must be text or json")
	}
	return nil
}

// Hosts reports whether the service is enabled.
func (c *Config) Hosts(svc string) bool { return slices.Contains(c.Services, svc) }
