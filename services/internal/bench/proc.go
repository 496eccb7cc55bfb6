package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It is 100 on every Linux
// architecture Go supports; reading sysconf(_SC_CLK_TCK) would need cgo.
const clockTicks = 100

// Machine describes the host the figures were measured on.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	RAMMiB    int64  `json:"ram_mib"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	NoFile    uint64 `json:"rlimit_nofile"`
	// 1-minute load average when the run started and ended: other work on the machine competes with
	// wardend and the simulated agents for the same cores.
	LoadStart float64 `json:"load1_start"`
	LoadEnd   float64 `json:"load1_end"`
}

func (m Machine) String() string {
	return fmt.Sprintf("%s, %d cores, %d MiB RAM, %s, Linux %s, RLIMIT_NOFILE %d",
		m.CPU, m.Cores, m.RAMMiB, m.GoVersion, m.Kernel, m.NoFile)
}

// load1 is the 1-minute load average, -1 when unknown.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

func describeMachine() Machine {
	m := Machine{CPU: "unknown", Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Kernel: "unknown", LoadStart: load1()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if kib, err := procField("/proc/meminfo", "MemTotal"); err == nil {
		m.RAMMiB = kib / 1024
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		m.NoFile = lim.Cur
	}
	return m
}

// raiseNoFile lifts the open-file limit to want, raising the hard limit too when the process may
// (root), else up to the hard limit. Children inherit it: an explicit Setrlimit tells the Go runtime
// not to restore the original limit in exec'd processes.
func raiseNoFile(want uint64) (got uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	next := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err == nil {
		return want, nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("setrlimit: %w", err)
	}
	return lim.Cur, nil
}

// procField reads a "Key: value kB" line of a /proc status-like file and returns the number.
func procField(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			break
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

// rssKiB is the resident set of pid.
func rssKiB(pid int) (int64, error) { return procField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS") }

// hwmKiB is the peak resident set of pid since it started.
func hwmKiB(pid int) (int64, error) { return procField(fmt.Sprintf("/proc/%d/status", pid), "VmHWM") }

// procNoFile is the soft open-file limit of pid.
func procNoFile(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "Max open files") {
			if f := strings.Fields(strings.TrimPrefix(line, "Max open files")); len(f) > 0 {
				return f[0]
			}
		}
	}
	return "unknown"
}

// cpuTicks is utime+stime of pid, in clockTicks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name in field 2 may contain spaces; fields are counted after its closing paren.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the paren: state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return u + s, nil
}

// sampler records the peak CPU and RSS of whatever process pid() names, every interval, until stop.
// pid may change (a restarted wardend); a sample that crosses processes is dropped.
// cpuWindow is the shortest span over which the peak CPU is computed.
const cpuWindow = time.Second

type sampler struct {
	stop chan struct{}
	done chan struct{}

	PeakCPU float64 // percent of one core
	PeakRSS int64   // KiB
}

func startSampler(pid func() int, interval time.Duration) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		lastPID, lastTicks, lastAt := 0, int64(0), time.Time{}
		for {
			p := pid()
			if p > 0 {
				if r, err := rssKiB(p); err == nil {
					s.PeakRSS = max(s.PeakRSS, r)
				}
				if c, err := cpuTicks(p); err == nil {
					now := time.Now()
					switch {
					case p != lastPID || lastAt.IsZero():
						lastPID, lastTicks, lastAt = p, c, now
					case now.Sub(lastAt) >= cpuWindow:
						// The kernel folds CPU time into utime+stime in coarse steps (ticks, thread
						// exits), so short windows overstate the peak: a 100 ms window once read
						// 668 % on this 2-core machine. The peak is taken over 1 s windows.
						busy := float64(c-lastTicks) / clockTicks
						s.PeakCPU = max(s.PeakCPU, 100*busy/now.Sub(lastAt).Seconds())
						lastTicks, lastAt = c, now
					}
				}
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling; the fields are final afterwards.
func (s *sampler) Stop() {
	close(s.stop)
	<-s.done
}
