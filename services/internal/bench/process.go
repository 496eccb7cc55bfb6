package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/warden-sec/warden/services/internal/wardend"
)

// binaries finds wardend and warden-agent: in dir when it holds them (make sets $WARDEN_BIN to .bin),
// else built from this module's source into out. A missing warden-agent is not fatal: the bench then
// reports the figures that need it as not measured.
func binaries(ctx context.Context, dir, out string, log *slog.Logger) (wardendBin, agentBin string, agentErr error, err error) {
	if dir != "" {
		w, a := filepath.Join(dir, "wardend"), filepath.Join(dir, "warden-agent")
		if isExec(w) {
			if !isExec(a) {
				return w, "", fmt.Errorf("%s not found", a), nil
			}
			return w, a, nil, nil
		}
		log.Warn("no wardend in $WARDEN_BIN, building it", "dir", dir)
	}
	src, err := moduleDir()
	if err != nil {
		return "", "", nil, err
	}
	build := func(pkg string) error {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out+string(filepath.Separator), "./cmd/"+pkg)
		cmd.Dir = src
		b, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build ./cmd/%s: %w\n%s", pkg, err, b)
		}
		return nil
	}
	if err := build("wardend"); err != nil {
		return "", "", nil, err
	}
	if err := build("warden-agent"); err != nil {
		return filepath.Join(out, "wardend"), "", err, nil
	}
	return filepath.Join(out, "wardend"), filepath.Join(out, "warden-agent"), nil, nil
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// moduleDir is the services module's root, located from this source file's path (the bench is run
// from a checkout) and, failing that, from the working directory.
func moduleDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
	}
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for ; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/warden-sec/warden/services") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("cannot find the services module to build wardend: set $WARDEN_BIN")
		}
	}
}

// freePort asks the kernel for a free loopback port. Another process could take it before wardend
// binds; on a benchmark host that race is not worth more machinery.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// wardendProc is wardend running as a child process, restartable on the same data dir and port.
type wardendProc struct {
	bin, dataDir, addr, metricsAddr, logPath string
	log                                      *slog.Logger

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func newWardend(bin, dataDir string, log *slog.Logger) (*wardendProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	mport, err := freePort()
	if err != nil {
		return nil, err
	}
	return &wardendProc{
		bin: bin, dataDir: dataDir, log: log,
		addr:        "127.0.0.1:" + strconv.Itoa(port),
		metricsAddr: "127.0.0.1:" + strconv.Itoa(mport),
		logPath:     filepath.Join(filepath.Dir(dataDir), "wardend.log"),
	}, nil
}

// start launches the process; ready tells when it serves.
func (w *wardendProc) start() error {
	lf, err := os.OpenFile(w.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(w.bin, "--data-dir", w.dataDir, "--listen", w.addr, "--metrics-listen", w.metricsAddr,
		"--log-level", "warn")
	cmd.Stdout, cmd.Stderr = lf, lf
	// The bench dying must not leave a wardend holding the port and the data dir.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start wardend: %w", err)
	}
	done := make(chan struct{})
	w.mu.Lock()
	w.cmd, w.done, w.err = cmd, done, nil
	w.mu.Unlock()
	go func() {
		err := cmd.Wait()
		lf.Close()
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		close(done)
	}()
	return nil
}

// pid is the running process's id, 0 when none.
func (w *wardendProc) pid() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil || w.cmd.Process == nil {
		return 0
	}
	select {
	case <-w.done:
		return 0
	default:
		return w.cmd.Process.Pid
	}
}

// waitReady polls until the admin files exist and the health service answers SERVING over TLS.
func (w *wardendProc) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	admin := wardend.AdminFilesIn(w.dataDir)
	var last error
	for {
		w.mu.Lock()
		done := w.done
		w.mu.Unlock()
		select {
		case <-done:
			return fmt.Errorf("wardend exited while starting (%v); log: %s\n%s", w.err, w.logPath, tail(w.logPath, 2000))
		default:
		}
		last = w.healthy(ctx, admin)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wardend not ready after %s: %v; log: %s\n%s", timeout, last, w.logPath, tail(w.logPath, 2000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (w *wardendProc) healthy(ctx context.Context, admin wardend.AdminFiles) error {
	pool, err := loadPool(admin.CA)
	if err != nil {
		return err
	}
	conn, err := dialTLS(w.addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Not WaitForReady: while the port is still closed, gRPC would wait out its 1 s reconnect backoff
	// before the next attempt, and the storm, which commits its changes only once wardend is SERVING,
	// measured up to a second of that backoff. Failing fast lets waitReady retry 20 ms later. The
	// deadline is generous because under a 10,000-agent storm the probe's handshake queues behind the
	// herd's: cutting it short would throw the handshake away and start over at the back of the queue.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health: %s", r.GetStatus())
	}
	return nil
}

// stop sends SIGTERM and waits for the exit; after grace it kills.
func (w *wardendProc) stop(grace time.Duration) error {
	w.mu.Lock()
	cmd, done := w.cmd, w.done
	w.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("wardend ignored SIGTERM for %s and was killed", grace)
	}
}

// heapInUse scrapes go_memstats_heap_inuse_bytes from wardend's metrics listener.
func (w *wardendProc) heapInUse(ctx context.Context) (int64, error) {
	v, err := w.metrics(ctx, "go_memstats_heap_inuse_bytes ")
	return int64(v[0]), err
}

// liveHeapAndStacks scrapes the heap wardend's last GC found live, its goroutine stacks and the part of
// them that GC found in use, in KiB (0 when not exported).
func (w *wardendProc) liveHeapAndStacks(ctx context.Context) (live, stacks, stacksUsed int64) {
	v, _ := w.metrics(ctx, "go_gc_heap_live_bytes ", "go_memstats_stack_inuse_bytes ", "go_gc_scan_stack_bytes ")
	return int64(v[0]) / 1024, int64(v[1]) / 1024, int64(v[2]) / 1024
}

// metrics scrapes wardend's metrics listener once and, for each prefix (a name followed by a space, or
// a name with the opening of its label set), sums the samples whose line starts with it. A prefix
// that matches nothing sums to 0 and is named in the error.
func (w *wardendProc) metrics(ctx context.Context, prefixes ...string) ([]float64, error) {
	sums := make([]float64, len(prefixes))
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.metricsAddr+"/metrics", nil)
	if err != nil {
		return sums, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return sums, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return sums, err
	}
	found := make([]bool, len(prefixes))
	for line := range strings.Lines(string(b)) {
		for i, prefix := range prefixes {
			if !strings.HasPrefix(line, prefix) {
				continue
			}
			fields := strings.Fields(line)
			f, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			if err != nil {
				return sums, fmt.Errorf("%s: %w", strings.TrimSpace(line), err)
			}
			sums[i], found[i] = sums[i]+f, true
		}
	}
	var missing []string
	for i, ok := range found {
		if !ok {
			missing = append(missing, strings.TrimSpace(prefixes[i]))
		}
	}
	if len(missing) > 0 {
		return sums, fmt.Errorf("no %s in /metrics", strings.Join(missing, ", "))
	}
	return sums, nil
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	_, _ = f.ReadAt(b, off)
	return string(b)
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return pool, nil
}
