package deploytest

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warden-sec/warden/services/internal/cliconfig"
	"github.com/warden-sec/warden/services/internal/wardend"
)

// loadConfig runs a command's own configuration path (flag set, config file, PREFIX_* environment), as
// its main does, with env instead of the process environment.
func loadConfig(t testing.TB, register func(*flag.FlagSet), prefix string, args []string, env map[string]string) error {
	t.Helper()
	fs := flag.NewFlagSet(prefix, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	register(fs)
	for k := range env {
		// cliconfig ignores variables that match no flag; a misspelt one must not pass silently here.
		// WARDEN_AGENT_* belongs to the agent, not to wardend's WARDEN_*.
		if name, ok := strings.CutPrefix(k, prefix+"_"); ok && !strings.HasPrefix(name, "AGENT_") && fs.Lookup(flagName(name)) == nil {
			t.Errorf("environment %s matches no flag", k)
		}
	}
	_, err := cliconfig.Load(fs, args, prefix, "config", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return err
}

// flagNames lists the flags register defines.
func flagNames(register func(*flag.FlagSet)) map[string]bool {
	fs := flag.NewFlagSet("names", flag.ContinueOnError)
	register(fs)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// flagName turns the part of a variable after the prefix into a flag name (NODE_ID → node-id).
func flagName(env string) string { return strings.ToLower(strings.ReplaceAll(env, "_", "-")) }

// loadWardend loads and validates a wardend configuration as cmd/wardend does.
func loadWardend(t testing.TB, args []string, env map[string]string) (wardend.Config, error) {
	t.Helper()
	cfg := wardend.Defaults()
	if err := loadConfig(t, cfg.Flags, "WARDEN", args, env); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func wardendFlagNames() map[string]bool {
	cfg := wardend.Defaults()
	return flagNames(cfg.Flags)
}

func TestWardendConfigFiles(t *testing.T) {
	t.Run("production", func(t *testing.T) {
		cfg, err := loadWardend(t, []string{"--config", deployPath(t, "config", "wardend.yaml")}, nil)
		if err != nil {
			t.Fatalf("deploy/config/wardend.yaml: %v", err)
		}
		if len(cfg.EtcdEndpoints) < 3 {
			t.Errorf("etcd-endpoints = %v, want an external cluster of at least 3 members", cfg.EtcdEndpoints)
		}
		for _, ep := range cfg.EtcdEndpoints {
			if !strings.HasPrefix(ep, "https://") {
				t.Errorf("etcd endpoint %q is not TLS", ep)
			}
		}
		if cfg.EtcdCACert == "" || cfg.EtcdCert == "" || cfg.EtcdKey == "" || cfg.EtcdAllowPlaintext {
			t.Errorf("etcd TLS incomplete: cacert=%q cert=%q key=%q allow-plaintext=%v", cfg.EtcdCACert, cfg.EtcdCert, cfg.EtcdKey, cfg.EtcdAllowPlaintext)
		}
		if cfg.SealKeyFile == "" {
			t.Error("seal-key-file is empty: production would run with the dev seal key")
		}
		if len(cfg.ServerNames) == 0 {
			t.Error("server-names is empty: agents could only reach wardend as localhost")
		}
		if strings.HasPrefix(cfg.MetricsListen, "0.0.0.0:") || strings.HasPrefix(cfg.MetricsListen, ":") {
			t.Errorf("metrics-listen %q is on every interface; the example should bind a management address", cfg.MetricsListen)
		}
		if len(cfg.Services) != len(wardend.AllServices) {
			t.Errorf("services = %v, want all of %v", cfg.Services, wardend.AllServices)
		}
	})
	t.Run("dev", func(t *testing.T) {
		cfg, err := loadWardend(t, []string{"--config", deployPath(t, "config", "wardend-dev.yaml")}, nil)
		if err != nil {
			t.Fatalf("deploy/config/wardend-dev.yaml: %v", err)
		}
		if len(cfg.EtcdEndpoints) != 0 || cfg.SealKeyFile != "" {
			t.Errorf("dev config should use the embedded etcd and dev seal key, got endpoints=%v seal=%q", cfg.EtcdEndpoints, cfg.SealKeyFile)
		}
		for _, addr := range []string{cfg.Listen, cfg.MetricsListen} {
			if !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("dev address %q is not loopback", addr)
			}
		}
	})
	// The checks above mean something only if the loader refuses what it does not know.
	t.Run("misspelt key is refused", func(t *testing.T) {
		raw := strings.Replace(string(readFile(t, deployPath(t, "config", "wardend.yaml"))), "seal-key-file:", "seal-keyfile:", 1)
		path := filepath.Join(t.TempDir(), "typo.yaml")
		if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadWardend(t, []string{"--config", path}, nil); err == nil || !strings.Contains(err.Error(), "seal-keyfile") {
			t.Fatalf("want an unknown-key error naming seal-keyfile, got %v", err)
		}
	})
}
