package deploytest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const appDataDir = "/usr/local/waent/data"

type compose struct {
	dir      string
	services map[string]any
	networks map[string]any
	volumes  map[string]any
}

func loadCompose(t testing.TB) compose {
	t.Helper()
	path := deployPath(t, "docker-compose", "docker-compose.yml")
	doc := yamlFile(t, path)
	c := compose{dir: filepath.Dir(path), services: m(doc["services"]), networks: m(doc["networks"]), volumes: m(doc["volumes"])}
	if c.services == nil || c.networks == nil || c.volumes == nil {
		t.Fatalf("%s: services, networks and volumes must all be present", path)
	}
	return c
}

func (c compose) svc(t testing.TB, name string) map[string]any {
	t.Helper()
	sv := m(c.services[name])
	if sv == nil {
		t.Fatalf("compose has no service %q", name)
	}
	return sv
}

// nets lists a service's networks, in either the list or the map form.
func (c compose) nets(t testing.TB, name string) []string {
	t.Helper()
	v := c.svc(t, name)["networks"]
	if mm := m(v); mm != nil {
		var out []string
		for k := range mm {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	out := strs(v)
	slices.Sort(out)
	return out
}

type mount struct{ source, target string }

// mounts parses short-form ("src:dst[:mode]") and long-form volume entries.
func (c compose) mounts(t testing.TB, name string) []mount {
	t.Helper()
	var out []mount
	for _, v := range l(c.svc(t, name)["volumes"]) {
		if mm := m(v); mm != nil {
			out = append(out, mount{s(mm["source"]), s(mm["target"])})
			continue
		}
		parts := strings.Split(s(v), ":")
		if len(parts) < 2 {
			t.Fatalf("service %s: volume %q has no target", name, s(v))
		}
		out = append(out, mount{parts[0], parts[1]})
	}
	return out
}

func (c compose) dataSource(t testing.TB, name string) string {
	t.Helper()
	for _, mt := range c.mounts(t, name) {
		if mt.target == appDataDir {
			return mt.source
		}
	}
	t.Fatalf("service %s does not mount anything at %s", name, appDataDir)
	return ""
}

// envFilePath is the path of an env_file entry in the short ("file") or long ({path: file}) form.
func envFilePath(e any) string {
	if p := s(get(e, "path")); p != "" {
		return p
	}
	return s(e)
}

var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate resolves ${VAR:-default} to its default and ${VAR:?msg} (required: compose refuses to run
// without it) to "REQUIRED". A bare ${VAR} resolves to "" as it would with VAR unset.
func interpolate(v string) string {
	return interpolation.ReplaceAllStringFunc(v, func(x string) string {
		sm := interpolation.FindStringSubmatch(x)
		switch {
		case strings.HasSuffix(sm[2], "-"):
			return sm[3]
		case strings.HasSuffix(sm[2], "?"):
			return "REQUIRED"
		}
		return ""
	})
}

// imagePinned reports whether ref names a tag (or digest) other than latest.
func imagePinned(ref string) bool {
	if strings.Contains(ref, "@sha256:") {
		return true
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	name, tag, ok := strings.Cut(last, ":")
	return ok && name != "" && tag != "" && tag != "latest"
}

func TestComposeSegregation(t *testing.T) {
	c := loadCompose(t)
	cases := []struct {
		service     string
		want, never []string
	}{
		// The database is reachable by the apps only.
		{"db", []string{"db"}, []string{"clients", "management", "app", "coreapp-control", "warden", "etcd", "egress"}},
		// Coreapp exposes nothing to clients or management, and does not reach wardend itself.
		{"wacore", []string{"app", "db", "coreapp-control"}, []string{"clients", "management", "warden", "etcd"}},
		// Webapp serves clients and management, talks to Coreapps and the db, never joins the Coreapp control network.
		{"waweb", []string{"clients", "management", "app", "db"}, []string{"coreapp-control", "warden", "etcd", "egress"}},
		// wardend: agents and operators only.
		{"wardend", []string{"warden", "etcd"}, []string{"clients", "app", "db", "coreapp-control", "egress"}},
		{"etcd", []string{"etcd"}, []string{"clients", "management", "app", "db", "coreapp-control", "warden", "egress"}},
		// An agent reaches wardend; the Coreapp agent also its mesh peers. Neither serves clients.
		{"warden-agent-waweb", []string{"warden"}, []string{"clients", "management", "app", "db", "coreapp-control", "etcd", "egress"}},
		{"warden-agent-wacore", []string{"warden", "coreapp-control"}, []string{"clients", "management", "app", "db", "etcd", "egress"}},
	}
	for _, tc := range cases {
		t.Run(tc.service, func(t *testing.T) {
			got := c.nets(t, tc.service)
			for _, n := range tc.want {
				if !slices.Contains(got, n) {
					t.Errorf("%s networks = %v, missing %s", tc.service, got, n)
				}
			}
			for _, n := range tc.never {
				if slices.Contains(got, n) {
					t.Errorf("%s networks = %v, must not include %s", tc.service, got, n)
				}
			}
		})
	}
	t.Run("db is on the db network only", func(t *testing.T) {
		if got := c.nets(t, "db"); !slices.Equal(got, []string{"db"}) {
			t.Errorf("db networks = %v, want [db]", got)
		}
	})
	t.Run("inner networks are internal", func(t *testing.T) {
		for _, n := range []string{"app", "db", "coreapp-control", "warden", "etcd"} {
			if internal, _ := get(c.networks, n, "internal").(bool); !internal {
				t.Errorf("network %s must be internal: true", n)
			}
		}
	})
	t.Run("only waweb and wardend publish ports", func(t *testing.T) {
		for name := range c.services {
			ports := strs(c.svc(t, name)["ports"])
			switch name {
			case "waweb":
				if !slices.ContainsFunc(ports, func(p string) bool { return strings.HasSuffix(p, ":443") }) {
					t.Errorf("waweb must publish HTTPS 443, ports = %v", ports)
				}
			case "wardend":
				for _, p := range ports {
					if !strings.HasPrefix(p, "127.0.0.1:") {
						t.Errorf("wardend publishes %q beyond the host's loopback", p)
					}
				}
			default:
				if len(ports) > 0 {
					t.Errorf("%s publishes %v", name, ports)
				}
			}
		}
	})
}

func TestComposeAgentsShareTheirAppsData(t *testing.T) {
	c := loadCompose(t)
	seen := map[string]string{}
	for app, agent := range map[string]string{"waweb": "warden-agent-waweb", "wacore": "warden-agent-wacore"} {
		t.Run(app, func(t *testing.T) {
			src := c.dataSource(t, app)
			if got := c.dataSource(t, agent); got != src {
				t.Errorf("%s mounts %q at %s, %s mounts %q", agent, got, appDataDir, app, src)
			}
			// The app reads the env file the agent writes into that volume.
			var envFiles []string
			for _, e := range l(c.svc(t, app)["env_file"]) {
				envFiles = append(envFiles, envFilePath(e))
			}
			if want := src + "/warden.env"; !slices.Contains(envFiles, want) {
				t.Errorf("%s env_file = %v, want it to include %s", app, envFiles, want)
			}
			// The agent must know where it writes.
			if dir := interpolate(s(get(c.svc(t, agent), "environment", "WARDEN_AGENT_DATA_DIR"))); dir != "" && dir != appDataDir {
				t.Errorf("%s WARDEN_AGENT_DATA_DIR = %q, want %s", agent, dir, appDataDir)
			}
		})
		seen[app] = c.dataSource(t, app)
	}
	// A Webapp must never see Coreapp credentials: the data volumes are separate.
	if seen["waweb"] == seen["wacore"] {
		t.Errorf("waweb and wacore share the data volume %q, so each can read the other's keys", seen["waweb"])
	}
}

func TestComposeReferences(t *testing.T) {
	c := loadCompose(t)
	usedNets, usedVols := map[string]bool{}, map[string]bool{}
	ignored := gitignored(t, filepath.Join(c.dir, ".gitignore"))
	for name := range c.services {
		for _, n := range c.nets(t, name) {
			usedNets[n] = true
			if _, ok := c.networks[n]; !ok {
				t.Errorf("service %s uses undeclared network %s", name, n)
			}
		}
		for _, mt := range c.mounts(t, name) {
			if !strings.HasPrefix(mt.source, ".") && !strings.HasPrefix(mt.source, "/") {
				usedVols[mt.source] = true
				if _, ok := c.volumes[mt.source]; !ok {
					t.Errorf("service %s uses undeclared volume %s", name, mt.source)
				}
				continue
			}
			checkLocalPath(t, c.dir, mt.source, ignored, "service "+name+" mounts")
		}
		for _, e := range l(c.svc(t, name)["env_file"]) {
			p := envFilePath(e)
			if required, set := get(e, "required").(bool); set && !required {
				continue
			}
			// Required env files hold passwords, so the repository has only the example to copy.
			if _, err := os.Stat(filepath.Join(c.dir, p+".example")); err != nil {
				t.Errorf("service %s needs env file %s but %s.example does not exist", name, p, p)
			}
		}
		for _, d := range strs(c.svc(t, name)["depends_on"]) {
			if _, ok := c.services[d]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, d)
			}
		}
		for d := range m(c.svc(t, name)["depends_on"]) {
			if _, ok := c.services[d]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, d)
			}
		}
	}
	for n := range c.networks {
		if !usedNets[n] {
			t.Errorf("network %s is declared but unused", n)
		}
	}
	for v := range c.volumes {
		if !usedVols[v] {
			t.Errorf("volume %s is declared but unused", v)
		}
	}
}

