package reload

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const testDebounce = 80 * time.Millisecond

// syncBuffer collects log output written from Run's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func mustNew(t *testing.T, cfg Config) *Reloader {
	t.Helper()
	if cfg.Debounce == 0 {
		cfg.Debounce = testDebounce
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

// startRun runs r until the test ends and checks that Run then returns nil.
func startRun(t *testing.T, r *Reloader) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Run(t.Context()) }()
	// t.Context is cancelled just before cleanups run.
	t.Cleanup(func() {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func lines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// burst triggers n times a few milliseconds apart, well within testDebounce,
// the way a snapshot's files are written one after the other.
func burst(r *Reloader, n int) {
	for range n {
		r.Trigger()
		time.Sleep(3 * time.Millisecond)
	}
}

func counterCommand(path string) []string {
	return []string{"/bin/sh", "-c", `echo x >> "$0"`, path}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"nothing", Config{}, true},
		{"command", Config{Command: []string{"/bin/true"}}, true},
		{"signal", Config{Signal: syscall.SIGHUP, PIDFile: "/run/app.pid"}, true},
		{"both", Config{Command: []string{"/bin/true"}, Signal: syscall.SIGHUP, PIDFile: "/run/app.pid"}, false},
		{"empty program", Config{Command: []string{""}}, false},
		{"signal without PID file", Config{Signal: syscall.SIGHUP}, false},
		{"PID file without signal", Config{PIDFile: "/run/app.pid"}, false},
		{"negative signal", Config{Signal: -1, PIDFile: "/run/app.pid"}, false},
		{"negative debounce", Config{Debounce: -time.Second}, false},
		{"negative timeout", Config{Timeout: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Errorf("New(%+v) error = %v, want ok=%v", tc.cfg, err, tc.ok)
			}
		})
	}
}

func TestBurstReloadsOnce(t *testing.T) {
	counter := filepath.Join(t.TempDir(), "count")
	r := mustNew(t, Config{Command: counterCommand(counter)})
	startRun(t, r)

	burst(r, 10)
	waitFor(t, "the reload", func() bool { return r.Stats().Reloads >= 1 })
	time.Sleep(4 * testDebounce)
	if got := lines(t, counter); got != 1 {
		t.Errorf("command ran %d times for a burst of 10 triggers, want 1", got)
	}
	if got := r.Stats(); got != (Stats{Reloads: 1}) {
		t.Errorf("Stats = %+v, want one successful reload", got)
	}
}

func TestSeparateBurstsReloadTwice(t *testing.T) {
	counter := filepath.Join(t.TempDir(), "count")
	r := mustNew(t, Config{Command: counterCommand(counter)})
	startRun(t, r)

	burst(r, 5)
	time.Sleep(3 * testDebounce)
	burst(r, 5)
	waitFor(t, "two reloads", func() bool { return r.Stats().Reloads >= 2 })
	time.Sleep(4 * testDebounce)
	if got := lines(t, counter); got != 2 {
		t.Errorf("command ran %d times for two bursts, want 2", got)
	}
}

func TestSteadyTriggersStillReload(t *testing.T) {
	counter := filepath.Join(t.TempDir(), "count")
	r := mustNew(t, Config{Command: counterCommand(counter), Debounce: 20 * time.Millisecond})
	startRun(t, r)

	// Triggers every 5ms never leave 20ms of quiet; the cap of ten debounce
	// times must still let a reload through.
	stop := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(stop) && r.Stats().Reloads == 0 {
		r.Trigger()
		time.Sleep(5 * time.Millisecond)
	}
	if r.Stats().Reloads == 0 {
		t.Error("no reload during a steady stream of triggers")
	}
}

