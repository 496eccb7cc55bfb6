package deploytest

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// stage is one FROM … stage of a Dockerfile with its instructions (continuation lines joined).
type stage struct {
	from  string
	lines []string
}

func parseDockerfile(t testing.TB, path string) []stage {
	t.Helper()
	joined := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(readFile(t, path)), " ")
	var stages []stage
	for _, line := range strings.Split(joined, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Fields(line); strings.EqualFold(f[0], "FROM") {
			stages = append(stages, stage{from: f[1]})
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s: instruction before FROM: %s", path, line)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	return stages
}

func (s stage) instr(name string) []string {
	var out []string
	for _, l := range s.lines {
		if f := strings.Fields(l); strings.EqualFold(f[0], name) {
			out = append(out, strings.TrimSpace(l[len(f[0]):]))
		}
	}
	return out
}

func TestDockerfiles(t *testing.T) {
	for _, bin := range []string{"wardend", "warden-agent"} {
		t.Run(bin, func(t *testing.T) {
			path := deployPath(t, "docker", "Dockerfile."+bin)
			stages := parseDockerfile(t, path)
			if len(stages) < 2 {
				t.Fatalf("want a multi-stage build, got %d stage(s)", len(stages))
			}
			for _, st := range stages {
				if !imagePinned(st.from) {
					t.Errorf("FROM %s is not pinned by tag", st.from)
				}
			}
			if !strings.HasPrefix(stages[0].from, "golang:1.26") {
				t.Errorf("build stage FROM %s, want golang:1.26", stages[0].from)
			}
			final := stages[len(stages)-1]
			if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
				t.Errorf("runtime stage FROM %s, want distroless static", final.from)
			}
			build := strings.Join(stages[0].instr("RUN"), "\n")
			if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "./services/cmd/"+bin) {
				t.Errorf("the build stage does not build a static ./services/cmd/%s", bin)
			}
			if _, err := os.Stat(servicesPath(t, "cmd", bin)); err != nil {
				t.Errorf("services/cmd/%s: %v", bin, err)
			}
			users := final.instr("USER")
			if len(users) == 0 || strings.HasPrefix(users[len(users)-1], "0") || strings.HasPrefix(users[len(users)-1], "root") {
				t.Errorf("runtime stage USER %v: must be a non-root user", users)
			}
			if ep := final.instr("ENTRYPOINT"); len(ep) != 1 || !strings.Contains(ep[0], `"/usr/local/bin/`+bin+`"`) {
				t.Errorf("ENTRYPOINT %v, want /usr/local/bin/%s", ep, bin)
			}
			if !fileExists(path + ".dockerignore") {
				t.Errorf("no %s.dockerignore: the context (repository root) may hold .warden/ keys", path)
			}
			// Variables baked into the image must be settings the binary has.
			env := map[string]string{}
			for _, e := range final.instr("ENV") {
				for _, kv := range strings.Fields(e) {
					if k, v, ok := strings.Cut(kv, "="); ok {
						env[k] = v
					}
				}
			}
			if bin == "wardend" {
				if _, err := loadWardend(t, nil, env); err != nil {
					t.Errorf("the image's ENV does not make a valid wardend configuration: %v", err)
				}
			} else {
				flags := agentFlagNames()
				for k := range env {
					if name, ok := strings.CutPrefix(k, "WARDEN_AGENT_"); ok && !flags[flagName(name)] {
						t.Errorf("ENV %s matches no warden-agent flag", k)
					}
				}
			}
		})
	}
}