// checkLocalPath accepts a bind-mount source that is in the repository or that is generated locally
// (listed in the compose directory's .gitignore: gen-pki.sh output, agent-written data, copied examples).
func checkLocalPath(t testing.TB, dir, source string, ignored []string, what string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, source)); err == nil {
		return
	}
	rel := strings.TrimPrefix(filepath.ToSlash(filepath.Clean(source)), "./")
	for _, pat := range ignored {
		if rel == pat || strings.HasPrefix(rel, pat+"/") {
			return
		}
	}
	t.Errorf("%s %s, which is neither in the repository nor generated (.gitignore)", what, source)
}

// gitignored lists the root-anchored entries of a .gitignore ("/x/" → "x").
func gitignored(t testing.TB, path string) []string {
	var out []string
	for _, line := range strings.Split(string(readFile(t, path)), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "/") {
			out = append(out, strings.Trim(line, "/"))
		}
	}
	return out
}

func TestComposeImagesAndBuilds(t *testing.T) {
	c := loadCompose(t)
	for name := range c.services {
		sv := c.svc(t, name)
		ref := interpolate(s(sv["image"]))
		if !imagePinned(ref) {
			t.Errorf("service %s image %q (%q after interpolation) is not pinned by tag", name, s(sv["image"]), ref)
		}
		if b := m(sv["build"]); b != nil {
			df := filepath.Join(c.dir, s(b["context"]), s(b["dockerfile"]))
			if _, err := os.Stat(df); err != nil {
				t.Errorf("service %s builds from %s: %v", name, df, err)
			}
		}
	}
	for _, name := range []string{"waweb", "wacore"} {
		// The proprietary images must not silently fall back to a default tag.
		if img := s(c.svc(t, name)["image"]); !strings.Contains(img, ":${WA_IMAGE_TAG:?") {
			t.Errorf("%s image %q should take its tag from the required ${WA_IMAGE_TAG:?…}", name, img)
		}
	}
	if got, want := s(c.svc(t, "etcd")["image"]), "quay.io/coreos/etcd:"+etcdVersion(t); got != want {
		t.Errorf("etcd image = %s, want %s (the release wardend embeds, services/go.mod)", got, want)
	}
}

