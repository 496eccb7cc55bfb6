//go:build linux

package faults

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/warden-sec/warden/services/internal/agent/agenttest"
	"github.com/warden-sec/warden/services/internal/wardend"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// TestMain removes the binaries built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries returns the directory holding wardend and warden-agent: $WARDEN_BIN when it has both (make
// builds them there), else a build of this module's commands, made once per test binary.
func binaries(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("WARDEN_BIN"); dir != "" && isExec(filepath.Join(dir, "wardend")) && isExec(filepath.Join(dir, "warden-agent")) {
		return dir
	}
	buildOnce.Do(func() {
		var dir string
		if dir, buildErr = os.MkdirTemp("", "warden-faults-bin-"); buildErr != nil {
			return
		}
		binDir = dir
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/wardend", "./cmd/warden-agent")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// childEnv is this process's environment without WARDEN_* settings, which would reconfigure the
// children behind the test's back.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARDEN_") {
			env = append(env, kv)
		}
	}
	return env
}

// proc is a child process whose output goes to a log file.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t *testing.T, logPath, bin string, args ...string) *proc {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	// Through a pipe rather than the file itself: a child whose file writes are made to fail (the disk
	// full test) must still be able to log.
	out := struct{ io.Writer }{lf}
	cmd.Stdout, cmd.Stderr = out, out
	// A test killed by its timeout must not leave a child holding ports and data dirs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(bound):
		t.Fatal("process survived SIGKILL")
	}
}

// stop sends SIGTERM, then SIGKILL after a grace period.
func (p *proc) stop(t *testing.T) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Logf("%s ignored SIGTERM; killing it", filepath.Base(p.cmd.Path))
		p.kill(t)
	}
}

// tail is the end of the process's log, for failure messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// wardendProc is wardend as a process on an embedded etcd under dataDir.
type wardendProc struct {
	*proc
	addr, dataDir string
}

func startWardend(t *testing.T, dataDir, addr string) *wardendProc {
	t.Helper()
	bin := filepath.Join(binaries(t), "wardend")
	p := startProc(t, filepath.Join(filepath.Dir(dataDir), "wardend.log"), bin,
		"--data-dir", dataDir, "--listen", addr, "--metrics-listen", "", "--log-level", "warn")
	w := &wardendProc{proc: p, addr: addr, dataDir: dataDir}
	deadline := time.Now().Add(bound)
	for {
		if p.exited() {
			t.Fatalf("wardend exited while starting (%v):\n%s", p.err, p.tail())
		}
		if w.serving(t.Context()) {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("wardend not serving after %s:\n%s", bound, p.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *wardendProc) serving(ctx context.Context) bool {
	conn, err := adminConn(w.dataDir, w.addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// adminConn dials addr with the admin files wardend wrote under dataDir.
func adminConn(dataDir, addr string) (*grpc.ClientConn, error) {
	files := wardend.AdminFilesIn(dataDir)
	pem, err := os.ReadFile(files.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no CA in " + files.CA)
	}
	pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
}

// agentProc is warden-agent as a process.
type agentProc struct {
	*proc
	dataDir string
}

// startAgent runs a Webapp agent against addr, bootstrapping with token.
func startAgent(t *testing.T, nodeID, addr, token, fingerprint, caFile string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	bin := filepath.Join(binaries(t), "warden-agent")
	p := startProc(t, filepath.Join(dir, "agent.log"), bin, "run",
		"--role", "webapp", "--node-id", nodeID, "--data-dir", dataDir, "--server", addr,
		"--join-token", token, "--ca-fingerprint", fingerprint, "--ca-file", caFile,
		"--status-interval", "1s", "--log-format", "json")
	return &agentProc{proc: p, dataDir: dataDir}
}

func (a *agentProc) certsDir() string { return filepath.Join(a.dataDir, "certs") }

// files hashes every file the agent materialised (agenttest.Files).
func (a *agentProc) files(t *testing.T) map[string]string { return agenttest.Files(t, a.dataDir) }
