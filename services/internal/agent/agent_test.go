package agent

import (
	"flag"
	"strings"
	"syscall"
	"testing"

	"github.com/warden-sec/warden/services/internal/cliconfig"
)

func parse(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	cfg := Defaults()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg.Flags(fs)
	_, err := cliconfig.Load(fs, args, "WARDEN_AGENT", "config", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func TestConfigValidate(t *testing.T) {
	base := []string{"--role", "webapp", "--node-id", "web-1"}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "minimal", args: base},
		{name: "env layer", env: map[string]string{"WARDEN_AGENT_ROLE": "coreapp", "WARDEN_AGENT_NODE_ID": "core-1", "WARDEN_AGENT_SERVER": "a:1,b:2"}},
		{name: "bad role", args: []string{"--role", "db", "--node-id", "x"}, wantErr: "--role"},
		{name: "bad node id", args: []string{"--role", "webapp", "--node-id", "Web 1"}, wantErr: "--node-id"},
		{name: "bad server", args: append(base, "--server", "nohost"), wantErr: "--server"},
		{name: "token without fingerprint", args: append(base, "--join-token", "t"), wantErr: "go together"},
		{name: "command and signal", args: append(base, "--reload-command", "x", "--reload-signal", "HUP", "--reload-pid-file", "p"), wantErr: "excludes"},
		{name: "signal without pid file", args: append(base, "--reload-signal", "HUP"), wantErr: "go together"},
		{name: "front without upstream", args: append(base, "--front-listen", ":8443"), wantErr: "go together"},
		{name: "webapp with control", args: append(base, "--control-listen", ":6252"), wantErr: "--role coreapp"},
		{name: "coreapp with front", args: []string{"--role", "coreapp", "--node-id", "c", "--front-listen", ":1", "--upstream", "http://x"}, wantErr: "--role webapp"},
		{name: "advertise without listen", args: []string{"--role", "coreapp", "--node-id", "c", "--control-advertise", "h:1"}, wantErr: "needs --control-listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.args, tc.env)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseSignalAndGroup(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"HUP": syscall.SIGHUP, "sigusr1": syscall.SIGUSR1, "15": syscall.SIGTERM} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := parseSignal("BOGUS"); err == nil {
		t.Error("parseSignal accepted BOGUS")
	}
	if gid, err := groupID(""); err != nil || gid != -1 {
		t.Errorf("groupID(\"\") = %d, %v", gid, err)
	}
	if gid, err := groupID("1234"); err != nil || gid != 1234 {
		t.Errorf("groupID(1234) = %d, %v", gid, err)
	}
	if _, err := groupID("no-such-group-warden"); err == nil {
		t.Error("groupID accepted an unknown group")
	}
}
