// Command warden-agent runs beside a Webapp or Coreapp: it keeps the node's certificates, secrets and
// env file in <data-dir> in line with the Warden control plane, and optionally fronts the app.
//
//	warden-agent [run] --role webapp|coreapp --node-id ID --server host:port … [flags]
//	warden-agent status [--data-dir DIR] [-o text|json]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warden-sec/warden/services/internal/agent"
	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/cliconfig"
	"github.com/warden-sec/warden/services/internal/logging"
)

func main() {
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "status") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "status" {
		os.Exit(statusCmd(args))
	}
	os.Exit(run(args))
}

func run(args []string) int {
	cfg := agent.Defaults()
	fs := flag.NewFlagSet("warden-agent run", flag.ContinueOnError)
	cfg.Flags(fs)
	sources, err := cliconfig.Load(fs, args, "WARDEN_AGENT", "config", os.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "warden-agent:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "warden-agent:", err)
		return 2
	}
	log, err := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "warden-agent:", err)
		return 2
	}
	log.Info("starting warden-agent", cliconfig.Redacted(fs, sources, agent.SecretFlags...)...)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := agent.Run(ctx, cfg, log); err != nil {
		log.Error("warden-agent failed", "err", err)
		return 1
	}
	return 0
}

func statusCmd(args []string) int {
	fs := flag.NewFlagSet("warden-agent status", flag.ContinueOnError)
	dataDir := fs.String("data-dir", agent.DefaultDataDir, "the data directory of the agent to report on")
	out := fs.String("o", "text", "output: text or json")
	if _, err := cliconfig.Load(fs, args, "WARDEN_AGENT", "", os.LookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "warden-agent status:", err)
		return 2
	}
	s, err := status.Read(*dataDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "warden-agent status:", err, "(is the agent running with this --data-dir?)")
		return 1
	}
	switch *out {
	case "json":
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			fmt.Fprintln(os.Stderr, "warden-agent status:", err)
			return 1
		}
	case "text":
		if err := status.Render(os.Stdout, s, time.Now()); err != nil {
			fmt.Fprintln(os.Stderr, "warden-agent status:", err)
			return 1
		}
	default:
		fmt.Fprintln(os.Stderr, "warden-agent status: -o must be text or json")
		return 2
	}
	return 0
}
