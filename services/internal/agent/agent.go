package agent

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	"github.com/warden-sec/warden/services/internal/agent/front"
	"github.com/warden-sec/warden/services/internal/agent/live"
	"github.com/warden-sec/warden/services/internal/agent/materialize"
	"github.com/warden-sec/warden/services/internal/agent/meshprobe"
	"github.com/warden-sec/warden/services/internal/agent/node"
	"github.com/warden-sec/warden/services/internal/agent/reload"
	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/cliconfig"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/rungroup"
)

// DefaultDataDir is where the original deployment keeps the apps' data, certificates included.
const DefaultDataDir = "/usr/local/waent/data"

// Config is the agent's configuration. Every field is a flag (and a WARDEN_AGENT_* variable and a
// config-file key).
type Config struct {
	ConfigFile     string
	Role           string
	NodeID         string
	DataDir        string
	Servers        cliconfig.List
	JoinToken      string
	CAFingerprint  string
	CAFile         string
	Group          string
	ReloadCommand  string
	ReloadSignal   string
	ReloadPIDFile  string
	ReloadDebounce time.Duration

	FrontListen      string
	Upstream         string
	CommListen       string
	CommUpstream     string
	ControlListen    string
	ControlAdvertise string
	Master           bool
	MeshInterval     time.Duration

	StatusInterval time.Duration
	StreamIdle     time.Duration
	LogLevel       string
	LogFormat      string
}

// Defaults returns the defaults of every setting.
func Defaults() Config {
	return Config{
		DataDir:        DefaultDataDir,
		Servers:        cliconfig.List{"127.0.0.1:7443"},
		ReloadDebounce: reload.DefaultDebounce,
		MeshInterval:   meshprobe.DefaultInterval,
		StatusInterval: 5 * time.Second,
		StreamIdle:     node.DefaultStreamIdle,
		LogLevel:       "info",
		LogFormat:      "text",
	}
}

// SecretFlags are redacted in the start-up log.
var SecretFlags = []string{"join-token"}

// Flags registers every setting on fs, with c's values as defaults.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "YAML file with settings (keys are flag names); flags and WARDEN_AGENT_* variables override it")
	fs.StringVar(&c.Role, "role", c.Role, "node role: webapp or coreapp")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "the node's id in the registry")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "the apps' data directory; certificates go to <data-dir>/certs, the env file to <data-dir>/warden.env, the agent's state to <data-dir>/.warden-agent")
	fs.Var(&c.Servers, "server", "control-plane endpoints host:port[,host:port…]; calls are spread over them and fail over")
	fs.StringVar(&c.JoinToken, "join-token", c.JoinToken, "one-time join token (first start only, or to replace a lost or expired identity)")
	fs.StringVar(&c.CAFingerprint, "ca-fingerprint", c.CAFingerprint, "SHA-256 fingerprint of the CA to pin when bootstrapping (hex, colons allowed)")
	fs.StringVar(&c.CAFile, "ca-file", c.CAFile, "optional PEM file holding the pinned CA, for servers that do not present their root; its fingerprint must match --ca-fingerprint")
	fs.StringVar(&c.Group, "group", c.Group, "group (name or GID) that may read the files: directory 0750, keys 0640; default: only the agent's user")
	fs.StringVar(&c.ReloadCommand, "reload-command", c.ReloadCommand, "command run after files changed (split on spaces, no shell)")
	fs.StringVar(&c.ReloadSignal, "reload-signal", c.ReloadSignal, "signal (e.g. HUP) sent to the PID in --reload-pid-file after files changed")
	fs.StringVar(&c.ReloadPIDFile, "reload-pid-file", c.ReloadPIDFile, "file holding the app's PID, for --reload-signal")
	fs.DurationVar(&c.ReloadDebounce, "reload-debounce", c.ReloadDebounce, "quiet time that ends a burst of changes before one reload")
	fs.StringVar(&c.FrontListen, "front-listen", c.FrontListen, "Webapp HTTPS front listen address (empty: no front)")
	fs.StringVar(&c.Upstream, "upstream", c.Upstream, "the local Webapp the HTTPS front proxies to (http:// or https:// URL)")
	fs.StringVar(&c.CommListen, "comm-listen", c.CommListen, "Coreapp communication-service front listen address (empty: none)")
	fs.StringVar(&c.CommUpstream, "comm-upstream", c.CommUpstream, "the local Coreapp communication port (host:port)")
	fs.StringVar(&c.ControlListen, "control-listen", c.ControlListen, "Coreapp control endpoint listen address; set to join the Multiconnect mesh")
	fs.StringVar(&c.ControlAdvertise, "control-advertise", c.ControlAdvertise, "control address peers dial (default: --control-listen)")
	fs.BoolVar(&c.Master, "master", c.Master, "the Coreapp may become Multiconnect master (WA_MASTER_NODE=1)")
	fs.DurationVar(&c.MeshInterval, "mesh-interval", c.MeshInterval, "time between mesh probe rounds and peer-health reports")
	fs.DurationVar(&c.StatusInterval, "status-interval", c.StatusInterval, "how often the status file is rewritten even without changes")
	fs.DurationVar(&c.StreamIdle, "stream-idle", c.StreamIdle, "a stream silent for this long (no snapshot or heartbeat) is reconnected")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
}

