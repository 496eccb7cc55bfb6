package deploytest

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// unit is a systemd unit file: section → key → values (a key may repeat).
type unit map[string]map[string][]string

func parseUnit(t testing.TB, path string) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, path)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] != nil {
				t.Errorf("%s:%d: section [%s] repeated", path, n, section)
			}
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: not a key=value line inside a section: %q", path, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

func (u unit) one(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// argFlags parses --name value and --name=value arguments (flag values follow every flag these units use).
func argFlags(args []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		name := strings.TrimLeft(args[i], "-")
		if k, v, eq := strings.Cut(name, "="); eq {
			out[k] = v
			continue
		}
		if i+1 < len(args) {
			out[name] = args[i+1]
			i++
		}
	}
	return out
}

func TestSystemdUnits(t *testing.T) {
	hardening := map[string]string{
		"NoNewPrivileges":       "yes",
		"ProtectSystem":         "strict",
		"PrivateTmp":            "yes",
		"CapabilityBoundingSet": "",
		"ProtectHome":           "yes",
	}
	for _, name := range []string{"wardend.service", "warden-agent@.service"} {
		t.Run(name, func(t *testing.T) {
			u := parseUnit(t, deployPath(t, "systemd", name))
			for _, sec := range []string{"Unit", "Service", "Install"} {
				if u[sec] == nil {
					t.Errorf("no [%s] section", sec)
				}
			}
			for k, want := range hardening {
				v, ok := u["Service"][k]
				if !ok || v[len(v)-1] != want {
					t.Errorf("%s=%v, want %q", k, v, want)
				}
			}
			if u.one("Service", "User") == "" && u.one("Service", "DynamicUser") != "yes" {
				t.Error("runs as root: set User= or DynamicUser=yes")
			}
			if len(u["Service"]["ReadWritePaths"]) == 0 && len(u["Service"]["StateDirectory"]) == 0 {
				t.Error("ProtectSystem=strict without ReadWritePaths/StateDirectory leaves nothing writable")
			}
			for _, ef := range u["Service"]["EnvironmentFile"] {
				if !strings.HasPrefix(ef, "-/etc/warden/") {
					t.Errorf("EnvironmentFile=%s should be optional (-) and under /etc/warden", ef)
				}
			}
			exec := strings.Fields(u.one("Service", "ExecStart"))
			if len(exec) == 0 {
				t.Fatal("no ExecStart")
			}
			bin := filepath.Base(exec[0])
			if fi, err := os.Stat(servicesPath(t, "cmd", bin)); err != nil || !fi.IsDir() {
				t.Errorf("ExecStart runs %s, which is not a command in services/cmd", bin)
			}
		})
	}
}

func TestSystemdWardend(t *testing.T) {
	u := parseUnit(t, deployPath(t, "systemd", "wardend.service"))
	exec := strings.Fields(u.one("Service", "ExecStart"))
	args := argFlags(exec[1:])
	if args["config"] != "/etc/warden/wardend.yaml" {
		t.Errorf("ExecStart --config = %q, want /etc/warden/wardend.yaml", args["config"])
	}
	if got := u["Service"]["EnvironmentFile"]; !slices.Contains(got, "-/etc/warden/wardend.env") {
		t.Errorf("EnvironmentFile = %v, want -/etc/warden/wardend.env", got)
	}
	known := wardendFlagNames()
	for f := range args {
		if !known[f] {
			t.Errorf("ExecStart passes --%s, which wardend does not have", f)
		}
	}
	// The seal key arrives as a systemd credential named like the file ExecStart points at.
	cred := u.one("Service", "LoadCredential")
	credName, _, _ := strings.Cut(cred, ":")
	if args["seal-key-file"] != "%d/"+credName {
		t.Errorf("--seal-key-file=%s does not name the credential %q", args["seal-key-file"], credName)
	}
	// The installed config (deploy/config/wardend.yaml) plus these flags is a valid wardend configuration,
	// and its data dir is writable under ProtectSystem=strict.
	argv := []string{"--config", deployPath(t, "config", "wardend.yaml")}
	for f, v := range args {
		if f != "config" {
			argv = append(argv, "--"+f+"="+strings.ReplaceAll(v, "%d", "/run/credentials/wardend.service"))
		}
	}
	cfg, err := loadWardend(t, argv, nil)
	if err != nil {
		t.Fatalf("wardend.yaml with the unit's flags: %v", err)
	}
	if !slices.Contains(u["Service"]["ReadWritePaths"], cfg.DataDir) && "/var/lib/"+u.one("Service", "StateDirectory") != cfg.DataDir {
		t.Errorf("data-dir %s is not writable (ReadWritePaths=%v StateDirectory=%s)", cfg.DataDir, u["Service"]["ReadWritePaths"], u.one("Service", "StateDirectory"))
	}
}

func TestSystemdAgent(t *testing.T) {
	u := parseUnit(t, deployPath(t, "systemd", "warden-agent@.service"))
	exec := u.one("Service", "ExecStart")
	args := argFlags(strings.Fields(exec)[1:])
	if args["role"] != "%i" {
		t.Errorf("ExecStart --role = %q, want the instance name %%i", args["role"])
	}
	for _, role := range []string{"webapp", "coreapp"} {
		t.Run(role, func(t *testing.T) {
			installed := strings.ReplaceAll(args["config"], "%i", role)
			// README installs deploy/config/<base> as /etc/warden/<base>.
			local := deployPath(t, "config", filepath.Base(installed))
			var doc map[string]any
			if err := yaml.Unmarshal(readFile(t, local), &doc); err != nil {
				t.Fatalf("instance %s reads %s, shipped as %s: %v", role, installed, local, err)
			}
			if got := s(doc["role"]); got != role {
				t.Errorf("%s has role %q, instance %s passes --role %s", local, got, role, role)
			}
			dir := s(doc["data-dir"])
			if !slices.ContainsFunc(u["Service"]["ReadWritePaths"], func(p string) bool { return dir == p || strings.HasPrefix(dir, p+"/") }) {
				t.Errorf("data-dir %s is not in ReadWritePaths %v", dir, u["Service"]["ReadWritePaths"])
			}
			// A reload through systemctl needs the polkit rule for that unit.
			if cmd := s(doc["reload-command"]); strings.Contains(cmd, "systemctl") {
				fields := strings.Fields(cmd)
				target := fields[len(fields)-1]
				if !strings.Contains(string(readFile(t, deployPath(t, "systemd", "warden-agent.polkit.rules"))), `"`+target+`"`) {
					t.Errorf("reload-command restarts %s, which warden-agent.polkit.rules does not allow", target)
				}
			}
		})
	}
	flags := agentFlagNames()
	for f := range args {
		if !flags[f] {
			t.Errorf("ExecStart passes --%s, which warden-agent does not have", f)
		}
	}
}
