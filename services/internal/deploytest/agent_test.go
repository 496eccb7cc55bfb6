package deploytest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/warden-sec/warden/services/internal/agent"
)

// loadAgent loads and validates an agent configuration as cmd/warden-agent does before it starts.
func loadAgent(t testing.TB, args []string, env map[string]string) (agent.Config, error) {
	t.Helper()
	cfg := agent.Defaults()
	if err := loadConfig(t, cfg.Flags, "WARDEN_AGENT", args, env); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func agentFlagNames() map[string]bool {
	cfg := agent.Defaults()
	return flagNames(cfg.Flags)
}

// perNode is what the operator supplies per node from `wardenctl node add`, as the README says.
var perNode = map[string]string{
	"WARDEN_AGENT_CA_FINGERPRINT": strings.Repeat("ab", 32),
	"WARDEN_AGENT_JOIN_TOKEN":     "join-token-from-node-add",
}

func TestAgentConfigFiles(t *testing.T) {
	for _, role := range []string{"webapp", "coreapp"} {
		t.Run(role, func(t *testing.T) {
			path := deployPath(t, "config", "warden-agent-"+role+".yaml")
			cfg, err := loadAgent(t, []string{"--config", path}, perNode)
			if err != nil {
				t.Fatalf("%s: %v", filepath.Base(path), err)
			}
			if cfg.Role != role {
				t.Errorf("role = %q, want %q", cfg.Role, role)
			}
			if cfg.DataDir != appDataDir {
				t.Errorf("data-dir = %q, want the app's data volume %s", cfg.DataDir, appDataDir)
			}
			if len(cfg.Servers) < 2 {
				t.Errorf("server = %v: the production example should list several replicas to fail over between", cfg.Servers)
			}
			// Per-node secrets do not belong in a file copied from host to host.
			doc := yamlFile(t, path)
			for _, k := range []string{"join-token", "ca-fingerprint"} {
				if _, ok := doc[k]; ok {
					t.Errorf("the example sets %s in the file; it is per node and belongs in the environment", k)
				}
			}
			if role == "coreapp" && (cfg.ControlListen == "" || strings.HasPrefix(cfg.ControlAdvertise, "0.0.0.0")) {
				t.Errorf("control-listen %q / control-advertise %q: the Coreapp example should join the mesh with an address peers can dial", cfg.ControlListen, cfg.ControlAdvertise)
			}
		})
	}
	// The same loader refuses what it does not know, so the checks above mean something.
	t.Run("misspelt key is refused", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "typo.yaml")
		raw := strings.Replace(string(readFile(t, deployPath(t, "config", "warden-agent-webapp.yaml"))), "node-id:", "nodeid:", 1)
		if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadAgent(t, []string{"--config", path}, perNode); err == nil || !strings.Contains(err.Error(), "nodeid") {
			t.Fatalf("want an unknown-key error naming nodeid, got %v", err)
		}
	})
}

func TestComposeAgents(t *testing.T) {
	c := loadCompose(t)
	for _, name := range []string{"warden-agent-waweb", "warden-agent-wacore"} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range m(c.svc(t, name)["environment"]) {
				env[k] = interpolate(s(v))
			}
			// In compose the file is mounted into the container; load the repository copy instead.
			env["WARDEN_AGENT_CONFIG"] = mountedAgentConfig(t, c, name)
			for k, v := range perNode {
				if env[k] == "" {
					env[k] = v // .env supplies them; compose substitutes "" until then
				}
			}
			cfg, err := loadAgent(t, nil, env)
			if err != nil {
				t.Fatalf("%s environment with its mounted config: %v", name, err)
			}
			if !slices.ContainsFunc(cfg.Servers, func(s string) bool { return strings.HasPrefix(s, "wardend:") }) {
				t.Errorf("server = %v, want the wardend service", cfg.Servers)
			}
			if cfg.DataDir != appDataDir {
				t.Errorf("data-dir = %s, want %s", cfg.DataDir, appDataDir)
			}
			if cfg.ControlListen != "" {
				host, _, _ := strings.Cut(cfg.ControlAdvertise, ":")
				if _, ok := c.services[host]; !ok {
					t.Errorf("control-advertise %q is not a compose service name peers can dial", cfg.ControlAdvertise)
				}
			}
		})
	}
}

// mountedAgentConfig is the repository file a compose agent service mounts at WARDEN_AGENT_CONFIG.
func mountedAgentConfig(t *testing.T, c compose, name string) string {
	t.Helper()
	target := s(get(c.svc(t, name), "environment", "WARDEN_AGENT_CONFIG"))
	for _, mt := range c.mounts(t, name) {
		if mt.target == target {
			return filepath.Join(c.dir, mt.source)
		}
	}
	t.Fatalf("%s: WARDEN_AGENT_CONFIG=%q is not mounted", name, target)
	return ""
}

// checkAgentConfigMap loads an agent configuration embedded in a manifest with the container's env.
func checkAgentConfigMap(t *testing.T, what, raw string, envNames []string) agent.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "warden-agent.yaml")
	if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, n := range envNames {
		env[n] = perNode[n] // values from Secrets are filled in by Kubernetes
	}
	cfg, err := loadAgent(t, []string{"--config", path}, env)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return cfg
}
