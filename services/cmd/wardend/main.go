// Command wardend is the Warden control plane: one binary hosting any subset of the cert, secret,
// policy and mesh services (plus the admin service) on one TLS port, over embedded or external etcd.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/warden-sec/warden/services/internal/cliconfig"
	"github.com/warden-sec/warden/services/internal/logging"
	"github.com/warden-sec/warden/services/internal/wardend"
)

func main() {
	cfg := wardend.Defaults()
	fs := flag.NewFlagSet("wardend", flag.ContinueOnError)
	cfg.Flags(fs)
	sources, err := cliconfig.Load(fs, os.Args[1:], "WARDEN", "config", os.LookupEnv)
	if err == flag.ErrHelp {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wardend:", err)
		os.Exit(2)
	}
	log, err := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wardend:", err)
		os.Exit(2)
	}
	log.Info("starting wardend", cliconfig.Redacted(fs, sources)...)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := wardend.Run(ctx, cfg, log, wardend.Builders(), wardend.AlwaysHosted(), nil); err != nil {
		log.Error("wardend failed", "err", err)
		stop()
		os.Exit(1)
	}
}