// Validate checks the configuration after all layers were applied.
func (c *Config) Validate() error {
	if c.Role != string(identity.RoleWebapp) && c.Role != string(identity.RoleCoreapp) {
		return fmt.Errorf("--role must be webapp or coreapp, got %q", c.Role)
	}
	if err := identity.ValidName(c.NodeID); err != nil {
		return fmt.Errorf("--node-id: %w", err)
	}
	if c.DataDir == "" {
		return fmt.Errorf("--data-dir must not be empty")
	}
	if len(c.Servers) == 0 {
		return fmt.Errorf("--server must name at least one endpoint")
	}
	for _, s := range c.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return fmt.Errorf("--server %q: %w", s, err)
		}
	}
	if (c.JoinToken == "") != (c.CAFingerprint == "") {
		return fmt.Errorf("--join-token and --ca-fingerprint go together")
	}
	if c.ReloadCommand != "" && (c.ReloadSignal != "" || c.ReloadPIDFile != "") {
		return fmt.Errorf("--reload-command excludes --reload-signal and --reload-pid-file")
	}
	if (c.ReloadSignal == "") != (c.ReloadPIDFile == "") {
		return fmt.Errorf("--reload-signal and --reload-pid-file go together")
	}
	if (c.FrontListen == "") != (c.Upstream == "") {
		return fmt.Errorf("--front-listen and --upstream go together")
	}
	if (c.CommListen == "") != (c.CommUpstream == "") {
		return fmt.Errorf("--comm-listen and --comm-upstream go together")
	}
	webappOnly := c.FrontListen != ""
	coreappOnly := c.CommListen != "" || c.ControlListen != "" || c.ControlAdvertise != "" || c.Master
	if c.Role == string(identity.RoleWebapp) && coreappOnly {
		return fmt.Errorf("--comm-listen, --control-listen, --control-advertise and --master are for --role coreapp")
	}
	if c.Role == string(identity.RoleCoreapp) && webappOnly {
		return fmt.Errorf("--front-listen is for --role webapp")
	}
	if c.ControlAdvertise != "" && c.ControlListen == "" {
		return fmt.Errorf("--control-advertise needs --control-listen")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format must be text or json")
	}
	return nil
}

