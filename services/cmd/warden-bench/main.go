// Command warden-bench runs wardend under simulated agents and prints fan-out, issuance, memory,
// reconnect-storm and first-credential figures beside same-run baselines. See BENCHMARKS.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/warden-sec/warden/services/internal/bench"
)

func main() {
	bench.ServeBaselineIfAsked()
	cfg := bench.FullConfig()
	fs := flag.NewFlagSet("warden-bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "small run in seconds: 20 agents, one issuance setting, short loops")
	agents := fs.String("agents", ints(cfg.Agents), "fan-out sweep: agent counts, comma-separated")
	clients := fs.String("issuance-clients", ints(cfg.IssuanceClients), "issuance concurrency settings, comma-separated")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "connections of the multiplexed baseline (wardend's agents always have one each: a connection is one identity); 0 skips it")
	noStorm := fs.Bool("no-storm", false, "skip the reconnect storm")
	fs.IntVar(&cfg.Rounds, "rounds", 0, "changes per fan-out measurement (default 5, 3 with -quick)")
	out := fs.String("out", "text", "report format: text or json")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "keep wardend's data dir and logs here (default: a temporary dir, removed)")
	verbose := fs.Bool("v", false, "log progress to stderr")
	render := fs.String("render", "", "print a report saved with -out json as text, and run nothing")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if *render != "" {
		if err := renderSaved(*render); err != nil {
			fail(1, "%v", err)
		}
		return
	}
	if *quick {
		q := bench.QuickConfig()
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		q.Rounds, q.WorkDir = cfg.Rounds, cfg.WorkDir
		if set["conns"] {
			q.Conns = cfg.Conns
		}
		cfg = q
		if !set["agents"] {
			*agents = ints(cfg.Agents)
		}
		if !set["issuance-clients"] {
			*clients = ints(cfg.IssuanceClients)
		}
	}
	var err error
	if cfg.Agents, err = parseInts(*agents); err != nil {
		fail(2, "-agents: %v", err)
	}
	if cfg.IssuanceClients, err = parseInts(*clients); err != nil {
		fail(2, "-issuance-clients: %v", err)
	}
	if *out != "text" && *out != "json" {
		fail(2, "-out must be text or json")
	}
	cfg.Storm = !*noStorm
	cfg.BinDir = os.Getenv("WARDEN_BIN")
	if *verbose {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		fail(1, "%v", err)
	}
	if *out == "json" {
		err = rep.WriteJSON(os.Stdout)
	} else {
		err = rep.WriteText(os.Stdout)
	}
	if err != nil {
		fail(1, "%v", err)
	}
}

func renderSaved(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return rep.WriteText(os.Stdout)
}

func ints(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "warden-bench: "+format+"\n", args...)
	os.Exit(code)
}
