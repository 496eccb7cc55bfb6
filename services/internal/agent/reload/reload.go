// Package reload tells the app that its certificates or env file changed, by
// running a command or by sending a signal to the process named in a PID file.
//
// Changes arrive in bursts (a snapshot replaces a certificate, its key and the
// env file one after the other), so triggers are debounced: the reload runs
// once the triggers have been quiet for Config.Debounce. A reload that fails is
// logged and counted and never stops the agent: the files on disk are already
// right, and the next change or a restart of the app picks them up.
//
// The package is for unix systems, as is the agent.
package reload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// DefaultDebounce is the quiet time that ends a burst of triggers.
	DefaultDebounce = 500 * time.Millisecond
	// DefaultTimeout bounds a reload command.
	DefaultTimeout = 30 * time.Second

	// maxDelayFactor bounds how long a steady stream of triggers can postpone
	// a reload, in multiples of the debounce.
	maxDelayFactor = 10
	// maxOutput is how much of a command's output is logged.
	maxOutput = 4 << 10
	// waitDelay is how long a timed-out command's output pipes may stay open
	// after it was killed, in case a process outside its group holds them.
	waitDelay = 2 * time.Second
)

// Config configures a Reloader. Set Command, or Signal and PIDFile, or neither
// for a Reloader that does nothing (the app watches its files itself).
type Config struct {
	// Command is run without a shell: Command[0] is the program, looked up in
	// PATH if it has no slash.
	Command []string
	// Signal is sent to the process whose PID is in PIDFile.
	Signal syscall.Signal
	// PIDFile is read afresh for every reload, since the app may have
	// restarted with another PID.
	PIDFile string
	// Debounce is the quiet time that ends a burst; DefaultDebounce if zero.
	Debounce time.Duration
	// Timeout bounds Command; DefaultTimeout if zero.
	Timeout time.Duration
	// Log receives reload results; nothing is logged if nil.
	Log *slog.Logger
}

// Stats counts reloads since New.
type Stats struct {
	// Reloads is the number of reloads run, successful or not.
	Reloads uint64
	// Failures is the number of reloads that failed.
	Failures uint64
}

// Reloader runs reloads on Trigger. Trigger may be called from any goroutine;
// Run must be running for triggers to take effect.
type Reloader struct {
	cfg     Config
	log     *slog.Logger
	trigger chan struct{}

	mu    sync.Mutex
	stats Stats
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Reloader, error) {
	hasCommand := len(cfg.Command) > 0
	hasSignal := cfg.Signal != 0 || cfg.PIDFile != ""
	switch {
	case hasCommand && hasSignal:
		return nil, errors.New("reload: set either a command or a signal and PID file, not both")
	case hasCommand && cfg.Command[0] == "":
		return nil, errors.New("reload: command has an empty program name")
	case hasSignal && (cfg.Signal <= 0 || cfg.PIDFile == ""):
		return nil, errors.New("reload: a signal needs a PID file and a PID file needs a signal")
	case cfg.Debounce < 0:
		return nil, fmt.Errorf("reload: negative debounce %v", cfg.Debounce)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("reload: negative timeout %v", cfg.Timeout)
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	cfg.Command = append([]string(nil), cfg.Command...)
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reloader{cfg: cfg, log: log, trigger: make(chan struct{}, 1)}, nil
}

// Trigger asks for a reload and returns at once. Triggers that arrive while
// one is pending merge into it.
func (r *Reloader) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (r *Reloader) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Run performs reloads until ctx is done, then returns nil. A pending,
// debounced reload is dropped at that point; a running command is killed.
func (r *Reloader) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.trigger:
		}
		if !r.debounce(ctx) {
			return nil
		}
		r.reload(ctx)
	}
}

// debounce waits until triggers have been quiet for the debounce time, or at
// most maxDelayFactor debounce times, so that a steady stream of changes still
// reloads now and then. It reports false if ctx ended first.
func (r *Reloader) debounce(ctx context.Context) bool {
	deadline := time.NewTimer(maxDelayFactor * r.cfg.Debounce)
	defer deadline.Stop()
	quiet := time.NewTimer(r.cfg.Debounce)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-r.trigger:
			quiet.Reset(r.cfg.Debounce)
		case <-quiet.C:
			return true
		case <-deadline.C:
			return true
		}
	}
}

func (r *Reloader) reload(ctx context.Context) {
	var attrs []any
	var err error
	switch {
	case len(r.cfg.Command) > 0:
		attrs, err = r.runCommand(ctx)
	case r.cfg.PIDFile != "":
		attrs, err = r.signal()
	default:
		return
	}
	if ctx.Err() != nil {
		// Shutting down killed the command; that is not the app's failure.
		return
	}
	r.mu.Lock()
	r.stats.Reloads++
	if err != nil {
		r.stats.Failures++
	}
	r.mu.Unlock()
	if err != nil {
		r.log.Error("app reload failed", append(attrs, "err", err)...)
		return
	}
	r.log.Info("app reloaded", attrs...)
}

// runCommand runs the reload command and returns log attributes describing
// the run, including its (truncated) output, whether it failed or not.
func (r *Reloader) runCommand(ctx context.Context) ([]any, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.cfg.Command[0], r.cfg.Command[1:]...)
	// A process group lets a timeout kill what a wrapper script started, not
	// only the script.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	out := &limitedBuffer{limit: maxOutput}
	cmd.Stdout = out
	cmd.Stderr = out

	start := time.Now()
	err := cmd.Run()
	attrs := []any{"command", r.cfg.Command, "took", time.Since(start).Round(time.Millisecond), "output", out.String()}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return attrs, fmt.Errorf("reload command %q timed out after %v", r.cfg.Command[0], r.cfg.Timeout)
	}
	if err != nil {
		return attrs, fmt.Errorf("reload command %q: %w", r.cfg.Command[0], err)
	}
	return attrs, nil
}

// signal sends the configured signal to the PID in the PID file.
func (r *Reloader) signal() ([]any, error) {
	attrs := []any{"signal", r.cfg.Signal.String(), "pid_file", r.cfg.PIDFile}
	b, err := os.ReadFile(r.cfg.PIDFile)
	if err != nil {
		return attrs, fmt.Errorf("read PID file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	// PID 0 and negative PIDs address process groups; never signal those.
	if err != nil || pid <= 0 {
		return attrs, fmt.Errorf("PID file %s does not hold a process id", r.cfg.PIDFile)
	}
	attrs = append(attrs, "pid", pid)
	if err := syscall.Kill(pid, r.cfg.Signal); err != nil {
		return attrs, fmt.Errorf("send %v to PID %d: %w", r.cfg.Signal, pid, err)
	}
	return attrs, nil
}

// limitedBuffer keeps the first limit bytes written to it and drops the rest,
// so that a chatty command cannot grow the agent's memory. exec feeds stdout
// and stderr through one goroutine when both are the same writer, so it needs
// no lock.
type limitedBuffer struct {
	buf       bytes.Buffer
	limit     int
	truncated bool
}

// Write always reports the whole of p as written: a short count would make
// exec fail the command.
func (b *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.limit - b.buf.Len(); room < n {
		b.truncated = true
		p = p[:max(room, 0)]
	}
	b.buf.Write(p)
	return n, nil
}

func (b *limitedBuffer) String() string {
	s := strings.TrimSpace(b.buf.String())
	if b.truncated {
		s += " …(truncated)"
	}
	return s
}