// startTrapper starts a shell that appends to got on SIGUSR1, and returns its PID
// once the trap is installed.
func startTrapper(t *testing.T, dir, name string) (pid int, got string) {
	t.Helper()
	got = filepath.Join(dir, name+".got")
	ready := filepath.Join(dir, name+".ready")
	cmd := exec.Command("/bin/sh", "-c",
		`trap 'echo got >> "$0"' USR1; : > "$1"; while :; do sleep 0.05; done`, got, ready)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start trapper: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	waitFor(t, "the trap to be installed", func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
	return cmd.Process.Pid, got
}

func TestSignalGoesToPIDFromFreshPIDFile(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "app.pid")
	r := mustNew(t, Config{Signal: syscall.SIGUSR1, PIDFile: pidFile})
	startRun(t, r)

	for i, name := range []string{"first", "restarted"} {
		pid, got := startTrapper(t, dir, name)
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r.Trigger()
		waitFor(t, "the "+name+" process to get the signal", func() bool { return lines(t, got) > 0 })
		if s := r.Stats(); s.Reloads != uint64(i+1) || s.Failures != 0 {
			t.Errorf("Stats = %+v, want %d successful reloads", s, i+1)
		}
	}
}

func TestFailuresAreCountedAndNotFatal(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pid")
	zero := filepath.Join(dir, "zero.pid")
	gone := filepath.Join(dir, "gone.pid")
	exited := exec.Command("/bin/true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	for path, content := range map[string]string{garbage: "not a pid", zero: "0", gone: strconv.Itoa(exited.Process.Pid)} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"command fails", Config{Command: []string{"/bin/sh", "-c", "echo broken >&2; exit 3"}}},
		{"command missing", Config{Command: []string{filepath.Join(dir, "no-such-program")}}},
		{"command times out", Config{Command: []string{"/bin/sh", "-c", "sleep 10"}, Timeout: 100 * time.Millisecond}},
		{"PID file missing", Config{Signal: syscall.SIGUSR1, PIDFile: filepath.Join(dir, "missing.pid")}},
		{"PID file garbage", Config{Signal: syscall.SIGUSR1, PIDFile: garbage}},
		{"PID zero", Config{Signal: syscall.SIGUSR1, PIDFile: zero}},
		{"process gone", Config{Signal: syscall.SIGUSR1, PIDFile: gone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustNew(t, tc.cfg)
			startRun(t, r)
			for want := uint64(1); want <= 2; want++ {
				r.Trigger()
				waitFor(t, "the failed reload", func() bool { return r.Stats().Reloads == want })
				if s := r.Stats(); s.Failures != want {
					t.Fatalf("Stats = %+v, want %d failures", s, want)
				}
			}
		})
	}
}

func TestCommandOutputIsLogged(t *testing.T) {
	var logs syncBuffer
	r := mustNew(t, Config{
		Command: []string{"/bin/sh", "-c", "echo reloaded-ok; echo warn-on-stderr >&2"},
		Log:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	startRun(t, r)
	r.Trigger()
	waitFor(t, "the reload", func() bool { return r.Stats().Reloads == 1 })
	waitFor(t, "the log line", func() bool { return strings.Contains(logs.String(), "app reloaded") })
	for _, want := range []string{"reloaded-ok", "warn-on-stderr"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log %q lacks the command output %q", logs.String(), want)
		}
	}
}

func TestLimitedBuffer(t *testing.T) {
	b := &limitedBuffer{limit: 8}
	for _, s := range []string{"12345", "6789", "abc"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want %d, nil", s, n, err, len(s))
		}
	}
	if got, want := b.String(), "12345678 …(truncated)"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

func TestNoopReloaderRunsUntilCancelled(t *testing.T) {
	r := mustNew(t, Config{})
	startRun(t, r)
	r.Trigger()
	time.Sleep(3 * testDebounce)
	if got := r.Stats(); got != (Stats{}) {
		t.Errorf("Stats = %+v, want no reloads", got)
	}
}

func TestCancelStopsRunningCommand(t *testing.T) {
	started := filepath.Join(t.TempDir(), "started")
	r := mustNew(t, Config{Command: []string{"/bin/sh", "-c", `: > "$0"; sleep 10`, started}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	r.Trigger()
	waitFor(t, "the command to start", func() bool {
		_, err := os.Stat(started)
		return err == nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return while the reload command was running")
	}
	if got := r.Stats(); got != (Stats{}) {
		t.Errorf("Stats = %+v, want an interrupted reload not counted", got)
	}
}