func TestComposeWardendEnvironment(t *testing.T) {
	c := loadCompose(t)
	env := map[string]string{}
	for k, v := range m(c.svc(t, "wardend")["environment"]) {
		env[k] = interpolate(s(v))
	}
	cfg, err := loadWardend(t, nil, env)
	if err != nil {
		t.Fatalf("wardend's compose environment: %v", err)
	}
	if cfg.SealKeyFile == "" || len(cfg.EtcdEndpoints) == 0 {
		t.Errorf("compose wardend should use the etcd service and a seal key file, got endpoints=%v seal=%q", cfg.EtcdEndpoints, cfg.SealKeyFile)
	}
	if !slices.Contains(cfg.ServerNames, "wardend") {
		t.Errorf("server-names %v lack the name the agents dial (wardend)", cfg.ServerNames)
	}
	for _, agent := range []string{"warden-agent-waweb", "warden-agent-wacore"} {
		if srv := s(get(c.svc(t, agent), "environment", "WARDEN_AGENT_SERVER")); !strings.HasPrefix(srv, "wardend:") {
			t.Errorf("%s WARDEN_AGENT_SERVER = %q, want wardend:<port>", agent, srv)
		}
	}
	// Every file wardend is told to read is mounted.
	var mounted []string
	for _, mt := range c.mounts(t, "wardend") {
		mounted = append(mounted, mt.target)
	}
	for _, f := range []string{cfg.EtcdCACert, cfg.EtcdCert, cfg.EtcdKey, cfg.SealKeyFile, cfg.DataDir} {
		if !slices.ContainsFunc(mounted, func(dir string) bool { return f == dir || strings.HasPrefix(f, dir+"/") }) {
			t.Errorf("wardend reads %s but nothing is mounted there (mounts %v)", f, mounted)
		}
	}
}