// Run runs the agent until ctx is done.
func Run(ctx context.Context, c Config, log *slog.Logger) error {
	if err := c.Validate(); err != nil {
		return err
	}
	role := identity.Role(c.Role)
	gid, err := groupID(c.Group)
	if err != nil {
		return err
	}
	rl, err := newReloader(c, log)
	if err != nil {
		return err
	}
	state := &live.State{}
	tracker := status.NewTracker(c.DataDir, status.Status{
		Role: c.Role, NodeID: c.NodeID, PID: os.Getpid(), Servers: c.Servers, StartedAt: time.Now().UTC(),
	})

	g := rungroup.New(ctx)
	var fronts []status.Front
	var prober *meshprobe.Prober
	var ln struct{ front, comm, control net.Listener }
	closeAll := func() {
		for _, l := range []net.Listener{ln.front, ln.comm, ln.control} {
			if l != nil {
				_ = l.Close()
			}
		}
	}
	listen := func(addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		return l, nil
	}
	if c.FrontListen != "" {
		up, err := url.Parse(c.Upstream)
		if err != nil {
			return fmt.Errorf("--upstream: %w", err)
		}
		if ln.front, err = listen(c.FrontListen); err != nil {
			return err
		}
		w, err := front.NewWebapp(front.WebappConfig{Listener: ln.front, Upstream: up, State: state, Log: log.With("front", "webapp")})
		if err != nil {
			closeAll()
			return err
		}
		g.Go("webapp front", w.Run)
		fronts = append(fronts, status.Front{Name: "webapp-https", Listen: ln.front.Addr().String()})
	}
	if c.CommListen != "" {
		if ln.comm, err = listen(c.CommListen); err != nil {
			return err
		}
		cm, err := front.NewComm(front.CommConfig{Listener: ln.comm, Upstream: c.CommUpstream, State: state, Log: log.With("front", "communication")})
		if err != nil {
			closeAll()
			return err
		}
		g.Go("communication front", cm.Run)
		fronts = append(fronts, status.Front{Name: "coreapp-communication", Listen: ln.comm.Addr().String()})
	}
	advertise := c.ControlAdvertise
	if c.ControlListen != "" {
		if ln.control, err = listen(c.ControlListen); err != nil {
			return err
		}
		ct, err := front.NewControl(front.ControlConfig{Listener: ln.control, NodeID: c.NodeID, State: state, Log: log.With("front", "control")})
		if err != nil {
			closeAll()
			return err
		}
		g.Go("control endpoint", ct.Run)
		fronts = append(fronts, status.Front{Name: "coreapp-control", Listen: ln.control.Addr().String()})
		if advertise == "" {
			advertise = ln.control.Addr().String()
		}
	}
	tracker.Update(func(s *status.Status) { s.Fronts = fronts })

	ncfg := node.Config{
		Role: role, NodeID: c.NodeID, DataDir: c.DataDir, Servers: c.Servers,
		JoinToken: c.JoinToken, CAFingerprint: c.CAFingerprint, CAFile: c.CAFile, GroupID: gid,
		State: state, Status: tracker, Reload: rl.Trigger, Log: log, StreamIdle: c.StreamIdle,
	}
	if role == identity.RoleCoreapp && c.ControlListen != "" {
		ncfg.ControlAddress, ncfg.MasterEligible = advertise, c.Master
		prober = meshprobe.New(meshprobe.Config{
			NodeID: c.NodeID, ControlAddress: advertise, Interval: c.MeshInterval, Status: tracker, Log: log.With("component", "mesh"),
			Probe: func(ctx context.Context, addr, wantID string) (time.Duration, error) {
				return front.Probe(ctx, state, addr, wantID)
			},
		})
		ncfg.OnPeers = func(snap *meshv1.WatchPeersResponse) { prober.SetPeers(snap) }
	}
	n, err := node.New(ncfg)
	if err != nil {
		closeAll()
		return err
	}
	if prober != nil {
		prober.SetReport(n.ReportPeerHealth)
		g.Go("mesh prober", prober.Run)
	}
	g.Go("node", n.Run)
	g.Go("status", func(ctx context.Context) error { return tracker.Run(ctx, c.StatusInterval) })
	g.Go("reloader", rl.Run)
	return g.Wait()
}

func newReloader(c Config, log *slog.Logger) (*reload.Reloader, error) {
	rc := reload.Config{Debounce: c.ReloadDebounce, Log: log.With("component", "reload")}
	if c.ReloadCommand != "" {
		rc.Command = strings.Fields(c.ReloadCommand)
	}
	if c.ReloadSignal != "" {
		sig, err := parseSignal(c.ReloadSignal)
		if err != nil {
			return nil, err
		}
		rc.Signal, rc.PIDFile = sig, c.ReloadPIDFile
	}
	return reload.New(rc)
}

var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM,
	"INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "WINCH": syscall.SIGWINCH,
}

func parseSignal(s string) (syscall.Signal, error) {
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG")
	if sig, ok := signals[name]; ok {
		return sig, nil
	}
	if n, err := strconv.Atoi(name); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	return 0, fmt.Errorf("--reload-signal %q: not a signal name (HUP, USR1, USR2, …) or number", s)
}

// groupID resolves --group (a name or a numeric GID).
func groupID(s string) (int, error) {
	if s == "" {
		return materialize.NoGroup, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("--group: %w", err)
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("--group %s: GID %q is not numeric", s, g.Gid)
	}
	return n, nil
}
